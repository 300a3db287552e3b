"""HaWoR adapters: files written here in HaWoR's and VITRA's formats from known MANO parameters.

Ground truth is each tool's own generative definition, run with smplx on a synthetic mirror-symmetric pair
of MANO files: HaWoR renders a left hand with MANO_LEFT(root, pose, betas, transl) (`run_mano_left`);
VITRA's wrapper gives the wrist joint as `transl` and left fingers in right-hand form
(j = MANO_R(β, θ, I).joints; x negated for left; j_cam = R·(j − j0) + transl). The release definition of
the result, J = orient · mirror(J_right − J0) + wrist, is checked separately.
"""

import json
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from preprocess import backends
from preprocess.config import get_config
from preprocess.hands import joblib_tensors
from preprocess.hands.hawor import HaworBackend, HaworError, hawor_camera, read_cam_space, read_vitra_hawor, read_world_space
from preprocess.hands.joblib_tensors import JoblibReadError
from preprocess.hands.mano_model import load_mano
from preprocess.records import Clip, Intrinsics, VideoInfo
from tests.preprocess.mano_synthetic import smplx_joints, write_synthetic_mano
from tests.preprocess.test_hands_wilor import assert_same_hands

M = np.diag([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("mano_pair")
    right = write_synthetic_mano(d, pose_correctives=False)
    left = write_synthetic_mano(d, left=True, pose_correctives=False)
    torch.set_num_threads(1)
    return right, left, load_mano(d)


def release_definition(right_file, cam_hand, hand):
    """orient · mirror(J_right(β, hand_pose) − J0) + wrist, with smplx's right model."""
    pose_aa = Rotation.from_matrix(cam_hand.hand_pose.reshape(-1, 3, 3)).as_rotvec().reshape(-1, 15, 3)
    n = len(pose_aa)
    j = smplx_joints(right_file, cam_hand.beta, pose_aa, np.zeros((n, 3)), np.zeros((n, 3)))
    j = j - j[:, :1]
    if hand == "left":
        j = j @ M
    return np.einsum("tab,tjb->tja", cam_hand.orient, j) + cam_hand.wrist[:, None]


def _params(rng, n):
    return (Rotation.random(n, random_state=rng.integers(1000)).as_rotvec(), rng.normal(0, 0.3, (n, 15, 3)),
            rng.normal(0, 0.05, (n, 3)) + [0, 0, 0.4], rng.normal(0, 0.7, 10))


def _write_chunk(folder, idx, first, root, pose, transl, beta):
    n = len(root)
    mats = Rotation.from_rotvec
    d = {"init_root_orient": [mats(root).as_matrix().tolist()],
         "init_hand_pose": [mats(pose.reshape(-1, 3)).as_matrix().reshape(n, 15, 3, 3).tolist()],
         "init_trans": [transl.tolist()], "init_betas": [np.tile(beta, (n, 1)).tolist()]}
    (folder / str(idx)).mkdir(parents=True, exist_ok=True)
    (folder / str(idx) / f"{first}_{first + n - 1}.json").write_text(json.dumps(d))


def test_cam_space_json_left_and_right(pair, tmp_path):
    right_file, left_file, model = pair
    rng = np.random.default_rng(0)
    folder = tmp_path / "cam_space"
    truth = {}
    for idx, hand, model_file, spans in ((0, "left", left_file, [(2, 4)]), (1, "right", right_file, [(0, 4), (6, 2)])):
        beta = rng.normal(0, 0.7, 10)
        for first, n in spans:
            root, pose, transl, _ = _params(rng, n)
            _write_chunk(folder, idx, first, root, pose, transl, beta)
            truth[(hand, first)] = smplx_joints(model_file, beta, pose, root, transl)  # HaWoR's own rendering

    cam = read_cam_space(folder, 9, model)

    assert cam.hands["left"].kept.tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert cam.hands["right"].kept.tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 0]
    for (hand, first), joints in truth.items():
        got = cam.hands[hand]
        span = slice(first, first + len(joints))
        np.testing.assert_allclose(got.joints[span], joints, atol=1e-7)
        np.testing.assert_allclose(got.wrist[span], joints[:, 0], atol=1e-7)
    for hand in ("left", "right"):
        got = cam.hands[hand]
        np.testing.assert_allclose(release_definition(right_file, got, hand)[got.kept], got.joints[got.kept],
                                   atol=1e-7)


def test_cam_space_refocus_keeps_the_wrist_pixel(pair, tmp_path):
    _, left_file, model = pair
    root, pose, transl, beta = _params(np.random.default_rng(1), 3)
    _write_chunk(tmp_path, 0, 0, root, pose, transl, beta)
    k = np.array([[1400.0, 0, 950], [0, 1380.0, 530], [0, 0, 1]])
    plain = read_cam_space(tmp_path, 3, model).hands["left"]
    moved = read_cam_space(tmp_path, 3, model, k=k, image_size=(1920, 1080)).hands["left"]
    k_hawor = hawor_camera(1920, 1080)  # f = 600 at the image centre
    uv = lambda p, kk: (p @ kk.T)[:, :2] / (p @ kk.T)[:, 2:]  # noqa: E731
    np.testing.assert_allclose(uv(moved.wrist, k), uv(plain.wrist, k_hawor), atol=1e-7)
    np.testing.assert_allclose(moved.wrist[:, 2], plain.wrist[:, 2] * 1400.0 / 600.0)
    np.testing.assert_allclose(moved.joints - moved.wrist[:, None], plain.joints - plain.wrist[:, None], atol=1e-12)


def test_vitra_wrapper_output(pair, tmp_path):
    right_file, _, model = pair
    rng = np.random.default_rng(2)
    d, truth = {"fov_x": 67.7}, {}
    for hand, frames in (("left", [1]), ("right", [0, 2])):
        d[hand] = {}
        beta = rng.normal(0, 0.7, 10)  # one shape per hand: a CamHand has one
        for t in frames:
            root, pose, wrist, _ = _params(rng, 1)
            j = smplx_joints(right_file, beta, pose, np.zeros((1, 3)), np.zeros((1, 3)))[0]
            if hand == "left":
                j = j @ M
            r = Rotation.from_rotvec(root[0]).as_matrix()
            truth[(hand, t)] = (j - j[0]) @ r.T + wrist[0]
            d[hand][t] = {"beta": beta, "global_orient": r, "transl": wrist[0],
                          "hand_pose": Rotation.from_rotvec(pose[0]).as_matrix()}
    np.save(tmp_path / "0001.npy", np.array(d, dtype=object), allow_pickle=True)

    cam = read_vitra_hawor(tmp_path / "0001.npy", model)

    assert cam.hands["left"].kept.tolist() == [0, 1, 0] and cam.hands["right"].kept.tolist() == [1, 0, 1]
    for (hand, t), joints in truth.items():
        np.testing.assert_allclose(cam.hands[hand].joints[t], joints, atol=1e-7)


def test_malformed_or_missing_hawor_output(pair, tmp_path):
    _, _, model = pair
    with pytest.raises(HaworError, match="not found"):
        read_cam_space(tmp_path / "nope", 5, model)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "0_3.json").write_text(json.dumps({"init_root_orient": [[[1]]]}))
    with pytest.raises(HaworError, match="0_3.json"):
        read_cam_space(tmp_path, 5, model)


