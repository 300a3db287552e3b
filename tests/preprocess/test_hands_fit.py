"""MANO keypoints and the MANO fit against smplx's own forward pass on a synthetic MANO file.

References written out here: the release's 21 keypoints (smplx MANO joints + fingertip vertices 744, 320,
443, 554, 671, reordered to OpenPose) and its left-hand definition J = R · mirror(J_right − J0) + wrist.
"""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from preprocess.hands.fit import FitConfig, axis_angle_to_matrix, fit_hand, kabsch, rotation_6d_to_matrix
from preprocess.hands.mano_model import MissingManoError, load_mano, wrist_rest
from tests.preprocess.mano_synthetic import OPENPOSE_FROM_MANO, write_synthetic_mano
from tests.preprocess.mano_synthetic import smplx_joints as synthetic_joints



@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mano")
    write_synthetic_mano(d)
    return d


@pytest.fixture(scope="module")
def model(mano_dir):
    torch.set_num_threads(1)
    return load_mano(mano_dir)


def smplx_joints(mano_dir, beta, pose_aa, orient_aa, transl):
    return synthetic_joints(mano_dir / "MANO_RIGHT.pkl", beta, pose_aa, orient_aa, transl)


def natural_poses(mano_dir, n, rng, scale=0.35):
    """Random finger poses whose joint rotations the 21 keypoints determine: knuckles (and the thumb) swing
    about an axis across the bone, the other finger joints bend about the palm's y axis (the synthetic hand lies
    in the xy plane, fingers along +x). A twist about a bone moves no keypoint, so no fit could recover it."""
    zero = smplx_joints(mano_dir, np.zeros(10), np.zeros((1, 15, 3)), np.zeros((1, 3)), np.zeros((1, 3)))[0]
    mano_order = np.empty((21, 3))
    mano_order[OPENPOSE_FROM_MANO] = zero
    tip_of = {3: 17, 6: 18, 9: 20, 12: 19, 15: 16}  # last joint of index, middle, pinky, ring, thumb -> its tip
    child = [tip_of.get(k, k + 1) for k in range(1, 16)]
    bone = mano_order[child] - mano_order[1:16]
    bone /= np.linalg.norm(bone, axis=-1, keepdims=True)
    v = rng.normal(0.0, scale, (n, 15, 3))
    v = v - (v * bone).sum(-1, keepdims=True) * bone
    hinge = np.array([k % 3 != 1 and k < 13 for k in range(1, 16)])  # finger PIP and DIP joints
    v[:, hinge] = np.array([0.0, 1.0, 0.0]) * np.abs(v[:, hinge, 1:2])
    return v


def test_keypoints_match_smplx_full_forward(mano_dir, model):
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 0.5, (3, 15, 3))
    beta = rng.normal(0, 1, 10)
    ref = smplx_joints(mano_dir, beta, pose, np.zeros((3, 3)), np.zeros((3, 3)))
    with torch.no_grad():
        got = model.keypoints(torch.tensor(beta)[None], torch.tensor(Rotation.from_rotvec(
            pose.reshape(-1, 3)).as_matrix().reshape(3, 15, 3, 3))).numpy()
    np.testing.assert_allclose(got, ref - ref[:, :1], atol=1e-9)
    # MANO rotates about J0, so with transl = 0 the wrist joint is J0(beta) whatever the pose
    np.testing.assert_allclose(wrist_rest(model, beta), ref[0, 0], atol=1e-12)


def test_missing_mano_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(MissingManoError) as e:
        load_mano(tmp_path)
    assert str(tmp_path / "MANO_RIGHT.pkl") in str(e.value) and "mano.is.tue.mpg.de" in str(e.value)
    with pytest.raises(MissingManoError, match="MANO_RIGHT.pkl needed, but no mano_dir is configured"):
        load_mano("")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"\x80\x02cchumpy.ch\nCh\nq\x00.")
    with pytest.raises(MissingManoError, match="chumpy"):
        load_mano(tmp_path)


def test_rotation_helpers_match_scipy():
    rng = np.random.default_rng(1)
    v = rng.normal(0, 1.0, (5, 3))
    np.testing.assert_allclose(axis_angle_to_matrix(torch.tensor(v)).numpy(), Rotation.from_rotvec(v).as_matrix(),
                               atol=1e-9)
    r = Rotation.from_rotvec(v).as_matrix()
    six = np.concatenate([r[:, :, 0] * 2.0, r[:, :, 1] + 0.3 * r[:, :, 0]], -1)  # unnormalised, skewed columns
    np.testing.assert_allclose(rotation_6d_to_matrix(torch.tensor(six)).numpy(), r, atol=1e-9)
    src = rng.normal(0, 0.05, (2, 6, 3))
    dst = np.einsum("tab,tjb->tja", r[:2], src) + [[0.1, 0.2, 0.5]]
    rot, t = kabsch(src, dst, np.ones(6))
    np.testing.assert_allclose(rot, r[:2], atol=1e-9)
    np.testing.assert_allclose(t, [[0.1, 0.2, 0.5]] * 2, atol=1e-9)


