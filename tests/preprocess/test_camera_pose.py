"""Camera-pose readers, recombination of clip poses and world-space hands (official fixture episode)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocess import camera_pose
from preprocess.records import CameraPoses, CamHand, CamHands, Clip, empty_cam_hand
from tests.preprocess import vitra_example


@pytest.fixture(scope="module")
def episode(fixtures_dir):
    return vitra_example.arrays(fixtures_dir), vitra_example.meta(fixtures_dir)


def test_world_hands_reproduce_the_official_world_space(episode):
    arrays, meta = episode
    n = len(arrays["extrinsics"])
    hands = {}
    for h in ("left", "right"):
        kept = arrays[f"{h}/kept_frames"].astype(bool)
        if not kept.any():
            hands[h] = empty_cam_hand(n)
            continue
        joints = arrays[f"{h}/joints_camspace"]
        hands[h] = CamHand(kept=kept, wrist=joints[:, 0], orient=arrays[f"{h}/global_orient_camspace"],
                           hand_pose=arrays[f"{h}/hand_pose"], joints=joints, beta=arrays[f"{h}/beta"],
                           score=kept.astype(float))
    assert meta["anno_type"] == "right" and hands["right"].kept.all() and not hands["left"].kept.any()
    world = camera_pose.world_hands(CamHands(hands, "official", "VITRA-1M"),
                                    CameraPoses(arrays["extrinsics"], source="given"))
    right = world["right"]
    assert np.abs(right.joints - arrays["right/joints_worldspace"]).max() <= 1e-5
    assert np.abs(right.wrist - arrays["right/transl_worldspace"]).max() <= 1e-5  # the wrist joint
    assert np.abs(right.orient - arrays["right/global_orient_worldspace"]).max() <= 1e-5
    np.testing.assert_array_equal(right.hand_pose, arrays["right/hand_pose"])
    assert not world["left"].kept.any() and right.kept.all()
    # MANO's root translation is not the wrist (the trap world_hands avoids by using the wrist joint).
    assert np.linalg.norm(arrays["right/transl_camspace"] - arrays["right/joints_camspace"][:, 0], axis=1).min() > 0.02


def _random_c2w(rng, n):
    """A smooth random camera trajectory: rotations from integrated angular velocity, moving centres."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    rot = Rotation.from_rotvec(rng.normal(0, 1, 3))
    pos = rng.normal(0, 1, 3)
    vel = rng.normal(0, 0.02, 3)
    for i in range(n):
        c2w[i, :3, :3], c2w[i, :3, 3] = rot.as_matrix(), pos
        rot = Rotation.from_rotvec(rng.normal(0, 0.03, 3)) * rot
        vel = vel + rng.normal(0, 0.005, 3)
        pos = pos + vel
    return c2w


def _similarity(rng, scale):
    s = np.eye(4)
    s[:3, :3] = Rotation.from_rotvec(rng.normal(0, 1, 3)).as_matrix() * scale
    s[:3, 3] = rng.normal(0, 2, 3)
    return s


def _in_other_world(c2w, sim):
    """The same cameras seen from a world related by x_other = sim · x (scale folded into positions)."""
    out = sim @ c2w
    scale = np.cbrt(np.linalg.det(sim[:3, :3]))
    out[:, :3, :3] /= scale
    return out


@pytest.mark.parametrize("scale_known", [True, False])
def test_stitch_poses_recovers_a_known_transform_between_clips(scale_known):
    rng = np.random.default_rng(7)
    truth = _random_c2w(rng, 50)
    clips = [Clip("v", 0, 0, 20), Clip("v", 1, 14, 36), Clip("v", 2, 30, 50)]
    poses = []
    for clip in clips:
        sim = np.eye(4) if clip.index == 0 else _similarity(rng, 1.0 if scale_known else rng.uniform(0.3, 3))
        own = _in_other_world(truth[clip.start:clip.stop], sim)
        poses.append(CameraPoses(np.linalg.inv(own), source="megasam", scale_known=scale_known))
    out = camera_pose.stitch_poses(clips, poses)
    np.testing.assert_allclose(out.extrinsics, np.linalg.inv(truth), atol=1e-9)
    assert out.scale_known == scale_known and out.source == "megasam"
    again = camera_pose.stitch_poses(clips, poses)
    np.testing.assert_array_equal(again.extrinsics, out.extrinsics)  # deterministic, bit for bit
    if scale_known:  # SE(3) cannot absorb a scale change: a rescaled clip no longer lines up
        poses[1] = CameraPoses(np.linalg.inv(_in_other_world(truth[14:36], _similarity(rng, 2.0))), "megasam")
        assert np.abs(camera_pose.stitch_poses(clips, poses).extrinsics - np.linalg.inv(truth)).max() > 1e-3


