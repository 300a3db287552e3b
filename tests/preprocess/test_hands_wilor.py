"""WiLoR adapter: detections written here from known MANO parameters, read back to known CamHand values.

Ground truth is WiLoR's demo definition, run with smplx: joints = MANO_R(R, θ, β) (no translation), x negated
for a left hand, plus `pred_cam_t_full`, in a camera of focal 5000/256 · max(W, H) centred on the image.
"""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from preprocess import backends
from preprocess.config import get_config
from preprocess.hands.mano_model import load_mano
from preprocess.hands.wilor import WilorBackend, WilorError, read_json, wilor_focal
from preprocess.records import Clip, Intrinsics, VideoInfo
from tests.preprocess.mano_synthetic import smplx_joints, write_synthetic_mano

W, H = 640, 480


@pytest.fixture(scope="module")
def mano(tmp_path_factory):
    d = tmp_path_factory.mktemp("mano")
    torch.set_num_threads(1)
    return write_synthetic_mano(d), load_mano(d)


def detection(rng, right_file, is_right, score, beta):
    root, pose = Rotation.random(random_state=rng.integers(1000)), rng.normal(0, 0.3, (15, 3))
    cam_t = rng.normal(0, 0.05, 3) + [0, 0, 0.6]
    j = smplx_joints(right_file, beta, pose[None], root.as_rotvec()[None], np.zeros((1, 3)))[0]
    if not is_right:
        j = j * [-1.0, 1.0, 1.0]
    det = {"is_right": int(is_right), "score": score, "global_orient": root.as_matrix()[None].tolist(),
           "hand_pose": Rotation.from_rotvec(pose).as_matrix().tolist(), "betas": beta.tolist(),
           "pred_cam_t_full": cam_t.tolist()}
    return det, j + cam_t


def test_detections_to_camhands(mano, tmp_path):
    right_file, model = mano
    rng = np.random.default_rng(0)
    frames, truth = [], {}
    betas = {True: rng.normal(0, 1, 10), False: rng.normal(0, 1, 10)}  # one shape per hand: a CamHand has one
    for t, (who, score) in enumerate([([True, False], [0.9, 0.8]), ([], []), ([False, False], [0.4, 0.95])]):
        frames.append([])
        for is_right, s in zip(who, score):
            det, joints = detection(rng, right_file, is_right, s, betas[is_right])
            frames[-1].append(det)
            key = ("right" if is_right else "left", t)
            if key not in truth or truth[key][0] < s:
                truth[key] = (s, joints)
    path = tmp_path / "wilor.json"
    path.write_text(json.dumps({"image_size": [W, H], "frames": frames}))
    f = wilor_focal(W, H)
    k_wilor = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])

    cam = read_json(path, k_wilor, model)

    assert cam.hands["right"].kept.tolist() == [1, 0, 0] and cam.hands["left"].kept.tolist() == [1, 0, 1]
    np.testing.assert_allclose(cam.hands["left"].score, [0.8, 0, 0.95])  # the surer of two left detections
    for (hand, t), (_, joints) in truth.items():
        np.testing.assert_allclose(cam.hands[hand].joints[t], joints, atol=1e-7)
        np.testing.assert_allclose(cam.hands[hand].wrist[t], joints[0], atol=1e-7)
    # release definition: J = orient · mirror(J_right(β, hand_pose) − J0) + wrist
    left = cam.hands["left"]
    pose_aa = Rotation.from_matrix(left.hand_pose[2]).as_rotvec()[None]
    j = smplx_joints(right_file, left.beta, pose_aa, np.zeros((1, 3)), np.zeros((1, 3)))[0]
    np.testing.assert_allclose(((j - j[0]) * [-1, 1, 1]) @ left.orient[2].T + left.wrist[2], truth[("left", 2)][1],
                               atol=1e-7)

    k = np.array([[500.0, 0, 330], [0, 505.0, 236], [0, 0, 1]])  # our camera: same pixels, other depth
    moved = read_json(path, k, model).hands["left"]
    uv = lambda p, kk: (p @ kk.T)[..., :2] / (p @ kk.T)[..., 2:]  # noqa: E731
    np.testing.assert_allclose(uv(moved.wrist[[0, 2]], k), uv(left.wrist[[0, 2]], k_wilor), atol=1e-9)