@pytest.mark.parametrize("hand", ["right", "left"])
def test_fit_recovers_known_hands(mano_dir, model, hand):
    rng = np.random.default_rng(2 if hand == "right" else 3)
    n = 8
    pose = natural_poses(mano_dir, n, rng)
    beta = rng.normal(0, 0.8, 10)
    orient = Rotation.random(n, random_state=4)
    transl = rng.normal(0, 0.1, (n, 3)) + [0, 0, 0.5]
    right = smplx_joints(mano_dir, beta, pose, np.zeros((n, 3)), np.zeros((n, 3)))  # identity global rotation
    wrist = right[:, 0] + transl
    local = right - right[:, :1]
    if hand == "left":  # the release: mirror the right hand's joints in x, then apply the left orientation
        local = local * [-1.0, 1.0, 1.0]
    target = np.einsum("tab,tjb->tja", orient.as_matrix(), local) + wrist[:, None]
    valid = np.ones(n, bool)
    valid[5] = False
    target[6] = rng.normal(0, 0.3, (21, 3)) + [0, 0, 0.5]  # not a hand: the fit must reject it

    got = fit_hand(model, target, valid, hand, FitConfig(), score=np.full(n, 0.9))

    ok = np.array([1, 1, 1, 1, 1, 0, 0, 1], bool)
    np.testing.assert_array_equal(got.kept, ok)
    np.testing.assert_array_equal(got.score, np.where(ok, 0.9, 0.0))
    assert np.linalg.norm(got.joints - target, axis=-1)[ok].max() < 0.003
    assert np.linalg.norm(got.wrist - wrist, axis=-1)[ok].max() < 0.002
    orient_err = (Rotation.from_matrix(got.orient[ok]).inv() * orient[ok]).magnitude()
    assert np.degrees(orient_err).max() < 2.5
    pose_err = Rotation.from_matrix(got.hand_pose[ok].reshape(-1, 3, 3)).inv() * Rotation.from_rotvec(
        pose[ok].reshape(-1, 3))
    # the joint rotations are ~20 degrees (median); the pose prior leaves a few degrees
    assert np.degrees(np.median(pose_err.magnitude())) < 8.0
    assert np.median(pose_err.magnitude()) < 0.4 * np.median(np.linalg.norm(pose[ok], axis=-1))


def test_smoothness_prior_steadies_noisy_sequences(mano_dir, model):
    rng = np.random.default_rng(7)
    n = 10
    start, end = natural_poses(mano_dir, 2, rng)
    pose = start + np.linspace(0, 1, n)[:, None, None] * (end - start)  # a slow, smooth finger motion
    orient = Rotation.from_rotvec(np.linspace([0.2, 1.0, -0.5], [0.4, 1.3, -0.3], n))
    wrist = np.linspace([0.0, 0.0, 0.5], [0.05, -0.02, 0.45], n)
    right = smplx_joints(mano_dir, np.zeros(10), pose, np.zeros((n, 3)), np.zeros((n, 3)))
    clean = np.einsum("tab,tjb->tja", orient.as_matrix(), right - right[:, :1]) + wrist[:, None]
    noisy = clean + rng.normal(0, 0.004, clean.shape)  # 4 mm keypoint noise, like lifted MediaPipe landmarks
    truth = Rotation.from_rotvec(pose.reshape(-1, 3))

    def stats(cfg):
        got = fit_hand(model, noisy, np.ones(n, bool), "right", cfg)
        rots = Rotation.from_matrix(got.hand_pose.reshape(-1, 3, 3))
        step = Rotation.from_matrix(got.hand_pose[1:].reshape(-1, 3, 3)).inv() * Rotation.from_matrix(
            got.hand_pose[:-1].reshape(-1, 3, 3))
        return np.median(step.magnitude()), np.median((rots.inv() * truth).magnitude())

    step_free, err_free = stats(FitConfig())
    step_smooth, err_smooth = stats(FitConfig(smooth_prior=0.3))
    true_step = np.median((Rotation.from_rotvec(pose[1:].reshape(-1, 3)).inv()
                           * Rotation.from_rotvec(pose[:-1].reshape(-1, 3))).magnitude())
    print(f"\nframe-to-frame joint rotation (median, deg): free {np.degrees(step_free):.1f}, smoothed "
          f"{np.degrees(step_smooth):.1f}, true {np.degrees(true_step):.1f}; error {np.degrees(err_free):.1f} -> "
          f"{np.degrees(err_smooth):.1f}")
    assert step_smooth < 0.5 * step_free and abs(step_smooth - true_step) < abs(step_free - true_step)
    assert err_smooth < err_free
