"""102-d states/actions of chunks, their masks, and `integrate_actions` as their inverse."""

import numpy as np
import pytest

from vitra_jax.handspace import layout, rotations, trajectory
from vitra_jax.handspace.trajectory import HandTrack


def _track(rng, n, kept=None):
    orient = rotations.euler_to_matrix(np.cumsum(rng.normal(0, 0.1, (n, 3)), 0))
    return HandTrack(
        wrist=np.cumsum(rng.normal(0, 0.02, (n, 3)), 0) + [0, 0, 0.5], orient=orient,
        hand_pose=rotations.euler_to_matrix(rng.normal(0, 0.3, (n, 15, 3))), joints=np.zeros((n, 21, 3)),
        kept=np.ones(n, bool) if kept is None else kept, beta=np.zeros(10),
    )


def _cameras(rng, n):
    w2c = np.repeat(np.eye(4)[None], n, 0)
    w2c[:, :3, :3] = rotations.euler_to_matrix(np.cumsum(rng.normal(0, 0.05, (n, 3)), 0))
    w2c[:, :3, 3] = np.cumsum(rng.normal(0, 0.01, (n, 3)), 0)
    return w2c


def test_integrate_reproduces_chunk_states():
    rng = np.random.default_rng(0)
    n = 20
    hands = {"left": _track(rng, n), "right": _track(rng, n)}
    ext = _cameras(rng, n)
    t = 3
    c = trajectory.chunk_targets(hands, ext, t, n=8)
    states = trajectory.integrate_actions(c.state, c.action)
    assert states.shape == (9, 102)
    np.testing.assert_allclose(states[0], c.state)
    r = ext[t, :3, :3]
    for h in layout.HANDS:
        pos = hands[h].wrist[t : t + 9] @ r.T + ext[t, :3, 3]
        np.testing.assert_allclose(states[:, layout.hand_part(h, layout.TRANS)], pos, atol=1e-12)
        rot = rotations.euler_to_matrix(states[:, layout.hand_part(h, layout.ROT)])
        np.testing.assert_allclose(rot, r @ hands[h].orient[t : t + 9], atol=1e-10)
        fingers = rotations.euler_to_matrix(states[1:, layout.hand_part(h, layout.FINGERS)].reshape(8, 15, 3))
        np.testing.assert_allclose(fingers, hands[h].hand_pose[t + 1 : t + 9], atol=1e-10)


def test_known_step_action_in_static_camera():
    n = 3
    rz = rotations.euler_to_matrix(np.array([0.0, 0.0, 0.1]))
    orient = np.stack([np.eye(3), rz, rz @ rz])
    track = HandTrack(wrist=np.array([[0, 0, 0.5], [0.01, 0, 0.5], [0.03, 0, 0.5]]), orient=orient,
                      hand_pose=np.repeat(np.eye(3)[None, None], n, 0).repeat(15, 1),
                      joints=np.zeros((n, 21, 3)),
                      kept=np.ones(n, bool), beta=np.zeros(10))
    idle = HandTrack(**{**track.__dict__, "kept": np.zeros(n, bool)})
    tg = trajectory.step_targets({"left": idle, "right": track}, np.repeat(np.eye(4)[None], n, 0))
    np.testing.assert_allclose(tg.action[0, 51:57], [0.01, 0, 0, 0, 0, 0.1], atol=1e-12)
    np.testing.assert_allclose(tg.action[1, 51:57], [0.02, 0, 0, 0, 0, 0.1], atol=1e-12)
    assert tg.action_mask.tolist() == [[False, True], [False, True], [False, False]]
    assert not tg.action[:, :51].any() and not tg.state[:, :51].any() and not tg.action[2].any()


