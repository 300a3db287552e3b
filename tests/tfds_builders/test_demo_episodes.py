"""Procedural demo episodes: deterministic, valid, and the main hand ends at the drawn target."""

import numpy as np

from tfds_builders.hand_vla import demo
from vitra_jax.handspace import episode, geometry


def test_demo_episode_is_deterministic_and_valid():
    ep, frames = demo.demo_episode(3)
    ep2, frames2 = demo.demo_episode(3)
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(ep.hands["left"].joints, ep2.hands["left"].joints)
    assert not np.array_equal(frames, demo.demo_episode(4)[1])
    episode.validate(ep)
    assert frames.shape == (24, 128, 128, 3) and ep.main_hand == "right" and ep.camera_motion == "moving"


def test_main_hand_reaches_target_and_hands_stay_in_view():
    for i in range(8):
        ep, _ = demo.demo_episode(i)
        target = list(demo.TARGETS)[i % 4]
        world_target = geometry.camera_to_world_points(np.asarray(demo.TARGETS[target][0]), ep.extrinsics[0])
        np.testing.assert_allclose(ep.hands[ep.main_hand].wrist[-1], world_target, atol=1e-12)
        assert ep.text[ep.main_hand][0][0] == f"Reach for the {target}."
        for hand in ("left", "right"):
            for t in range(24):
                cam = geometry.world_to_camera_points(ep.hands[hand].joints[t], ep.extrinsics[t])
                uv = geometry.project(cam, ep.intrinsics)
                assert ((uv >= 0) & (uv < 128)).all(), (i, hand, t)
