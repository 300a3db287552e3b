"""Chunk samples re-anchored at frame t agree with what the builder stored for that frame; episodes with
ragged caption fields stack; images can come from elsewhere; caption windows without the interval field."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.data.two_hand_episode import decoded_example, raw_episode, rlds_steps
from tfds_builders.hand_vla.hand_vla_dataset_builder import Builder
from vitra_jax.data import chunks
from vitra_jax.handspace import layout, trajectory


@pytest.fixture(scope="module")
def demo_episodes(tmp_path_factory):
    builder = Builder(config="demo", data_dir=str(tmp_path_factory.mktemp("demo")))
    builder.download_and_prepare()
    return list(tfds.as_numpy(builder.as_dataset(split="train").take(4)))


def test_chunk_step_zero_matches_stored_step(demo_episodes):
    for ep in demo_episodes:
        steps = chunks.stack_steps(ep["steps"])
        samples = list(chunks.episode_samples(ep))
        assert len(samples) == len(steps["is_first"])
        for t in (0, 5, len(samples) - 2):
            s = samples[t]
            # State and the first action live in the camera of t, where the builder stored them too.
            np.testing.assert_allclose(s["state"], steps["observation"]["state"][t], atol=1e-5)
            np.testing.assert_allclose(s["actions"][0], steps["action"][t], atol=1e-5)
            np.testing.assert_array_equal(s["state_mask"], layout.expand_hand_mask(steps["observation"]["state_mask"][t]))


def test_chunk_reproduces_the_future_in_the_anchor_camera(demo_episodes):
    ep = next(e for e in demo_episodes if e["episode_metadata"]["camera_motion"] == b"moving")
    steps = chunks.stack_steps(ep["steps"])
    t = 2
    s = chunks.frame_sample(steps, t)
    path = trajectory.integrate_actions(s["state"], s["actions"])
    w2c = steps["camera"]["extrinsics"][t]
    for hand in layout.HANDS:
        world = steps["hands"][hand]["wrist"][t : t + layout.CHUNK_LEN + 1]
        cam_t = world @ w2c[:3, :3].T + w2c[:3, 3]
        np.testing.assert_allclose(path[: len(cam_t), layout.hand_part(hand, layout.TRANS)], cam_t, atol=1e-5)
    # The camera pans, so the same future expressed in each frame's own camera differs.
    assert not np.allclose(s["actions"][5], steps["action"][t + 5], atol=1e-4)


def test_tail_of_an_episode_is_masked(demo_episodes):
    samples = list(chunks.episode_samples(demo_episodes[0]))
    last = samples[-1]
    assert last["action_mask"].sum() == 0 and np.all(last["actions"] == 0)
    n = len(samples)
    t = n - 4  # three real steps remain, the rest of the chunk runs past the end
    assert samples[t]["action_mask"][:, 0].tolist() == [1.0] * 3 + [0.0] * (layout.CHUNK_LEN - 3)
    assert samples[t]["fov"] == pytest.approx([2 * np.arctan(64 / 80.0)] * 2, rel=1e-6)


def test_samples_follow_the_episode_main_hand_and_its_stored_instruction(demo_episodes):
    for ep in demo_episodes:
        steps = chunks.stack_steps(ep["steps"])
        main = ep["episode_metadata"]["main_hand"].decode()
        for t, s in enumerate(chunks.episode_samples(ep)):
            assert s["main_hand"] == main
            assert s["instruction"] == steps["language_instruction"][t].decode()  # rng=None: the captions
            kept = steps["hands"][main]["kept"][t:]
            w2c = steps["camera"]["extrinsics"][t]
            palms = steps["hands"][main]["joints"][t:][kept][:, [0, 2, 5, 9, 13, 17]].mean(1)
            np.testing.assert_allclose(s["palm_path"], palms @ w2c[:3, :3].T + w2c[:3, 3], atol=1e-5)


TEXT = {"right": [("Open the jar.", (0, 20))], "left": [("Hold the jar", (4, 9)), ("Wipe the table", (9, 13))]}
ALTS = {"right": [(["Unscrew the jar", "Open it"], (0, 20))],
        "left": [(["Grip the jar"], (4, 9)), (["Clean the table", "Wipe it", "Polish the table"], (9, 13))]}


def test_episode_with_ragged_rephrasings_stacks_on_both_decode_paths():
    raw = raw_episode(20, "right", {"left": [6]}, TEXT, ALTS)
    via_tf = rlds_steps(raw)
    via_np = chunks.stack_steps(decoded_example(raw, numpy_path=True)["steps"])  # tfds.data_source path
    for steps in (via_tf, via_np):
        alts = steps["language_rephrasings_left"]
        assert alts.dtype == object and len(alts) == 20
        assert [len(a) for a in alts] == [0] * 4 + [1] * 5 + [3] * 4 + [0] * 7
        assert [x.decode() for x in alts[10]] == ["Clean the table", "Wipe it", "Polish the table"]
        assert steps["language_interval_left"][10].tolist() == [9, 13]
    a = chunks.frame_sample(via_tf, 10, main_hand="right", rng=np.random.default_rng(5))
    b = chunks.frame_sample(via_np, 10, main_hand="right", rng=np.random.default_rng(5))
    assert a["instruction"] == b["instruction"]
    np.testing.assert_array_equal(a["actions"], b["actions"])
    # Window (9, 13) at t = 10: steps 10->11, 11->12 only.
    assert a["action_mask"][:, 0].tolist() == [1.0, 1.0] + [0.0] * 14


def test_image_from_elsewhere_and_bad_input():
    raw = raw_episode(20, "right", {}, TEXT, ALTS)
    steps = rlds_steps(raw)
    without_images = {**steps, "observation": {k: v for k, v in steps["observation"].items() if k != "image"}}
    frame = np.full((48, 64, 3), 7, np.uint8)
    s = chunks.frame_sample(without_images, 3, image=frame)
    assert s["image"] is frame
    # The stored 32x24 view (f = 40 px) at twice the size: f = 80 px, same field of view.
    np.testing.assert_allclose(s["intrinsics"], [[80, 0, 32], [0, 80, 24], [0, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(s["fov"], 2 * np.arctan([32 / 80, 24 / 80]), rtol=1e-6)
    with pytest.raises(ValueError, match="pass the decoded frame as image="):
        chunks.frame_sample(without_images, 3)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        chunks.frame_sample(without_images, 3, image=frame.astype(np.float32))
    with pytest.raises(ValueError, match="aspect of the stored view 32x24"):
        chunks.frame_sample(without_images, 3, image=frame.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="main_hand"):
        chunks.frame_sample(steps, 3, main_hand="both")


def test_intervals_without_the_interval_field_are_runs_of_the_same_caption():
    raw = raw_episode(20, "right", {"left": [6]}, TEXT, ALTS)
    steps = rlds_steps(raw)
    legacy = {k: v for k, v in steps.items() if not k.startswith("language_interval_")}
    for t in range(20):
        assert chunks.caption_window(legacy, "left", t) == chunks.caption_window(steps, "left", t)
        np.testing.assert_array_equal(chunks.frame_sample(legacy, t)["action_mask"],
                                      chunks.frame_sample(steps, t)["action_mask"])
    assert chunks.caption_window(steps, "left", 2) is None and chunks.caption_window(steps, "left", 9) == (9, 13)