def test_chunk_masks_from_kept_frames_and_episode_end():
    rng = np.random.default_rng(1)
    n = 6
    kept = np.array([1, 1, 0, 1, 1, 1], bool)
    hands = {"left": _track(rng, n, kept), "right": _track(rng, n)}
    c = trajectory.chunk_targets(hands, _cameras(rng, n), 0, n=8)
    # action k valid iff kept(k) & kept(k+1) and k+1 inside the episode.
    assert c.action_mask[:, 0].tolist() == [True, False, False, True, True, False, False, False]
    assert c.action_mask[:, 1].tolist() == [True] * 5 + [False] * 3
    assert c.state_mask.tolist() == [True, True]
    assert not c.action[~c.action_mask[:, 0], :51].any()
    with pytest.raises(ValueError, match="anchor frame 6"):
        trajectory.chunk_targets(hands, _cameras(rng, n), 6)


def test_integrate_actions_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 102\)"):
        trajectory.integrate_actions(np.zeros(102), np.zeros((4, 51)))


def test_flip_horizontal_matches_targets_of_the_mirrored_scene():
    rng = np.random.default_rng(2)
    n = 7
    hands = {"left": _track(rng, n), "right": _track(rng, n, kept=np.array([1, 1, 1, 0, 1, 1, 1], bool))}
    ext = _cameras(rng, n)
    m = np.diag([-1.0, 1.0, 1.0])
    mirrored_ext = ext.copy()
    mirrored_ext[:, :3, :3] = m @ ext[:, :3, :3] @ m
    mirrored_ext[:, :3, 3] = ext[:, :3, 3] @ m
    mirrored = {
        other: HandTrack(wrist=hands[h].wrist @ m, orient=m @ hands[h].orient @ m,
                         hand_pose=hands[h].hand_pose, joints=hands[h].joints, kept=hands[h].kept,
                         beta=hands[h].beta)
        for h, other in (("left", "right"), ("right", "left"))
    }
    tg, ref = trajectory.step_targets(hands, ext), trajectory.step_targets(mirrored, mirrored_ext)
    np.testing.assert_allclose(trajectory.flip_horizontal(tg.state), ref.state, atol=1e-10)
    np.testing.assert_allclose(trajectory.flip_horizontal(tg.action), ref.action, atol=1e-10)
    np.testing.assert_array_equal(tg.action_mask[:, ::-1], ref.action_mask)
    np.testing.assert_allclose(trajectory.flip_horizontal(trajectory.flip_horizontal(tg.state)), tg.state)


def test_a_hand_window_masks_steps_reaching_its_end():
    rng = np.random.default_rng(3)
    n = 20
    hands = {"left": _track(rng, n, kept=np.array([i not in (3, 10, 11) for i in range(n)])), "right": _track(rng, n)}
    ext = _cameras(rng, n)
    full = trajectory.chunk_targets(hands, ext, 8)
    c = trajectory.chunk_targets(hands, ext, 8, windows={"left": (5, 15)})
    # Left step k (8+k -> 9+k) needs both frames tracked and 9+k < 15; the right hand keeps the episode.
    assert "".join(str(int(v)) for v in c.action_mask[:, 0]) == "1000110000000000"
    assert c.action_mask[:, 1].tolist() == [True] * 11 + [False] * 5
    np.testing.assert_array_equal(c.action[:, 51:], full.action[:, 51:])
    np.testing.assert_array_equal(c.action[c.action_mask[:, 0], :51], full.action[c.action_mask[:, 0], :51])
    assert not c.action[~c.action_mask[:, 0], :51].any()
    np.testing.assert_array_equal(c.state, full.state)
    # When t+15 is the last frame, step 15 has no next frame: masked (the release keeps it, zero motion).
    assert trajectory.chunk_targets(hands, ext, n - 16).action_mask[:, 1].tolist() == [True] * 15 + [False]
    assert trajectory.chunk_targets(hands, ext, 2, windows={"right": (0, 18)}).action_mask[-1, 1] == 0
    for bad, match in (({"left": (9, 15)}, "cover the anchor frame 8"), ({"left": (5, 21)}, "20 frames"),
                       ({"both": (0, 20)}, "unknown hand")):
        with pytest.raises(ValueError, match=match):
            trajectory.chunk_targets(hands, ext, 8, windows=bad)
