"""Frame decoding: seeking gives the same frames as decoding from the start; bad videos name the problem."""

import pathlib

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


def _index_frame(i: int) -> np.ndarray:
    """A 64x48 BGR frame whose 8 vertical bars spell i in binary (white = 1), robust to lossy coding."""
    img = np.zeros((48, 64, 3), np.uint8)
    for bit in range(8):
        if (i >> bit) & 1:
            img[:, bit * 8:(bit + 1) * 8] = 255
    return img


def _index_of(rgb: np.ndarray) -> int:
    return sum(1 << bit for bit in range(8) if rgb[:, bit * 8 + 2:(bit + 1) * 8 - 2].mean() > 127)


def _write_indexed(path, fourcc: str, n: int = 120) -> str:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (64, 48))
    assert out.isOpened(), f"this OpenCV cannot write {fourcc}"
    for i in range(n):
        out.write(_index_frame(i))
    out.release()
    return str(path)


@pytest.mark.parametrize("name, fourcc", [("clip.webm", "VP80"), ("clip.mp4", "mp4v")])
def test_frames_are_the_requested_ones(tmp_path, name, fourcc):
    """Each decoded frame's content spells its index, so this proves which frame came back: webm decoded from
    the start, mp4 through a verified seek, and a forced seek on the webm."""
    path = _write_indexed(tmp_path / name, fourcc)
    pick = np.array([71, 70, 100, 119])
    for seek in (None, True, False):
        got = video.read_frames(path, pick, 48, seek=seek)
        assert [_index_of(f) for f in got] == pick.tolist()


class _DriftingCapture:
    """A capture whose seeks land `drift` frames early, like OpenCV on a badly indexed file; it either
    reports where it landed (`honest`) or the requested position."""

    def __init__(self, real, drift: int, honest: bool):
        self._cap, self._drift, self._honest, self._asked = real, drift, honest, None

    def set(self, prop, value):
        import cv2

        if prop == cv2.CAP_PROP_POS_FRAMES:
            self._asked = value
            return self._cap.set(prop, max(0, value - self._drift))
        return self._cap.set(prop, value)

    def get(self, prop):
        import cv2

        if prop == cv2.CAP_PROP_POS_FRAMES and not self._honest and self._asked is not None:
            return float(self._asked)
        return self._cap.get(prop)

    def __getattr__(self, name):
        return getattr(self._cap, name)


@pytest.mark.parametrize("honest", [True, False])
def test_a_seek_that_misses_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch, honest):
    import cv2

    path = _write_indexed(tmp_path / "clip.mp4", "mp4v")
    real = cv2.VideoCapture
    opened = []

    def drifting(p):
        opened.append(p)
        return _DriftingCapture(real(p), drift=5, honest=honest)

    monkeypatch.setattr(cv2, "VideoCapture", drifting)
    got = video.read_frames(path, np.array([60, 90]), 48)
    assert [_index_of(f) for f in got] == [60, 90]
    assert len(opened) == 2  # the verified seek missed, the second pass decoded from frame 0


def _vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at pos: (value, next position)."""
    first, length, mask = buf[pos], 1, 0x80
    while not first & mask:
        mask >>= 1
        length += 1
    value = first if keep_marker else first & (mask - 1)
    for b in buf[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, pos + length


def _delay_frames(data: bytearray, from_frame: int, delay_ms: int) -> int:
    """Shift the timestamps of WebM frames from_frame… by delay_ms (a variable-frame-rate gap, as a camera
    that dropped frames writes), editing the Matroska blocks' 16-bit relative timecodes in place."""
    containers = {0x18538067, 0x1F43B675, 0xA0}  # Segment, Cluster, BlockGroup
    blocks = {0xA3, 0xA1}  # SimpleBlock, Block
    count = 0

    def walk(pos: int, end: int) -> None:
        nonlocal count
        while pos < end:
            element, p = _vint(data, pos, True)
            size, p = _vint(data, p, False)
            if element in containers:
                walk(p, p + size)
            elif element in blocks:
                _, q = _vint(data, p, False)  # track number, then the timecode
                if count >= from_frame:
                    tc = int.from_bytes(data[q:q + 2], "big", signed=True) + delay_ms
                    data[q:q + 2] = tc.to_bytes(2, "big", signed=True)
                count += 1
            pos = p + size

    walk(0, len(data))
    return count


def test_variable_frame_rate_webm_is_read_by_decode_order(tmp_path):
    """A real webm whose frames 60… are 200 ms late (6 frame periods): frame i is the i-th decoded frame,
    which decoding from the start returns; OpenCV's seek numbers frames by timestamp and lands 6 frames
    early with a consistent position and timestamp, which is why webm/mkv are never seeked."""
    import cv2

    path = _write_indexed(tmp_path / "clip.webm", "VP80")
    data = bytearray(pathlib.Path(path).read_bytes())
    assert _delay_frames(data, 60, 200) == 120
    vfr = tmp_path / "vfr.webm"
    vfr.write_bytes(bytes(data))
    cap = cv2.VideoCapture(str(vfr))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 61)
    cap.grab()
    assert cap.get(cv2.CAP_PROP_POS_MSEC) == pytest.approx(2233, abs=1)  # the gap is in the file
    cap.release()
    pick = np.array([100, 70, 119])
    assert [_index_of(f) for f in video.read_frames(str(vfr), pick, 48)] == pick.tolist()
    # If this starts failing, OpenCV seeks by decode order and webm could be seeked too.
    assert _index_of(video.read_frames(str(vfr), np.array([100]), 48, seek=True)[0]) != 100