def test_bad_detections_file(mano, tmp_path):
    _, model = mano
    with pytest.raises(WilorError, match="not found"):
        read_json(tmp_path / "none.json", np.eye(3), model)
    (tmp_path / "bad.json").write_text(json.dumps({"image_size": [W, H], "frames": [[{"is_right": 1}]]}))
    with pytest.raises(WilorError, match="frame 0: malformed"):
        read_json(tmp_path / "bad.json", np.eye(3), model)


def test_backend_with_resized_frames(mano, tmp_path):
    right_file, model = mano
    det, joints = detection(np.random.default_rng(5), right_file, True, 0.9, np.zeros(10))
    path = tmp_path / "wilor.json"
    path.write_text(json.dumps({"image_size": [W, H], "frames": [[], [det], [det]]}))
    k = np.array([[500.0, 0, 330], [0, 505.0, 236], [0, 0, 1]])
    whole = read_json(path, k, model).hands["right"]
    backend = WilorBackend(path, right_file.parent, start=1)
    half = Intrinsics(k=k * [[0.5], [0.5], [1]], width=W // 2, height=H // 2, source="given")
    got = backend.estimate(np.zeros((2, H // 2, W // 2, 3), np.uint8), half).hands["right"]
    np.testing.assert_allclose(got.joints, whole.joints[1:3], atol=1e-12)
    assert got.kept.tolist() == [True, True]


def assert_same_hands(got, expected):
    assert (got.backend, got.version) == (expected.backend, expected.version)
    for hand in ("left", "right"):
        for field in ("kept", "wrist", "orient", "hand_pose", "joints", "beta", "score"):
            np.testing.assert_array_equal(getattr(got.hands[hand], field), getattr(expected.hands[hand], field))


def test_run_turns_a_video_file_into_hands_once_and_slices_its_clips(mano, tmp_path):
    right_file, _ = mano
    rng = np.random.default_rng(6)
    betas = rng.normal(0, 0.7, (5, 10))  # a shape per frame: the hand keeps the mean over the whole video
    path = tmp_path / "vid.json"
    path.write_text(json.dumps({"image_size": [W, H], "frames": [
        [detection(rng, right_file, True, 0.9, b)[0]] for b in betas]}))
    cfg = get_config().hands
    cfg.backend, cfg.path, cfg.mano_dir = "wilor", str(tmp_path / "{video_id}.json"), str(right_file.parent)
    info = VideoInfo(path="vid.mp4", video_id="vid", fps=30.0, width=W, height=H, num_frames=5)
    intr = Intrinsics(k=np.array([[500.0, 0, 330], [0, 505.0, 236], [0, 0, 1]]), width=W, height=H, source="given")
    frames = np.zeros((3, H // 2, W // 2, 3), np.uint8)
    clips = [Clip("vid", 0, 0, 3), Clip("vid", 1, 2, 5)]
    k = backends.frame_intrinsics(intr, frames)
    expected = [WilorBackend(path, right_file.parent, start=c.start).estimate(frames, k) for c in clips]

    backends._VIDEO_HANDS.clear()
    first = backends.clip_hands(cfg, clips[0], info, intr, frames)
    path.write_text("not JSON")  # the rest of the video comes from this process's copy
    second = backends.clip_hands(cfg, clips[1], info, intr, frames)
    assert_same_hands(first, expected[0])
    assert_same_hands(second, expected[1])
    np.testing.assert_allclose(second.hands["right"].beta, betas.mean(0), atol=1e-12)
    other = Intrinsics(k=intr.k * [[1.1], [1.1], [1]], width=W, height=H, source="given")
    with pytest.raises(WilorError, match="not a WiLoR detections file"):  # another camera: read again
        backends.clip_hands(cfg, clips[1], info, other, frames)
    backends._VIDEO_HANDS.clear()
