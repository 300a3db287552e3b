"""Video probing and decoding on the real fixtures, clip planning and the recombination of clip results."""

import cv2
import numpy as np
import pytest

from preprocess import video
from preprocess.records import Clip, VideoInfo
from tests.preprocess import vitra_example

VITRA = vitra_example.VIDEO
HAWOR = "hawor_video_0.mp4"


@pytest.fixture(scope="module")
def videos(fixtures_dir):
    return fixtures_dir / "videos"


def test_probe_fixtures_match_their_readme(videos):
    # Sizes, rates and counts from fixtures/videos/README.md.
    for name, (w, h, n) in {VITRA: (480, 368, 25), HAWOR: (1920, 1080, 121)}.items():
        info = video.probe(videos / name)
        assert (info.width, info.height, info.num_frames, info.fps) == (w, h, n, 30.0)
        assert info.video_id == name[:-4] and info.path == str(videos / name)


def test_read_frames_rgb_seek_and_downscale(videos):
    path = videos / VITRA
    frames = video.read_frames(path, 0, 25)
    assert frames.shape == (25, 368, 480, 3) and frames.dtype == np.uint8
    # Independent decode with OpenCV's own sequential reader, BGR converted to RGB.
    np.testing.assert_array_equal(frames, vitra_example.decode_rgb(path))
    np.testing.assert_array_equal(video.read_frames(path, 10, 20), frames[10:20])  # seeking is frame-exact
    small = video.read_frames(path, 3, 5, max_width=240)
    assert small.shape == (2, 184, 240, 3)
    np.testing.assert_array_equal(small[0], cv2.resize(frames[3], (240, 184), interpolation=cv2.INTER_AREA))
    # The last frames of the 1080p clip, scaled to 320 px wide (1080 · 320 / 1920 = 180).
    tail = video.read_frames(videos / HAWOR, 118, 121, max_width=320)
    assert tail.shape == (3, 180, 320, 3) and tail.std() > 10
    with pytest.raises(video.VideoError, match="truncated_video: .*decoded 1 of frames \\[24, 26\\)"):
        video.read_frames(path, 24, 26)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50])
def test_bad_files_give_one_clear_error(tmp_path, content):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(video.VideoError, match="unreadable_video: .*clip.mp4") as e:
        video.probe(bad)
    assert e.value.reason == "unreadable_video"
    with pytest.raises(video.VideoError, match="unreadable_video"):
        video.read_frames(bad, 0, 1)
    with pytest.raises(video.VideoError, match="missing_video"):
        video.probe(tmp_path / "absent.mp4")


def _info(n, fps=30.0):
    return VideoInfo(path="v.mp4", video_id="v", fps=fps, width=64, height=48, num_frames=n)


def test_plan_clips_covers_every_frame_with_the_asked_overlap():
    # 20 s clips, 2 s overlap at 30 fps: 600-frame clips stepping by 540.
    clips = video.plan_clips(_info(1500))
    assert [(c.start, c.stop) for c in clips] == [(0, 600), (540, 1140), (1080, 1500)]
    assert [c.index for c in clips] == [0, 1, 2] and clips[1].name == "v/clip0001"
    for prev, cur in zip(clips, clips[1:]):
        assert prev.stop - cur.start == 60
    covered = np.zeros(1500, bool)
    for c in clips:
        covered[c.start:c.stop] = True
    assert covered.all()
    # Shorter than one clip, exactly one clip, and one frame more.
    assert [(c.start, c.stop) for c in video.plan_clips(_info(25))] == [(0, 25)]
    assert [(c.start, c.stop) for c in video.plan_clips(_info(600))] == [(0, 600)]
    assert [(c.start, c.stop) for c in video.plan_clips(_info(601))] == [(0, 600), (540, 601)]
    # 1 s clips at 25 fps with 0.2 s overlap: 25 frames stepping by 20.
    assert [(c.start, c.stop) for c in video.plan_clips(_info(60, fps=25.0), 1.0, 0.2)] == [
        (0, 25), (20, 45), (40, 60)]
    with pytest.raises(ValueError, match="overlap"):
        video.plan_clips(_info(100), clip_seconds=1.0, overlap_seconds=1.0)


def test_stitch_takes_each_frame_from_the_nearest_clip_centre():
    clips = [Clip("v", 0, 0, 10), Clip("v", 1, 6, 16), Clip("v", 2, 12, 20)]
    # Centres 4.5, 10.5, 15.5. Overlap 6..9: midpoint 7.5, so 6, 7 -> clip 0 and 8, 9 -> clip 1.
    # Overlap 12..15: midpoint 13.0, so 12 -> clip 1, 13 (a tie) -> clip 1 (earlier), 14, 15 -> clip 2.
    expected_owner = [0] * 8 + [1] * 6 + [2] * 6
    values = [np.stack([np.full(len(c), c.index), np.arange(c.start, c.stop)], 1) for c in clips]
    out = video.stitch(clips, values)
    np.testing.assert_array_equal(out[:, 0], expected_owner)
    np.testing.assert_array_equal(out[:, 1], np.arange(20))  # every frame once, in order
    assert video.ownership(clips) == [(0, 8), (8, 14), (14, 20)]
    # A single clip passes through; mismatched lengths and gaps are refused.
    np.testing.assert_array_equal(video.stitch(clips[:1], values[:1]), values[0])
    with pytest.raises(ValueError, match="has 10 frames but 9 values"):
        video.stitch(clips, [values[0][:9], *values[1:]])
    with pytest.raises(ValueError, match="not ordered, contiguous"):
        video.stitch([Clip("v", 0, 0, 5), Clip("v", 1, 6, 9)], [np.zeros(5), np.zeros(3)])


def test_stitch_matches_a_brute_force_nearest_centre_rule():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(30, 400))
        clips = video.plan_clips(_info(n), clip_seconds=float(rng.uniform(0.5, 2)),
                                 overlap_seconds=float(rng.uniform(0, 0.4)))
        out = video.stitch(clips, [np.full(len(c), c.index) for c in clips])
        for f in range(n):
            dists = [abs(f - (c.start + c.stop - 1) / 2) if c.start <= f < c.stop else np.inf for c in clips]
            assert out[f] == int(np.argmin(dists))  # argmin returns the first (earlier) clip on ties


def test_audio_only_file_and_a_video_written_here(tmp_path):
    import wave

    with wave.open(str(tmp_path / "sound.mp4"), "wb") as w:  # a real media file without a video stream
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    with pytest.raises(video.VideoError, match="unreadable_video: .*sound.mp4"):
        video.probe(tmp_path / "sound.mp4")
    writer = cv2.VideoWriter(str(tmp_path / "grey.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(13):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    info = video.probe(tmp_path / "grey.avi")
    assert (info.num_frames, info.fps, info.width, info.height, info.video_id) == (13, 25.0, 64, 48, "grey")
    frames = video.read_frames(tmp_path / "grey.avi", 5, 13)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), 10 * np.arange(5, 13), atol=2)  # MJPG is lossy
