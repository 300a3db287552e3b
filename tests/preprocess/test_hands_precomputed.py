"""Precomputed hands: the official VITRA episode and CamHands saved by the run store."""

import dataclasses

import numpy as np
import pytest

from preprocess.hands.base import HandBackend
from preprocess.hands.precomputed import PrecomputedBackend, PrecomputedError, read_hands
from preprocess.records import CamHands, Intrinsics
from preprocess.store import Store

STEM = "Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example"


def assert_same(a: CamHands, b: CamHands):
    for h in ("left", "right"):
        for f in dataclasses.fields(a.hands[h]):
            np.testing.assert_array_equal(getattr(a.hands[h], f.name), getattr(b.hands[h], f.name), err_msg=f.name)


def test_vitra_episode_npz_and_npy_give_the_fixture_values(fixtures_dir):
    d = fixtures_dir / "videos"
    cam = read_hands(d / f"{STEM}.npz")
    assert_same(cam, read_hands(d / f"{STEM}.npy"))
    right, left = cam.hands["right"], cam.hands["left"]
    assert right.kept.sum() == 25 and left.kept.sum() == 0 and right.score.tolist() == [1.0] * 25
    # hand-copied from the annotation: the wrist joint (joint 0 of joints_camspace) at the first and last frame
    np.testing.assert_allclose(right.wrist[0], [0.30188736, 0.315095, 0.36067432], atol=1e-8)
    np.testing.assert_allclose(right.wrist[24], [0.4826753, 0.16025323, 0.47153124], atol=1e-8)
    z = np.load(d / f"{STEM}.npz")
    # the release's world wrist (transl_worldspace) is this camera wrist taken through the inverse extrinsics
    rot, t = z["extrinsics"][:, :3, :3], z["extrinsics"][:, :3, 3]
    world = np.einsum("tba,tb->ta", rot, right.wrist - t)
    np.testing.assert_allclose(world, z["right/transl_worldspace"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(right.orient), 1.0, atol=1e-5)
    assert right.hand_pose.shape == (25, 15, 3, 3) and right.beta.shape == (10,)


def test_store_records_and_backend_slices(fixtures_dir, tmp_path):
    cam = read_hands(fixtures_dir / "videos" / f"{STEM}.npz")
    Store(tmp_path).save("work/vid/clip0000/hands", cam)
    back = read_hands(tmp_path / "work/vid/clip0000/hands.arrays.npz")
    assert_same(cam, back)
    backend = PrecomputedBackend(tmp_path / "work/vid/clip0000/hands.record.json", start=10)
    assert isinstance(backend, HandBackend) and backend.version == "vitra_release:VITRA-1M"
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    part = backend.estimate(frames, Intrinsics(k=np.eye(3), width=4, height=4, source="given"))
    np.testing.assert_array_equal(part.hands["right"].joints, cam.hands["right"].joints[10:15])
    with pytest.raises(PrecomputedError, match="outside the 25"):
        PrecomputedBackend(tmp_path / "work/vid/clip0000/hands.arrays.npz", start=22).estimate(frames, None)


def test_unknown_or_missing_files_are_named(tmp_path):
    with pytest.raises(PrecomputedError, match="unknown precomputed hands file"):
        read_hands(tmp_path / "hands.txt")
    with pytest.raises(PrecomputedError, match="not found"):
        read_hands(tmp_path / "nope.npz")
    with pytest.raises(PrecomputedError, match="no stored result"):
        read_hands(tmp_path / "nope.arrays.npz")
