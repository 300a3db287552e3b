"""Chunk samples re-anchored at frame t agree with what the builder stored for that frame."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

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
    for i, hand in enumerate(layout.HANDS):
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
