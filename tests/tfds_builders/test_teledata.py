"""hand_vla `teledata` source: VITRA-TeleData robot episodes against the hand-space definitions written out
with scipy and the release's XHand table, frames and intrinsics, and bad inputs skipped by reason."""

import pathlib

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from tests.handspace.test_robots import RELEASE_TABLE
from tests.tfds_builders import teledata_synthetic as synth
from tests.tfds_builders.test_hand_vla import VERSION, _build
from tfds_builders.hand_vla import hand_vla_dataset_builder as hv
from vitra_jax.handspace import robots

CONFIG = hv.HandVlaConfig(name="teledata_96", source="teledata", short_side=96, val_fraction=0.0)


def _hand_state(pose: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """51-d state of one hand per the release: wrist position, wrist Euler xyz, 45 finger Euler angles with the
    XHand joints placed by the release's table (unmapped angles 0)."""
    fingers = np.zeros((len(pose), 45))
    for x_idx, h_idx, sign in RELEASE_TABLE:
        fingers[:, h_idx - 6] = sign * joints[:, x_idx - 6]
    return np.concatenate([pose[:, :3], Rotation.from_rotvec(pose[:, 3:]).as_euler("xyz"), fingers], axis=1)


def _hand_action(pose: np.ndarray, state: np.ndarray, k: int) -> np.ndarray:
    """Action of step k → k+1 in a static camera: Δ position, Euler of R(k+1)·R(k)ᵀ, next finger angles."""
    r = Rotation.from_rotvec(pose[k + 1, 3:]) * Rotation.from_rotvec(pose[k, 3:]).inv()
    return np.concatenate([pose[k + 1, :3] - pose[k, :3], r.as_euler("xyz"), state[k + 1, 6:]])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("teledata")
    written = {
        "right_only": synth.write_teledata(root / "raw" / "a", "right_only", n=20, untracked=[7], seed=1),
        "two_arms": synth.write_teledata(root / "raw" / "b", "two_arms", n=14, hands=("left", "right"), seed=2,
                                         instruction="Hand over the sponge."),
    }
    _build(CONFIG, root / "out", root / "raw")
    ds = tfds.builder_from_directory(str(root / "out/hand_vla/teledata_96" / VERSION)).as_dataset(split="train")
    episodes = {ep["episode_metadata"]["video_name"].decode(): ep for ep in tfds.as_numpy(ds)}
    return written, episodes


def test_states_actions_and_masks_follow_the_release_definitions(built):
    written, episodes = built
    assert sorted(episodes) == ["right_only", "two_arms"]
    for name, w in written.items():
        steps = list(episodes[name]["steps"])
        n = len(w.tracked["right"])
        assert len(steps) == n
        state = np.stack([s["observation"]["state"] for s in steps])
        state_mask = np.stack([s["observation"]["state_mask"] for s in steps])
        action = np.stack([s["action"] for s in steps])
        action_mask = np.stack([s["action_mask"] for s in steps])
        for side, h in enumerate(("left", "right")):
            cols = slice(51 * side, 51 * side + 51)
            tracked = w.tracked[h]
            np.testing.assert_array_equal(state_mask[:, side], tracked)
            want = _hand_state(w.pose[h], w.joints[h])
            np.testing.assert_allclose(state[tracked][:, cols], want[tracked], atol=2e-5)
            assert not state[~tracked][:, cols].any()
            for k in range(n):
                valid = k + 1 < n and tracked[k] and tracked[k + 1]
                assert action_mask[k, side] == valid, (name, h, k)
                if valid:
                    np.testing.assert_allclose(action[k, cols], _hand_action(w.pose[h], want, k), atol=2e-5)
                else:
                    assert not action[k, cols].any()
        meta = episodes[name]["episode_metadata"]
        assert meta["main_hand"].decode() == "right" and meta["camera_motion"].decode() == "static"
        assert meta["source"].decode() == "teledata"
        for s in steps:  # the caption covers the whole episode (half-open interval [0, n))
            assert s["language_instruction"].decode() == f"Left hand: None. Right hand: {w.instruction}"
            assert s["language_interval_right"].tolist() == [0, n]


def test_frames_in_order_and_intrinsics_keep_the_focal_lengths(built):
    _, episodes = built
    steps = list(episodes["right_only"]["steps"])
    images = np.stack([s["observation"]["image"] for s in steps])
    assert images.shape == (20, 96, 128, 3)
    levels = np.array([synth.grey(t) for t in range(40)])  # frame t is the written frame nearest in grey level
    means = images.reshape(20, -1).mean(axis=1)
    np.testing.assert_array_equal(np.abs(means[:, None] - levels).argmin(axis=1), np.arange(20))
    k = steps[0]["camera"]["intrinsics"]
    scale = 128 / synth.WIDTH
    np.testing.assert_allclose(k, [[synth.K[0, 0] * scale, 0, 64], [0, synth.K[1, 1] * scale, 48], [0, 0, 1]],
                               rtol=1e-6)
    extrinsics = np.stack([s["camera"]["extrinsics"] for s in steps])
    np.testing.assert_array_equal(extrinsics, np.broadcast_to(np.eye(4), (20, 4, 4)))


def test_bad_teledata_inputs_are_skipped_by_reason(tmp_path):
    raw = tmp_path / "raw"
    synth.write_teledata(raw, "good")
    synth.write_teledata(raw, "no_joints", drop_key="state/right_hand_joint")
    synth.write_teledata(raw, "short_video", video_frames=12)
    synth.write_teledata(raw, "no_video")
    (raw / "no_video.mp4").unlink()
    (raw / "not_hdf5.h5").write_bytes(b"this is not an HDF5 file")
    for stem, frame in (("nan_tracked", 4), ("nan_untracked", 3)):  # NaN counts only where the hand is tracked
        synth.write_teledata(raw, stem, untracked=[3])
        with h5py.File(raw / f"{stem}.h5", "r+") as f:
            f["state/right_hand_mount_pose_in_cam"][frame, 0] = np.nan
    nowhere = synth.write_teledata(raw, "never_tracked", untracked=range(20))
    assert not nowhere.tracked["right"].any()
    lenient = hv.HandVlaConfig(name="teledata_lenient", source="teledata", short_side=64, val_fraction=0.0,
                               max_skip_fraction=1.0)
    b = _build(lenient, tmp_path / "out", raw)
    assert dict(b.skipped) == {"bad_annotation": 1, "length_mismatch": 1, "missing_video": 1,
                               "no_valid_frames": 1, "non_finite": 1, "unreadable_input": 1}
    kept = {pathlib.Path(ep["episode_metadata"]["file_path"].decode()).name
            for ep in tfds.as_numpy(b.as_dataset(split="train"))}
    assert kept == {"good.h5", "nan_untracked.h5"}


def test_robot_observation_at_deployment_is_what_training_saw(built):
    written, episodes = built
    for name, hands in (("right_only", ("right",)), ("two_arms", ("left", "right"))):
        w, steps = written[name], list(episodes[name]["steps"])
        for t in (0, 3, 9):
            # the robot PC's reading in the release's 36-d layout: per hand [position, Euler xyz, 12 joints]
            robot = np.concatenate([np.concatenate([w.pose[h][t, :3], Rotation.from_rotvec(w.pose[h][t, 3:])
                                                    .as_euler("xyz"), w.joints[h][t]]) for h in ("left", "right")])
            obs = robots.xhand_observation(robot, hands)
            np.testing.assert_allclose(obs["state"], steps[t]["observation"]["state"], atol=2e-5)
            np.testing.assert_array_equal(obs["state_mask"], np.repeat(steps[t]["observation"]["state_mask"], 51))
            assert obs["action_mask"].shape == (16, 102) and (obs["action_mask"] == obs["state_mask"]).all()