class _JoblibWriter(pickle._Pickler):
    """Writes like joblib.dump (joblib/numpy_pickle.py, NumpyPickler.save and NumpyArrayWrapper.write_array):
    an array becomes a NumpyArrayWrapper, the pickle frame is committed, then one byte with the padding length
    to a 16-byte boundary, the padding (0xff) and the array's C-order bytes."""

    def save(self, obj, save_persistent_id=True):
        if type(obj) is np.ndarray:
            wrapper = sys.modules["joblib.numpy_pickle"].NumpyArrayWrapper()
            wrapper.__dict__.update(subclass=np.ndarray, shape=obj.shape, order="C", dtype=obj.dtype,
                                    allow_mmap=True, numpy_array_alignment_bytes=16)
            super().save(wrapper)
            self.framer.commit_frame(force=True)
            pos = self._file.tell() + 1
            pad = 16 - pos % 16
            self._file.write(bytes([pad]) + b"\xff" * pad + np.ascontiguousarray(obj).tobytes())
            return
        super().save(obj, save_persistent_id)

    def __init__(self, file):
        super().__init__(file, protocol=4)
        self._file = file


def _joblib_dump(obj, path):
    fake = types.ModuleType("joblib.numpy_pickle")
    fake.NumpyArrayWrapper = type("NumpyArrayWrapper", (), {"__module__": "joblib.numpy_pickle"})
    saved = {k: sys.modules.get(k) for k in ("joblib", "joblib.numpy_pickle")}
    sys.modules["joblib"], sys.modules["joblib.numpy_pickle"] = types.ModuleType("joblib"), fake
    try:
        with open(path, "wb") as f:
            _JoblibWriter(f).dump(obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_world_space_res_into_camera_space(pair, tmp_path):
    right_file, left_file, model = pair
    rng = np.random.default_rng(3)
    n = 4
    trans, root, pose = rng.normal(0, 0.2, (2, n, 3)), rng.normal(0, 1, (2, n, 3)), rng.normal(0, 0.3, (2, n, 45))
    betas = np.tile(rng.normal(0, 0.7, (2, 1, 10)), (1, n, 1))
    valid = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool)
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3, :3] = Rotation.random(n, random_state=5).as_matrix()
    w2c[:, :3, 3] = rng.normal(0, 0.5, (n, 3))
    res = [torch.tensor(trans, dtype=torch.float32), torch.tensor(root, dtype=torch.float32),
           torch.tensor(pose, dtype=torch.float32), torch.tensor(betas, dtype=torch.float32), valid]
    _joblib_dump(res, tmp_path / "world_space_res.pth")
    f32 = [x.numpy().astype(np.float64) for x in res[:4]]

    cam = read_world_space(tmp_path / "world_space_res.pth", w2c, model)

    for idx, (hand, model_file) in enumerate((("left", left_file), ("right", right_file))):
        world = smplx_joints(model_file, f32[3][idx, 0], f32[2][idx].reshape(n, 15, 3), f32[1][idx], f32[0][idx])
        expected = np.einsum("tab,tjb->tja", w2c[:, :3, :3], world) + w2c[:, None, :3, 3]
        got = cam.hands[hand]
        assert got.kept.tolist() == valid[idx].tolist()
        np.testing.assert_allclose(got.joints[got.kept], expected[got.kept], atol=1e-6)
        np.testing.assert_allclose(release_definition(right_file, got, hand)[got.kept], got.joints[got.kept],
                                   atol=1e-7)


