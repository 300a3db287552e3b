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
