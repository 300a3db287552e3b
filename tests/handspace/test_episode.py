"""Episode file format (write/read, atomic, versioned), validation and the restricted VITRA-1M loader."""

import json
import pickle

import numpy as np
import pytest

from vitra_jax.handspace import episode as E

NPY = "videos/Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example.npy"


@pytest.fixture(scope="module")
def official(fixtures_dir):
    return E.load_vitra_npy(fixtures_dir / NPY)


def test_restricted_loader_matches_plain_numpy_load(official, fixtures_dir):
    plain = np.load(fixtures_dir / NPY, allow_pickle=True).item()
    assert official["anno_type"] == "right" and official["text"] == plain["text"]
    np.testing.assert_array_equal(official["right"]["hand_pose"], plain["right"]["hand_pose"])
    np.testing.assert_array_equal(official["extrinsics"], plain["extrinsics"])


def test_restricted_loader_refuses_other_globals(tmp_path):
    class Sneaky:
        def __reduce__(self):
            return (print, ("hello",))

    path = tmp_path / "bad.npy"
    np.save(path, np.array({"x": Sneaky()}, dtype=object), allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        E.load_vitra_npy(path)
    np.save(tmp_path / "floats.npy", np.zeros(3))
    with pytest.raises(E.EpisodeError, match="bad_annotation"):
        E.load_vitra_npy(tmp_path / "floats.npy")


def test_from_vitra_fields(official):
    ep = E.from_vitra(official, video="v.mp4", source="Ego4D")
    assert len(ep) == 25 and ep.main_hand == "right" and ep.camera_motion == "moving"
    assert E.camera_motion_of(np.repeat(np.eye(4)[None], 5, 0)) == "static"
    assert ep.hands["right"].kept.sum() == 25 and ep.hands["left"].kept.sum() == 0
    np.testing.assert_array_equal(ep.hands["right"].wrist, official["right"]["transl_worldspace"])
    assert ep.text["right"] == [("Pick up the spray bottle.", (0, 25))]
    assert ep.rephrasings["right"][0][1] == (0, 25) and ep.rephrasings["right"][0][0][1] == "Grasp the spray bottle"
    E.validate(ep)


def test_write_read_round_trip(official, tmp_path):
    ep = E.from_vitra(official, video="clip.mp4", source="Ego4D")
    ep.camera_motion, ep.labeler_versions = "moving", {"hands": "hawor-1"}
    E.write_episode(tmp_path / "ep0", ep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep0.json", "ep0.npz"]  # no temp files left
    back = E.read_episode(tmp_path / "ep0")
    assert back.video == str(tmp_path / "clip.mp4") and back.camera_motion == "moving"
    assert back.text == ep.text and back.labeler_versions == {"hands": "hawor-1"}
    assert back.rephrasings == ep.rephrasings and len(back.rephrasings["left"][0][0]) == 5
    for h in ("left", "right"):
        for f in ("wrist", "orient", "hand_pose", "joints", "kept", "beta"):
            np.testing.assert_array_equal(getattr(back.hands[h], f), getattr(ep.hands[h], f))
    meta = json.loads((tmp_path / "ep0.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ep0.json").write_text(json.dumps(meta))
    with pytest.raises(E.EpisodeError, match="format_version 99"):
        E.read_episode(tmp_path / "ep0")


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda ep: ep.hands["right"].wrist.__setitem__((3, 1), np.nan), "non_finite"),
        (lambda ep: ep.hands["right"].kept.__setitem__(slice(None), False), "no_valid_frames"),
        (lambda ep: setattr(ep, "extrinsics", ep.extrinsics[:-1]), "length_mismatch"),
        (lambda ep: setattr(ep, "main_hand", "both"), "bad_metadata"),
    ],
)
def test_validate_names_the_problem(official, tmp_path, corrupt, reason):
    ep = E.from_vitra(official, video="clip.mp4")
    corrupt(ep)
    with pytest.raises(E.EpisodeError) as err:
        E.write_episode(tmp_path / "bad", ep)
    assert err.value.reason == reason
    assert not list(tmp_path.iterdir())  # nothing written


def test_nan_in_untracked_frames_is_allowed(official):
    ep = E.from_vitra(official, video="clip.mp4")
    ep.hands["left"].wrist[:] = np.nan  # left hand is never tracked in this episode
    E.validate(ep)


