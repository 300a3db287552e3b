"""convert: a conversion killed mid-shard resumes to the same files as an uninterrupted one; the CLI; the
hand_vla demo (ArrayRecord) converts to frames equal to TFDS's episodes; worker processes write the same
files; the fingerprint follows content; ragged/binary/PNG fields survive; bad input fails clearly."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vitra_jax.data import chunks, convert, frames

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bridge_src(fixtures_dir):
    return fixtures_dir / "oxe" / "bridge_dataset" / "1.0.0"


@pytest.fixture(scope="module")
def whole(bridge_src, tmp_path_factory):
    """An uninterrupted single-process conversion, 3 shards per split."""
    return convert.convert(bridge_src, tmp_path_factory.mktemp("whole"), episodes_per_shard=10, progress=False)


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_conversion_resumes_to_identical_files(bridge_src, whole, tmp_path, monkeypatch):
    real = frames.write_shard
    calls = []

    def dies_in_shard_1(split_dir, index, count, keys, episodes):
        calls.append((split_dir.name, index))
        if index == 1:
            def some_then_crash(source):
                for n, item in enumerate(source):
                    if n == 2:
                        raise RuntimeError("simulated kill")
                    yield item
            episodes = some_then_crash(episodes)
        return real(split_dir, index, count, keys, episodes)

    monkeypatch.setattr(frames, "write_shard", dies_in_shard_1)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated kill"):
        convert.convert(bridge_src, out, episodes_per_shard=10, progress=False)
    # Half-written: shard 0 done, shard 1 only under temporary names, no store.json, so it never opens.
    train = out / "train"
    assert frames.marker_path(train, 0, 3).is_file() and not frames.marker_path(train, 1, 3).exists()
    assert not frames.episodes_path(train, 1, 3).exists() and list(train.rglob("*.tmp-*"))
    with pytest.raises(frames.StoreError, match="did not finish"):
        frames.open_store(out, "train")

    calls.clear()
    monkeypatch.setattr(frames, "write_shard", lambda *a: calls.append((a[0].name, a[1])) or real(*a))
    convert.convert(bridge_src, out, episodes_per_shard=10, progress=False)
    assert calls == [("train", 1), ("train", 2), ("val", 0), ("val", 1), ("val", 2)]  # shard 0 kept
    assert _files(out) == _files(whole)
    assert not list(out.rglob("*.tmp-*"))
    store = frames.open_store(out, "train")
    assert store.num_frames == 250 and len(store.info["fingerprint"]) == 64


@pytest.fixture(scope="module")
def demo_tfds(tmp_path_factory):
    """The procedural hand_vla `demo` build, ArrayRecord (6 train + 2 val episodes of 24 steps)."""
    from tfds_builders.hand_vla.hand_vla_dataset_builder import Builder

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = Builder(config="demo", data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return data_dir, builder.data_dir


def test_worker_processes_write_the_same_files(demo_tfds, tmp_path):
    _, src = demo_tfds
    serial = convert.convert(src, tmp_path / "serial", episodes_per_shard=2, progress=False)
    parallel = convert.convert(src, tmp_path / "parallel", episodes_per_shard=2, progress=False, workers=2)
    assert len(list((parallel / "train" / "shards").iterdir())) == 3
    assert _files(parallel) == _files(serial)


def test_fingerprint_follows_content_not_location(bridge_src, whole, tmp_path):
    import shutil

    moved = shutil.copytree(bridge_src, tmp_path / "elsewhere" / "bridge_dataset" / "1.0.0")
    a = convert.convert(moved, tmp_path / "a", splits="val", episodes_per_shard=10, progress=False)
    b = convert.convert(moved, tmp_path / "b", splits="val", image_key="image_0", progress=False)
    fp = {name: frames.open_store(root, "val").info["fingerprint"] for name, root in
          (("whole", whole), ("a", a), ("b", b))}
    assert fp["a"] == fp["whole"] != fp["b"]
    assert frames.open_store(whole, "train").info["fingerprint"] != fp["whole"]  # same episodes, other order


def test_finished_store_is_reused_and_other_settings_refused(bridge_src, tmp_path, monkeypatch):
    out = convert.convert(bridge_src, tmp_path, splits="val", progress=False)
    monkeypatch.setattr(frames, "write_shard", lambda *a: pytest.fail("a finished split was rewritten"))
    convert.convert(bridge_src, tmp_path, splits=["val"], progress=False)
    with pytest.raises(convert.ConvertError, match="with other image_keys; remove it"):
        convert.convert(bridge_src, out, splits="val", image_key="image_1", progress=False)


def test_a_refused_conversion_writes_nothing(bridge_src, demo_tfds, tmp_path):
    out = convert.convert(bridge_src, tmp_path / "store", splits="val", progress=False)
    before = _files(out)
    with pytest.raises(convert.ConvertError, match=f"holds a conversion of {bridge_src} with other"):
        convert.convert(demo_tfds[1], out, splits="val", progress=False)
    assert _files(out) == before
    # a frame store is not a TFDS folder, although it carries a copy of its dataset_info.json
    with pytest.raises(convert.ConvertError, match="source files missing"):
        convert.convert(out, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_one_split_one_camera(bridge_src, tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-m", "vitra_jax.data.convert", f"--src={bridge_src}", f"--out={out}",
                          "--split=val", "--image_key=image_2"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "val: 25 episodes, 250 frames" in res.stdout
    assert "bridge_dataset/val" in res.stderr and "25/25" in res.stderr  # the tqdm bar
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json", "features.json", "val"]
    for name in ("dataset_info.json", "features.json"):
        assert (out / name).read_bytes() == (bridge_src / name).read_bytes()
    store = frames.open_store(out, "val")
    assert store.image_keys == ("observation/image_2",)
    b = tfds.builder_from_directory(str(bridge_src))
    skip = {"steps": {"observation": {"image_2": tfds.decode.SkipDecoding()}}}
    ep = next(iter(tfds.as_numpy(b.as_dataset(split="val", shuffle_files=False, decoders=skip))))
    for t, step in enumerate(ep["steps"]):
        assert store.image_bytes(0, t) == step["observation"]["image_2"]
    with pytest.raises(KeyError, match="observation/image_2"):
        store.image_bytes(0, 0, "image_0")
    # a refused conversion is one line, not a traceback
    res = subprocess.run([sys.executable, "-m", "vitra_jax.data.convert", f"--src={bridge_src}", f"--out={out}",
                          "--split=val", "--image_key=image_0"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"vitra_jax.data.convert: {out / 'val'} holds a conversion")


def test_demo_hand_vla_array_record(demo_tfds, tmp_path):
    data_dir, src = demo_tfds
    out = convert.convert(src, tmp_path / "frames", episodes_per_shard=4, progress=False)
    raw = {"steps": {"observation": {"image": tfds.decode.SkipDecoding()}}}
    sources = tfds.data_source("hand_vla/demo", data_dir=str(data_dir), decoders=raw)
    for split, n in (("train", 6), ("val", 2)):
        store = frames.open_store(out, split)
        assert store.num_episodes == len(sources[split]) == n and store.image_keys == ("observation/image",)
        # ArrayRecord keeps the source order, so episode i of the store is record i of the split.
        for i in (0, n - 1):
            ep = sources[split][i]
            steps = [ep["steps"][t] for t in range(len(ep["steps"]))]
            got = store.episode(i)
            assert got["episode_metadata"]["episode_id"] == ep["episode_metadata"]["episode_id"]
            main_hand = ep["episode_metadata"]["main_hand"]
            assert got["episode_metadata"]["main_hand"] == (main_hand if isinstance(main_hand, bytes)
                                                            else main_hand.encode())
            for t in (0, 5, len(steps) - 1):
                assert store.image_bytes(i, t) == steps[t]["observation"]["image"]
                np.testing.assert_array_equal(got["action"][t], steps[t]["action"])
                np.testing.assert_array_equal(got["hands"]["right"]["wrist"][t], steps[t]["hands"]["right"]["wrist"])
                np.testing.assert_array_equal(got["camera"]["extrinsics"][t], steps[t]["camera"]["extrinsics"])
            # The training sample from the store equals the one from the TFDS episode with the same image.
            ref_steps = chunks.stack_steps([{k: v for k, v in s.items() if k != "observation"} for s in steps])
            image = store.image(i, 2)
            a = chunks.frame_sample(got, 2, image=image)
            b = chunks.frame_sample(ref_steps, 2, image=image)
            for k in ("instruction", "state", "state_mask", "actions", "action_mask", "fov", "palm_path"):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bad_input_fails_clearly(bridge_src, tmp_path):
    with pytest.raises(convert.ConvertError, match="no dataset_info.json"):
        convert.convert(tmp_path, tmp_path / "o")
    with pytest.raises(convert.ConvertError, match=r"available: \['train', 'val'\]"):
        convert.convert(bridge_src, tmp_path / "o", splits="test")
    with pytest.raises(convert.ConvertError, match="observation/image_3"):
        convert.convert(bridge_src, tmp_path / "o", image_key="wrist")


def test_ragged_binary_and_png_fields_survive():
    """Hand-made episode through TFDS's own encoder: ragged text lists, a binary string ending in NUL, a PNG
    camera, nested metadata; what the store keeps equals what went in."""
    F = tfds.features
    feat = F.FeaturesDict({
        "steps": F.Dataset({
            "observation": F.FeaturesDict({"cam": F.Image(shape=(4, 4, 3), encoding_format="png"),
                                           "pos": F.Tensor(shape=(2,), dtype=np.float32)}),
            "alts": F.Sequence(F.Text()),
            "blob": F.Tensor(shape=(), dtype=np.str_),
            "is_first": F.Scalar(dtype=np.bool_)}),
        "episode_metadata": F.FeaturesDict({"id": F.Scalar(dtype=np.int64), "name": F.Text()})})
    imgs = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 3), dtype=np.uint8)
    blobs = [b"ok", b"z\x00", b"\x00"]
    ep = {"steps": [{"observation": {"cam": imgs[t], "pos": np.array([t, -t], np.float32)},
                     "alts": ["again"] * t, "blob": blobs[t], "is_first": t == 0} for t in range(3)],
          "episode_metadata": {"id": 7, "name": "ep7"}}
    decoded = feat.deserialize_example_np(feat.serialize_example(ep),
                                          decoders={"steps": {"observation": {"cam": tfds.decode.SkipDecoding()}}})
    tree, images = convert.split_episode(decoded, feat, ["observation/cam"], ["observation/cam"])
    out = frames.unpack_episode(frames.pack_episode(tree))
    assert [a.tolist() for a in out["alts"]] == [[], [b"again"], [b"again", b"again"]]
    assert out["blob"].tolist() == blobs
    np.testing.assert_array_equal(out["observation"]["pos"], [[0, 0], [1, -1], [2, -2]])
    assert out["is_first"].tolist() == [True, False, False] and "cam" not in out["observation"]
    assert out["episode_metadata"]["id"] == 7 and out["episode_metadata"]["name"] == b"ep7"
    for t, data in enumerate(images["observation/cam"]):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), imgs[t])