def test_joblib_reader_refuses_other_objects(tmp_path):
    (tmp_path / "evil.pth").write_bytes(pickle.dumps([print], protocol=4))
    with pytest.raises(JoblibReadError, match="builtins.print"):
        joblib_tensors.load(tmp_path / "evil.pth")


def test_backend_slices_the_clip_and_handles_resized_frames(pair, tmp_path):
    right_file, _, model = pair
    root, pose, transl, beta = _params(np.random.default_rng(4), 6)
    _write_chunk(tmp_path / "cam_space", 1, 0, root, pose, transl, beta)
    k_full = np.array([[1400.0, 0, 950], [0, 1380.0, 530], [0, 0, 1]])
    whole = read_cam_space(tmp_path / "cam_space", 6, model, k=k_full, image_size=(1920, 1080)).hands["right"]
    backend = HaworBackend(tmp_path / "cam_space", right_file.parent, start=2, video_size=(1920, 1080))
    half = Intrinsics(k=k_full * [[0.5], [0.5], [1]], width=960, height=540, source="given")
    got = backend.estimate(np.zeros((3, 540, 960, 3), np.uint8), half).hands["right"]
    np.testing.assert_allclose(got.joints, whole.joints[2:5], atol=1e-12)
    assert got.kept.all() and not backend.estimate(np.zeros((3, 2, 2, 3), np.uint8), half).hands["left"].kept.any()


def test_run_turns_a_cam_space_folder_into_hands_once_and_slices_its_clips(pair, tmp_path):
    right_file, _, _ = pair
    rng = np.random.default_rng(7)
    folder = tmp_path / "vid"
    _write_chunk(folder, 1, 0, *_params(rng, 4))
    _write_chunk(folder, 1, 4, *_params(rng, 3))  # another shape: the hand keeps the mean of the two chunks
    _write_chunk(folder, 0, 1, *_params(rng, 2))
    cfg = get_config().hands
    cfg.backend, cfg.path, cfg.mano_dir = "hawor", str(tmp_path / "{video_id}"), str(right_file.parent)
    info = VideoInfo(path="vid.mp4", video_id="vid", fps=30.0, width=1920, height=1080, num_frames=9)
    k_full = np.array([[1400.0, 0, 950], [0, 1380.0, 530], [0, 0, 1]])
    intr = Intrinsics(k=k_full, width=1920, height=1080, source="given")
    frames = np.zeros((3, 540, 960, 3), np.uint8)
    clips = [Clip("vid", 0, 0, 3), Clip("vid", 1, 2, 5), Clip("vid", 2, 4, 7), Clip("vid", 3, 6, 9)]
    k = backends.frame_intrinsics(intr, frames)
    expected = [HaworBackend(folder, right_file.parent, start=c.start, video_size=(1920, 1080)).estimate(frames, k)
                for c in clips]

    backends._VIDEO_HANDS.clear()
    got = [backends.clip_hands(cfg, clips[0], info, intr, frames)]
    (folder / "1" / "0_3.json").write_text("not JSON")  # the rest of the folder's frames come from the copy
    got += [backends.clip_hands(cfg, c, info, intr, frames) for c in clips[1:3]]
    for g, e in zip(got, expected):
        assert_same_hands(g, e)
    with pytest.raises(HaworError, match="not a HaWoR camera-space result"):  # the clip past its last frame
        backends.clip_hands(cfg, clips[3], info, intr, frames)
    backends._VIDEO_HANDS.clear()
