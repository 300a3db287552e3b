"""The vitra1m build of the official example episode vs. the official definitions (release §2.6, §3.2).

The reference below is written straight from the formulas, from the lossless `.npz` + `.json` copy of the
annotation, independently of `vitra_jax.handspace`: for an anchor frame t with world→camera (R, τ),
  p(k) = R · wrist_world(k) + τ,  O(k) = R · orient_world(k),
  state(t)  = [p(t), euler_xyz(O(t)), euler_xyz(hand_pose(t))]
  action(t) = [p(t+1) − p(t), euler_xyz(O(t+1) · O(t)ᵀ), euler_xyz(hand_pose(t+1))].
"""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from tfds_builders.hand_vla import hand_vla_dataset_builder as hv
from vitra_jax.handspace import trajectory

STEM = "Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example"
VIDEO = "03cc49c3-a7d1-445b-9a2a-545c4fae6843.mp4"


def _euler(m):
    return Rotation.from_matrix(np.asarray(m).reshape(-1, 3, 3)).as_euler("xyz").reshape(-1)


@pytest.fixture(scope="module")
def official(fixtures_dir):
    with np.load(fixtures_dir / "videos" / f"{STEM}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((fixtures_dir / "videos" / f"{STEM}.json").read_text())
    return arrays, meta


@pytest.fixture(scope="module")
def built(fixtures_dir, tmp_path_factory):
    """vitra1m build of a manual_dir laid out as the release: Ego4D/{episodic_annotations,videos}/."""
    root = tmp_path_factory.mktemp("vitra1m")
    (root / "raw/Ego4D/episodic_annotations").mkdir(parents=True)
    (root / "raw/Ego4D/videos").mkdir()
    ann = root / "raw/Ego4D/episodic_annotations" / f"{STEM}.npy"
    ann.symlink_to(fixtures_dir / "videos" / f"{STEM}.npy")
    (root / "raw/Ego4D/videos" / VIDEO).symlink_to(fixtures_dir / "videos" / VIDEO)
    b = hv.Builder(config="vitra1m", data_dir=str(root / "out"))
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "raw")))
    assert not b.skipped
    (ep,) = tfds.as_numpy(b.as_dataset(split="train"))
    steps = list(ep["steps"])
    stacked = {k: np.stack([s[k] for s in steps]) for k in ("action", "action_mask", "is_first", "is_last")}
    stacked["state"] = np.stack([s["observation"]["state"] for s in steps])
    stacked["state_mask"] = np.stack([s["observation"]["state_mask"] for s in steps])
    return ep, steps, stacked


def _reference(arrays, hand, t, k):
    """Hand `hand` at frame k in the camera of frame t: position, orientation matrix."""
    r, tau = arrays["extrinsics"][t, :3, :3], arrays["extrinsics"][t, :3, 3]
    return r @ arrays[f"{hand}/transl_worldspace"][k] + tau, r @ arrays[f"{hand}/global_orient_worldspace"][k]


def test_states_and_actions_match_official_definitions(built, official):
    arrays, meta = official
    _, steps, got = built
    n = len(arrays["extrinsics"])
    assert len(steps) == n == 25
    ref_state, ref_action = np.zeros((n, 51)), np.zeros((n, 51))
    for t in range(n):
        p0, o0 = _reference(arrays, "right", t, t)
        ref_state[t] = np.concatenate([p0, _euler(o0), _euler(arrays["right/hand_pose"][t])])
        if t + 1 < n:
            p1, o1 = _reference(arrays, "right", t, t + 1)
            fingers = _euler(arrays["right/hand_pose"][t + 1])
            ref_action[t] = np.concatenate([p1 - p0, _euler(o1 @ o0.T), fingers])
    np.testing.assert_allclose(got["state"][:, 51:], ref_state, atol=1e-5)
    np.testing.assert_allclose(got["action"][:, 51:], ref_action, atol=1e-5)
    # The left hand is never tracked in this episode: masked and zero everywhere.
    assert not got["state"][:, :51].any() and not got["action"][:, :51].any()
    assert got["state_mask"].tolist() == [[False, True]] * n
    assert got["action_mask"].tolist() == [[False, True]] * (n - 1) + [[False, False]]
    assert got["is_first"][0] and got["is_last"][-1] and got["is_first"].sum() == got["is_last"].sum() == 1
    assert meta["anno_type"] == "right"
    assert steps[0]["language_instruction"] == b"Left hand: None. Right hand: Pick up the spray bottle."
    # The released GPT-4 rephrasings of the caption in force, stripped; the idle left hand has none.
    assert [x.decode() for x in steps[0]["language_rephrasings_right"]] == [
        "Pick up the spray bottle", "Grasp the spray bottle", "Lift the spray bottle", "Take the spray bottle",
        "Hold the spray bottle"]
    assert len(steps[0]["language_rephrasings_left"]) == 0