def test_step_targets_ignore_garbage_in_untracked_frames(official):
    from vitra_jax.handspace import trajectory

    ep = E.from_vitra(official, video="clip.mp4")
    ep.hands["left"].orient[:] = np.nan
    ep.hands["right"].hand_pose[5] = np.nan
    ep.hands["right"].kept[5] = False
    tg = trajectory.step_targets(ep.hands, ep.extrinsics)
    assert np.isfinite(tg.state).all() and np.isfinite(tg.action).all()
    assert not tg.state[:, :51].any() and not tg.state[5].any()
    assert tg.action_mask[:, 1].tolist() == [True] * 4 + [False, False] + [True] * 18 + [False]


def _reflect(r):
    return r @ np.diag([1.0, 1.0, -1.0])


@pytest.mark.parametrize(
    "corrupt, reason, message",
    [
        (lambda ep: ep.hands["right"].orient.__setitem__(4, 1.1 * ep.hands["right"].orient[4]),
         "not_rotation", r"right/orient is not a rotation \(max \|RᵀR − I\| = 0.21"),
        (lambda ep: ep.hands["right"].orient.__setitem__(4, _reflect(ep.hands["right"].orient[4])),
         "not_rotation", r"right/orient is not a rotation .*max \|det − 1\| = 2"),
        (lambda ep: ep.hands["right"].hand_pose.__setitem__((9, 3), np.diag([1.0, 1.0, 2.0])),
         "not_rotation", "right/hand_pose is not a rotation"),
        (lambda ep: ep.extrinsics.__setitem__((0, slice(0, 3), slice(0, 3)), _reflect(ep.extrinsics[0, :3, :3])),
         "not_rotation", "extrinsics rotation is not a rotation"),
        (lambda ep: ep.extrinsics.__setitem__((2, 3, 0), 0.5), "not_rotation", r"bottom row is not \[0, 0, 0, 1\]"),
        (lambda ep: setattr(ep, "intrinsics", ep.intrinsics[:2]), "bad_shape", r"intrinsics must be \(3, 3\)"),
        (lambda ep: setattr(ep.hands["right"], "beta", np.zeros(9)), "bad_shape", r"right/beta must be \(10,\)"),
        (lambda ep: ep.frame_index.__setitem__(slice(5, 7), [6, 5]), "bad_frame_index",
         "not strictly increasing: step 6 is frame 5 after 6"),
        (lambda ep: ep.frame_index.__setitem__(3, 2), "bad_frame_index", "step 3 is frame 2 after 2"),
        (lambda ep: setattr(ep, "frame_index", ep.frame_index.astype(float)), "bad_frame_index", "integers"),
        (lambda ep: setattr(ep, "frame_index", ep.frame_index - 1), "bad_frame_index", r"starts at -1"),
    ],
)
def test_validate_checks_rotations_shapes_and_frame_order(official, corrupt, reason, message):
    ep = E.from_vitra(official, video="clip.mp4")
    E.validate(ep)  # the real episode passes
    corrupt(ep)
    with pytest.raises(E.EpisodeError, match=message) as err:
        E.validate(ep)
    assert err.value.reason == reason and str(err.value).startswith(reason + ": ")


def test_untracked_frames_need_not_hold_rotations(official):
    ep = E.from_vitra(official, video="clip.mp4")
    ep.hands["left"].orient[:] *= 3.0  # left is never tracked here
    ep.hands["right"].kept[4] = False
    ep.hands["right"].hand_pose[4] = 0.0
    E.validate(ep)


def test_read_episode_names_unreadable_files(official, tmp_path):
    E.write_episode(tmp_path / "ep", E.from_vitra(official, video="clip.mp4"))
    meta = json.loads((tmp_path / "ep.json").read_text())
    del meta["main_hand"]
    (tmp_path / "ep.json").write_text(json.dumps(meta))
    with pytest.raises(E.EpisodeError, match="bad_metadata: .*missing or malformed field: KeyError: 'main_hand'"):
        E.read_episode(tmp_path / "ep")
    (tmp_path / "ep.npz").write_bytes((tmp_path / "ep.npz").read_bytes()[:3000])  # truncated archive
    with pytest.raises(E.EpisodeError, match=r"unreadable_input: .*ep.npz: BadZipFile"):
        E.read_episode(tmp_path / "ep")