def test_stitch_poses_refuses_clips_without_shared_frames():
    poses = [CameraPoses(np.tile(np.eye(4), (n, 1, 1)), "static") for n in (10, 10)]
    with pytest.raises(camera_pose.PoseError, match="share 1 frames"):
        camera_pose.stitch_poses([Clip("v", 0, 0, 10), Clip("v", 1, 9, 19)], poses)
    with pytest.raises(ValueError, match="extrinsics \\(10, 4, 4\\) for 11 frames"):
        camera_pose.stitch_poses([Clip("v", 0, 0, 10), Clip("v", 1, 8, 19)], poses)


def test_static_megasam_and_hawor_readers(tmp_path):
    clip = Clip("v", 1, 5, 9)
    np.testing.assert_array_equal(camera_pose.StaticPose().estimate(clip).extrinsics, np.tile(np.eye(4), (4, 1, 1)))
    assert camera_pose.StaticPose().estimate(clip).source == "static"
    # A moving camera without an ego-motion estimate: the same identities, recorded as the camera frame.
    unmoved = camera_pose.StaticPose("camera_frame").estimate(clip)
    np.testing.assert_array_equal(unmoved.extrinsics, np.tile(np.eye(4), (4, 1, 1)))
    assert unmoved.source == "camera_frame" and unmoved.scale_known
    # MegaSAM: cam_c2w for video frames 2..13 (frame_offset 2).
    c2w = _random_c2w(np.random.default_rng(1), 12)
    np.savez(tmp_path / "scene_droid.npz", cam_c2w=c2w, intrinsic=np.eye(3), depths=np.ones((12, 4, 4)))
    poses = camera_pose.MegaSaMReader(tmp_path / "scene_droid.npz", frame_offset=2).estimate(clip)
    np.testing.assert_allclose(poses.extrinsics, np.linalg.inv(c2w[3:7]), atol=1e-12)
    assert poses.source == "megasam" and not poses.scale_known
    with pytest.raises(camera_pose.PoseError, match="poses_do_not_cover_clip"):
        camera_pose.MegaSaMReader(tmp_path / "scene_droid.npz", frame_offset=6).estimate(clip)
    # HaWoR SLAM: 90° about z is quaternion (x, y, z, w) = (0, 0, sin 45°, cos 45°); t is scaled by `scale`.
    traj = np.zeros((10, 7))
    traj[:, 6] = 1.0
    traj[6] = [1.0, 2.0, 3.0, 0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]
    np.savez(tmp_path / "hawor_slam_w_scale_0_10.npz", traj=traj, scale=np.array(0.5), tstamp=np.arange(3),
             img_focal=600.0, img_center=np.array([240.0, 184.0]))
    poses = camera_pose.HaworSlamReader(tmp_path / "hawor_slam_w_scale_0_10.npz").estimate(clip)
    expected_c2w = np.array([[0, -1, 0, 0.5], [1, 0, 0, 1.0], [0, 0, 1, 1.5], [0, 0, 0, 1]])
    np.testing.assert_allclose(np.linalg.inv(poses.extrinsics[1]), expected_c2w, atol=1e-12)  # video frame 6
    np.testing.assert_allclose(poses.extrinsics[0], np.eye(4), atol=1e-12)
    np.savez(tmp_path / "bad.npz", traj=np.zeros((10, 6)), scale=np.array(1.0))
    with pytest.raises(camera_pose.PoseError, match="bad_poses: .*quaternion xyzw"):
        camera_pose.HaworSlamReader(tmp_path / "bad.npz").estimate(clip)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(camera_pose.PoseError, match="unreadable_poses"):
        camera_pose.MegaSaMReader(tmp_path / "junk.npz").estimate(clip)
