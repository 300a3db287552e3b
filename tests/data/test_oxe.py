"""OXE registry: bridge's raw 7-d actions and states land unchanged in the right-wrist slots and the gripper
slot (dims written out here by hand), everything else 0 and masked; other layouts on hand-made steps."""

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from vitra_jax.data import convert, frames, oxe

# Right hand block is 51:102: wrist Δt 51:54, Δr 54:57, first finger angle 57 (the documented gripper slot).
BRIDGE_DIMS = [51, 52, 53, 54, 55, 56, 57]


@pytest.fixture(scope="module")
def bridge(fixtures_dir, tmp_path_factory):
    src = fixtures_dir / "oxe" / "bridge_dataset" / "1.0.0"
    out = convert.convert(src, tmp_path_factory.mktemp("oxe"), splits="train", image_key="image_0",
                          progress=False)
    b = tfds.builder_from_directory(str(src))
    eps = list(tfds.as_numpy(b.as_dataset(split="train", shuffle_files=False)))
    return frames.open_store(out, "train"), eps


def test_bridge_actions_and_states_in_right_wrist_and_gripper_slot(bridge):
    store, eps = bridge
    entry = oxe.get("bridge_dataset")
    other = [d for d in range(102) if d not in BRIDGE_DIMS]
    for i in (0, 11, 24):
        raw = list(eps[i]["steps"])  # the TFDS episode, read independently of the store
        steps, n = store.episode(i), len(raw)
        for t in range(n):
            s = oxe.frame_sample(entry, steps, t, image=store.image(i, t), metadata=steps["episode_metadata"])
            assert s["actions"].shape == (16, 102) and s["action_mask"].shape == (16, 102)
            for k in range(16):
                if t + k < n:
                    np.testing.assert_array_equal(s["actions"][k, BRIDGE_DIMS], raw[t + k]["action"])
                    assert s["action_mask"][k, BRIDGE_DIMS].tolist() == [1.0] * 7
                else:  # past the episode end: zero and masked
                    assert not s["actions"][k].any() and not s["action_mask"][k].any()
            assert not s["actions"][:, other].any() and not s["action_mask"][:, other].any()
            np.testing.assert_array_equal(s["state"][BRIDGE_DIMS], raw[t]["observation"]["state"])
            assert np.flatnonzero(s["state_mask"]).tolist() == BRIDGE_DIMS
            assert not s["state"][other].any()
            text = raw[t]["language_instruction"].decode()
            assert s["instruction"] == f"Left hand: None. Right hand: {text}."
            assert (s["text_left"], s["text_right"], s["main_hand"]) == ("None.", f"{text}.", "right")
            np.testing.assert_array_equal(s["image"], store.image(i, t))
            assert s["palm_path"].shape == (0, 3)
    # Assumed 60° horizontal FoV on a 64x64 image: f = 32 / tan(30°), centred principal point.
    f = 32 / math.tan(math.radians(30))
    np.testing.assert_allclose(s["intrinsics"], [[f, 0, 32], [0, f, 32], [0, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(s["fov"], [math.pi / 3, math.pi / 3], rtol=1e-6)


def test_episode_arrays_match_raw_bridge_steps(bridge):
    store, eps = bridge
    arrays = oxe.episode_arrays(oxe.get("bridge_dataset"), store.episode(5))
    raw = list(eps[5]["steps"])
    np.testing.assert_array_equal(arrays["action"][:, BRIDGE_DIMS], np.stack([r["action"] for r in raw]))
    np.testing.assert_array_equal(arrays["state"][:, BRIDGE_DIMS],
                                  np.stack([r["observation"]["state"] for r in raw]))
    assert (arrays["action_mask"].sum(1) == 7).all() and (arrays["state_mask"][:, BRIDGE_DIMS] == 1).all()
    assert arrays["action"].shape == (10, 102) and arrays["action_mask"].dtype == np.float32


def test_sample_has_the_hand_vla_keys(bridge):
    store, _ = bridge
    hand_keys = {"image", "instruction", "text_left", "text_right", "main_hand", "fov", "state", "state_mask",
                 "actions", "action_mask", "intrinsics", "palm_path"}
    steps = store.episode(0)
    assert set(oxe.frame_sample(oxe.get("bridge_dataset"), steps, 0, image=store.image(0, 0))) == hand_keys


def _steps(n, **fields):
    return {"is_first": np.arange(n) == 0, **fields}


def test_dict_actions_axis_angle_and_code_point_instructions():
    n = 5
    rng = np.random.default_rng(0)
    wv, rd, grip = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) * 0.1, rng.normal(size=(n, 1))
    texts = np.array([b"pick the can"] * n)
    steps = _steps(n, action={"world_vector": wv, "rotation_delta": rd, "gripper_closedness_action": grip,
                              "terminate_episode": np.zeros((n, 3))},
                   observation={"natural_language_instruction": texts,
                                "base_pose_tool_reached": rng.normal(size=(n, 7)),
                                "gripper_closed": rng.normal(size=(n, 1))})
    s = oxe.frame_sample(oxe.get("fractal20220817_data"), steps, 1, image=np.zeros((4, 6, 3), np.uint8))
    np.testing.assert_allclose(s["actions"][:4, 51:54], wv[1:], rtol=1e-6)
    np.testing.assert_allclose(s["actions"][:4, 54:57], rd[1:], rtol=1e-6)
    np.testing.assert_allclose(s["actions"][:4, 57], grip[1:, 0], rtol=1e-6)
    # State: position only (the orientation is a quaternion), plus the gripper state.
    assert np.flatnonzero(s["state_mask"]).tolist() == [51, 52, 53, 57]
    np.testing.assert_allclose(s["state"][51:54], steps["observation"]["base_pose_tool_reached"][1, :3], rtol=1e-6)
    assert s["instruction"] == "Left hand: None. Right hand: pick the can."
    # Non-square image: fov_y follows from the same focal length.
    f = 3 / math.tan(math.radians(30))
    np.testing.assert_allclose(s["fov"], [math.pi / 3, 2 * math.atan(2 / f)], rtol=1e-6)

    # bc_z: axis-angle residuals become Euler xyz of the same rotation.
    aa = rng.normal(size=(n, 3)) * 0.3
    steps = _steps(n, action={"future/xyz_residual": rng.normal(size=(n, 30)),
                              "future/axis_angle_residual": np.concatenate([aa, aa, aa], 1),
                              "future/target_close": rng.normal(size=(n, 10))},
                   observation={"natural_language_instruction": texts, "present/xyz": rng.normal(size=(n, 3)),
                                "present/axis_angle": aa, "present/sensed_close": rng.normal(size=(n, 1))})
    s = oxe.frame_sample(oxe.get("bc_z"), steps, 0, image=np.zeros((4, 4, 3), np.uint8))
    np.testing.assert_allclose(s["actions"][:n, 54:57], Rotation.from_rotvec(aa).as_euler("xyz"), atol=1e-6)
    np.testing.assert_allclose(s["actions"][:n, 51:54], steps["action"]["future/xyz_residual"][:, :3], rtol=1e-6)
    np.testing.assert_allclose(s["state"][54:57], Rotation.from_rotvec(aa[0]).as_euler("xyz"), atol=1e-6)

    # language_table: 2-d planar action into x, y only; the instruction is 0-padded unicode code points.
    codes = np.zeros((n, 512), np.int32)
    codes[:, :10] = [ord(c) for c in "push it up"]
    steps = _steps(n, action=rng.normal(size=(n, 2)),
                   observation={"instruction": codes, "effector_translation": rng.normal(size=(n, 2))})
    s = oxe.frame_sample(oxe.get("language_table"), steps, 4, image=np.zeros((4, 4, 3), np.uint8))
    assert np.flatnonzero(s["action_mask"][0]).tolist() == [51, 52] and not s["action_mask"][1:].any()
    np.testing.assert_allclose(s["actions"][0, 51:53], steps["action"][4], rtol=1e-6)
    assert s["text_right"] == "push it up."

    # droid: the base-frame velocity command and gripper position from action_dict, state likewise.
    vel, gpos = rng.normal(size=(n, 6)), rng.uniform(size=(n, 1))
    steps = _steps(n, action=rng.normal(size=(n, 7)), action_dict={"cartesian_velocity": vel, "gripper_position": gpos},
                   language_instruction=texts,
                   observation={"cartesian_position": rng.normal(size=(n, 6)), "gripper_position": gpos})
    s = oxe.frame_sample(oxe.get("droid"), steps, 2, image=np.zeros((4, 4, 3), np.uint8))
    np.testing.assert_allclose(s["actions"][:3, 51:58], np.concatenate([vel, gpos], 1)[2:], rtol=1e-6)
    np.testing.assert_allclose(s["state"][51:57], steps["observation"]["cartesian_position"][2], rtol=1e-6)

    # jaco_play has no rotation in its action: those dims stay masked rather than zero-filled.
    assert np.flatnonzero(oxe.get("jaco_play").action_mask()).tolist() == [51, 52, 53, 57]


def test_registry_maps_only_into_the_right_hand_without_overlap():
    assert set(oxe.MAGIC_SOUP) <= set(oxe.REGISTRY) and set(oxe.MAGIC_SOUP_PLUS) <= set(oxe.REGISTRY)
    for name, entry in oxe.REGISTRY.items():
        assert entry.name == name
        for dims in (entry.action, entry.state):
            taken = [d for m in dims for d in range(m.dst, m.dst + m.n)]
            assert len(taken) == len(set(taken)), name
            assert all(51 <= d < 58 for d in taken), name  # right wrist Δt, Δr and the gripper slot only


def test_errors_name_the_problem(bridge):
    store, _ = bridge
    with pytest.raises(KeyError, match="known datasets: .*bridge_dataset.*fractal20220817_data"):
        oxe.get("bridge")
    entry, steps = oxe.get("bridge_dataset"), store.episode(0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        oxe.frame_sample(entry, steps, 0, image=np.zeros((4, 4), np.uint8))
    with pytest.raises(IndexError, match="step 10 out of range"):
        oxe.frame_sample(entry, steps, 10, image=store.image(0, 0))
    with pytest.raises(KeyError, match="action/world_vector not found"):
        oxe.frame_sample(oxe.get("fractal20220817_data"), steps, 0, image=store.image(0, 0))
    with pytest.raises(ValueError, match="registry reads 3 from index 6"):
        oxe.map_dims((oxe.Dims(("action",), 6, 3, 51),), steps, 10)
