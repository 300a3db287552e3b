"""Frame decoding: seeking gives the same frames as decoding from the start; bad videos name the problem."""

import numpy as np
import pytest

from tfds_builders.hand_vla import video
from vitra_jax.handspace.episode import EpisodeError

CLIP = "videos/03cc49c3-a7d1-445b-9a2a-545c4fae6843.mp4"


def test_seek_matches_sequential_decode(fixtures_dir):
    path = str(fixtures_dir / CLIP)
    every = video.read_frames(path, np.arange(25), 224)
    assert every.shape == (25, 224, 292, 3) and every.dtype == np.uint8
    picked = video.read_frames(path, np.array([17, 12, 20]), 224)
    np.testing.assert_array_equal(picked, every[[17, 12, 20]])
    assert np.abs(every[0].astype(int) - every[24]).mean() > 5  # a moving camera: frames differ


def test_bad_videos(fixtures_dir, tmp_path):
    with pytest.raises(EpisodeError, match="unreadable_video: .*frame 25 of 20..25 missing"):
        video.read_frames(str(fixtures_dir / CLIP), np.arange(20, 26), 64)
    with pytest.raises(EpisodeError, match="missing_video"):
        video.read_frames(str(tmp_path / "nope.mp4"), np.arange(3), 64)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(EpisodeError) as err:
        video.read_frames(str(tmp_path / "junk.mp4"), np.arange(3), 64)
    assert err.value.reason == "unreadable_video"


def _split_into_parts(src, dst_dir, stem: str, clip_len: int) -> list[str]:
    import cv2

    cap = cv2.VideoCapture(str(src))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    parts = []
    for k in range(0, len(frames), clip_len):
        path = str(dst_dir / f"{stem}_part{k // clip_len + 1}.mp4")
        h, w = frames[0].shape[:2]
        out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
        for f in frames[k:k + clip_len]:
            out.write(f)
        out.release()
        parts.append(path)
    return parts


def test_video_parts_read_like_the_whole_video(fixtures_dir, tmp_path):
    from tfds_builders.hand_vla import sources

    name = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
    ds = tmp_path / "Ego4D"
    (ds / "videos").mkdir(parents=True)
    (ds / "episodic_annotations").mkdir()
    npy = ds / "episodic_annotations" / "ep.npy"
    npy.symlink_to(fixtures_dir / "videos" / "Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example.npy")
    parts = _split_into_parts(fixtures_dir / CLIP, ds / "videos", name, clip_len=10)
    assert len(parts) == 3
    whole = video.read_frames(str(fixtures_dir / CLIP), np.arange(25), 64)
    pick = np.array([3, 9, 10, 19, 24])
    got = video.read_frames_from_parts(parts, pick, 64, clip_len=10)
    # Parts are re-encoded (lossy), so frames match closely rather than exactly; neighbours differ more.
    err = np.abs(got.astype(int) - whole[pick]).mean()
    assert err < 4 and err < np.abs(got.astype(int) - whole[pick - 1]).mean()
    with pytest.raises(EpisodeError, match="needs part 3 of 2"):
        video.read_frames_from_parts(parts[:2], np.array([24]), 64, clip_len=10)
    ep, frames = sources.load_vitra1m(str(npy), 64, clip_len=10)  # no whole video: the parts are found
    assert len(frames) == len(ep.frame_index)
    assert np.abs(frames.astype(int) - whole[ep.frame_index]).mean() < 4
