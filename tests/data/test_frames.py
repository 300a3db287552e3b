"""Frame store on the real bridge fixture: every frame and step array equals what TFDS's own reader yields,
`locate` equals a plain loop, no episode record carries JPEGs, records round-trip without pickle."""

import io
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vitra_jax.data import convert, frames

IMAGE_KEYS = ["image_0", "image_1", "image_2", "image_3"]


@pytest.fixture(scope="module")
def bridge_src(fixtures_dir):
    return fixtures_dir / "oxe" / "bridge_dataset" / "1.0.0"


@pytest.fixture(scope="module")
def store_root(bridge_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("frames")
    convert.convert(bridge_src, out, episodes_per_shard=10, progress=False)  # 3 shards per split
    return out


def _tfds_episodes(src, split):
    """The independent path: TFDS's tf.data reader, images left as stored bytes."""
    b = tfds.builder_from_directory(str(src))
    skip = {"steps": {"observation": {k: tfds.decode.SkipDecoding() for k in IMAGE_KEYS}}}
    return list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False, decoders=skip)))


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_frame_and_step_equals_tfds(store_root, bridge_src, split):
    store = frames.open_store(store_root, split)
    episodes = _tfds_episodes(bridge_src, split)
    assert store.num_episodes == len(episodes) == 25 and store.num_frames == 250
    assert store.episode_lengths.dtype == np.int32 and store.episode_offsets.dtype == np.int64
    assert store.image_keys == tuple(f"observation/{k}" for k in IMAGE_KEYS)  # bridge's primary first
    for i, ep in enumerate(episodes):
        steps = list(ep["steps"])
        assert store.episode_lengths[i] == len(steps)
        got = store.episode(i)
        for t, step in enumerate(steps):
            for k in IMAGE_KEYS:
                assert store.image_bytes(i, t, k) == step["observation"][k]
            np.testing.assert_array_equal(got["action"][t], step["action"])
            np.testing.assert_array_equal(got["observation"]["state"][t], step["observation"]["state"])
            np.testing.assert_array_equal(got["language_embedding"][t], step["language_embedding"])
            assert got["language_instruction"][t] == step["language_instruction"]
            for k in ("is_first", "is_last", "is_terminal", "reward", "discount"):
                assert got[k][t] == step[k] and got[k].dtype == np.asarray(step[k]).dtype
        assert set(got["observation"]) == {"state"}  # images live only in the image files
        for k, v in ep["episode_metadata"].items():
            assert got["episode_metadata"][k] == v, k
        assert got["episode_metadata"]["episode_id"].dtype == np.int32


def test_image_decodes_to_the_same_pixels_as_pil(store_root):
    store = frames.open_store(store_root, "train")
    for i, t in [(0, 0), (7, 4), (24, 9)]:
        ref = np.asarray(Image.open(io.BytesIO(store.image_bytes(i, t))).convert("RGB"))
        img = store.image(i, t)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, ref)
        np.testing.assert_array_equal(store.image(i, t, "image_1"),
                                      np.asarray(Image.open(io.BytesIO(store.image_bytes(i, t, "image_1")))))


def test_locate_equals_a_plain_loop(store_root):
    store = frames.open_store(store_root, "val")
    lengths = [int(n) for n in store.episode_lengths]
    ids = np.random.default_rng(0).integers(0, store.num_frames, size=200)
    ids[:3] = [0, store.num_frames - 1, 10]
    expected = []
    for f in ids:
        e, rest = 0, int(f)
        while rest >= lengths[e]:
            rest -= lengths[e]
            e += 1
        expected.append((e, rest))
    ep, t = store.locate(ids)
    assert list(zip(ep.tolist(), t.tolist())) == expected
    with pytest.raises(IndexError, match="frame ids must lie in"):
        store.locate(np.array([store.num_frames]))


def test_episode_records_hold_no_jpeg_and_reads_are_counted(store_root):
    from array_record.python.array_record_module import ArrayRecordReader

    store = frames.open_store(store_root, "train")
    for shard in range(3):
        reader = ArrayRecordReader(str(frames.episodes_path(store.path, shard, 3)))
        for record in reader.read_all():
            assert b"\xff\xd8\xff" not in record  # no JPEG start-of-image marker anywhere
        reader.close()
    before = dict(store.read_bytes)
    data = store.image_bytes(12, 3)
    store.episode(12)
    assert store.read_bytes["images"] - before["images"] == len(data)
    episode_images = sum(len(store.image_bytes(12, t, k)) for t in range(10) for k in IMAGE_KEYS)
    assert 0 < store.read_bytes["episodes"] - before["episodes"] < episode_images


def test_pickled_store_reads_the_same(store_root):
    store = frames.open_store(store_root, "train")
    store.image_bytes(3, 3)  # opens a file handle, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    assert clone.image_bytes(20, 5, "image_2") == store.image_bytes(20, 5, "image_2")
    np.testing.assert_array_equal(clone.episode(20)["action"], store.episode(20)["action"])


def test_record_roundtrip_without_pickle():
    tree = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": {"c": np.array(b"text"), "d": np.float32(2.5)},
            "e": np.array([True, False]), "s": np.array([b"x", b"longer"]),
            "ragged": [np.array([b"one"]), np.zeros(0, "S1"), np.array([b"two", b"three"])],
            "binary": np.array([b"ab\0", b"\0\0"], dtype=object).reshape(2, 1)}
    out = frames.unpack_episode(frames.pack_episode(tree))
    np.testing.assert_array_equal(out["a"], tree["a"])
    assert out["a"].dtype == np.int64
    assert out["b"]["c"] == b"text" and out["b"]["c"].shape == ()
    assert out["b"]["d"] == np.float32(2.5) and out["b"]["d"].dtype == np.float32
    assert out["e"].dtype == bool and out["e"].tolist() == [True, False]
    assert out["s"].tolist() == [b"x", b"longer"]
    assert out["ragged"].dtype == object and [r.tolist() for r in out["ragged"]] == [[b"one"], [], [b"two", b"three"]]
    assert out["binary"].shape == (2, 1) and out["binary"].ravel().tolist() == [b"ab\0", b"\0\0"]  # NULs kept
    with pytest.raises(TypeError, match="object array"):
        frames.pack_episode({"x": np.array([object()], dtype=object)})


def test_bad_access_errors_name_the_problem(store_root, tmp_path):
    store = frames.open_store(store_root, "train")
    with pytest.raises(KeyError, match="observation/image_0"):
        store.image_bytes(0, 0, "wrist")
    with pytest.raises(IndexError, match="episode 25 out of range"):
        store.episode(25)
    with pytest.raises(IndexError, match="step 10 out of range"):
        store.image_bytes(0, 10)
    with pytest.raises(frames.StoreError, match=r"converted splits: \['train', 'val'\]"):
        frames.open_store(store_root, "test")
    (tmp_path / "train").mkdir()
    with pytest.raises(frames.StoreError, match="did not finish"):
        frames.open_store(tmp_path, "train")