def test_integrated_chunk_actions_reproduce_camera_trajectory(built, official):
    arrays, _ = official
    _, steps, _ = built
    hands = {
        h: trajectory.HandTrack(
            wrist=np.stack([s["hands"][h]["wrist"] for s in steps]).astype(np.float64),
            orient=np.stack([s["hands"][h]["orient"] for s in steps]).astype(np.float64),
            hand_pose=np.stack([s["hands"][h]["hand_pose"] for s in steps]).astype(np.float64),
            joints=np.stack([s["hands"][h]["joints"] for s in steps]),
            kept=np.array([s["hands"][h]["kept"] for s in steps]), beta=np.zeros(10))
        for h in ("left", "right")
    }
    extrinsics = np.stack([s["camera"]["extrinsics"] for s in steps]).astype(np.float64)
    for t in (0, 8):
        chunk = trajectory.chunk_targets(hands, extrinsics, t, n=16)
        states = trajectory.integrate_actions(chunk.state, chunk.action)
        ref = np.stack([_reference(arrays, "right", t, k)[0] for k in range(t, t + 17)])
        np.testing.assert_allclose(states[:, 51:54], ref, atol=1e-5)
        ref_rot = np.stack([_reference(arrays, "right", t, k)[1] for k in range(t, t + 17)])
        rot = Rotation.from_euler("xyz", states[:, 54:57]).as_matrix()
        np.testing.assert_allclose(rot, ref_rot, atol=1e-5)


def test_stored_joints_project_inside_the_stored_frames(built, official):
    arrays, _ = official
    ep, steps, _ = built
    inside = []
    assert ep["episode_metadata"]["video_name"] == b"03cc49c3-a7d1-445b-9a2a-545c4fae6843"
    meta = ep["episode_metadata"]
    assert meta["frame_start"] == 0 and meta["frame_end"] == 24 and meta["camera_motion"] == b"moving"
    assert meta["source"] == b"Ego4D" and meta["main_hand"] == b"right"
    for s in steps:
        h, w = s["observation"]["image"].shape[:2]
        assert (w, h) == (292, 224)  # 480x368 video, short side 224
        k = s["camera"]["intrinsics"].astype(np.float64)
        np.testing.assert_allclose(k[[0, 1, 0, 1], [0, 1, 2, 2]], [654.97 * 292 / 1440, 654.97 * 224 / 1080,
                                                                   146, 112], atol=0.01)
        ext = s["camera"]["extrinsics"].astype(np.float64)
        cam = s["hands"]["right"]["joints"] @ ext[:3, :3].T + ext[:3, 3]
        np.testing.assert_allclose(cam, arrays["right/joints_camspace"][s["frame_index"]], atol=1e-5)
        uv = cam @ k.T
        uv = uv[:, :2] / uv[:, 2:]
        assert (cam[:, 2] > 0).all()
        in_frame = ((uv >= 0) & (uv < [w, h])).all(-1)
        assert in_frame[9], f"palm centre outside the frame at {s['frame_index']}: {uv[9]}"
        # The wrist enters from the bottom edge: allow 5% outside.
        assert ((uv > -0.05 * w) & (uv < 1.05 * np.array([w, h]))).all()
        inside.append(in_frame)
    # Measured: 523 of 525 joints inside; the two outside are wrist and thumb-1 of frame 0, 7 px below.
    assert np.mean(inside) > 0.99
