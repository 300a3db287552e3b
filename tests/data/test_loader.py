"""The grain pipeline on the demo dataset: samples equal `chunks.frame_sample` after the documented resize,
normalization and tokenization (recomputed here from the RLDS build, Pillow and SentencePiece), the batch
contract of the policy, exact iterator restore with worker processes, and clear errors."""

import io
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm
from PIL import Image

from vitra_jax.data import augment, chunks, loader, mixture, oxe, statistics
from vitra_jax.data.config import component, data_config
from vitra_jax.models import policy as policy_lib

SIZE, TEXT_LEN, VOCAB = 48, 40, 512
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def pipeline(data_dir):
    # captions only (rephrase=False): samples must equal frame_sample(rng=None)
    return loader.make_pipeline(data_config(data_dir=str(data_dir), tokenizer_vocab=VOCAB, rephrase=False),
                                image_size=SIZE, max_text_len=TEXT_LEN)


@pytest.fixture(scope="module")
def rlds(data_dir, pipeline):
    """Train/val episodes read straight from the ArrayRecord TFDS build (not through the frame store)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(next((data_dir / "tfds" / "hand_vla" / "demo").iterdir())))
    out = {}
    for split in ("train", "val"):
        src = builder.as_data_source(split=split)
        out[split] = [(chunks.stack_steps(list(src[i]["steps"])), src[i]["episode_metadata"])
                      for i in range(len(src))]
    return out


def model_inputs(s, pipeline, sp, st=None):
    """A raw sample's model inputs from the definitions written out here: Pillow bicubic squash to [-1, 1],
    (x - mean) / (std + 1e-7) then mask with `st` (default: the pipeline's statistics), [BOS] + ids(text +
    newline) right-padded."""
    img = np.asarray(Image.fromarray(s["image"]).resize((SIZE, SIZE), Image.BICUBIC), np.float32) / 127.5 - 1
    st = pipeline.statistics if st is None else st
    ids = [sp.bos_id(), *sp.encode(s["instruction"] + "\n")][:TEXT_LEN]
    tokens = np.zeros(TEXT_LEN, np.int32)
    tokens[:len(ids)] = ids
    return {
        "images": img, "tokens": tokens, "input_mask": np.arange(TEXT_LEN) < len(ids), "fov": s["fov"],
        "state": (s["state"] - st.state_mean) / (st.state_std + 1e-7) * s["state_mask"],
        "state_mask": s["state_mask"],
        "actions": (s["actions"] - st.action_mean) / (st.action_std + 1e-7) * s["action_mask"],
        "action_mask": s["action_mask"],
    }


def expected_example(steps, meta, t, pipeline, sp):
    """The model inputs of frame t without augmentation (caption, not a rephrasing)."""
    return model_inputs(chunks.frame_sample(steps, t, main_hand=meta["main_hand"].decode()), pipeline, sp)


def locate(episodes, frame):
    lengths = [len(steps["is_first"]) for steps, _ in episodes]
    ends = np.cumsum(lengths)
    e = int(np.searchsorted(ends, frame, side="right"))
    return e, frame - (int(ends[e - 1]) if e else 0)


def assert_example(got, want, what):
    for k, v in want.items():
        if got[k].dtype.kind == "f":
            np.testing.assert_allclose(got[k], v, atol=2e-5, rtol=1e-5, err_msg=f"{what}: {k}")
        else:
            np.testing.assert_array_equal(got[k], v, err_msg=f"{what}: {k}")


def test_training_batches_equal_frame_samples_after_resize_normalize_tokenize(pipeline, rlds):
    sp = spm.SentencePieceProcessor(model_file=pipeline.tokenizer_path)
    seed = 4
    batch = next(pipeline.train_iterator(6, seed=seed))
    fake = policy_lib.fake_batch(policy_lib.policy_config("tiny"), 6)
    assert {k: v.dtype for k, v in batch.items()} == {k: v.dtype for k, v in fake.items()}
    shapes = {"images": (SIZE, SIZE, 3), "tokens": (TEXT_LEN,), "input_mask": (TEXT_LEN,)}
    for k, v in fake.items():
        assert batch[k].shape == (6, *shapes.get(k, v.shape[1:])), k
    # element k of the stream is frame `MixtureIndex[k]` of the train split
    index = mixture.MixtureIndex(pipeline.components(), seed=mixture.derive_seed(pipeline.cfg.shuffle_seed, seed))
    for k in range(6):
        frame = index[k]["frame"]
        e, t = locate(rlds["train"], frame)
        steps, meta = rlds["train"][e]
        want = expected_example(steps, meta, t, pipeline, sp)
        assert_example({key: v[k] for key, v in batch.items()}, want, f"element {k} (episode {e}, t {t})")
    assert pipeline.counters()["samples"] >= 6


def test_validation_batches_are_fixed_and_unaugmented(pipeline, rlds):
    sp = spm.SentencePieceProcessor(model_file=pipeline.tokenizer_path)
    a = pipeline.val_batches(4, 2)
    b = pipeline.val_batches(4, 2)
    assert len(a) == 2 and all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    index = mixture.MixtureIndex(pipeline.components("val"), seed=pipeline.cfg.shuffle_seed)
    for k in (0, 5):
        e, t = locate(rlds["val"], index[k]["frame"])
        want = expected_example(*rlds["val"][e], t, pipeline, sp)
        assert_example({key: v[k % 4] for key, v in a[k // 4].items()}, want, f"val element {k}")


def test_raw_samples_walk_the_val_split_in_order(pipeline, rlds):
    got = list(pipeline.samples("val", max_samples=30))
    flat = [(steps, meta, t) for steps, meta in rlds["val"] for t in range(len(steps["is_first"]))][:30]
    assert len(got) == len(flat)
    for s, (steps, meta, t) in zip(got[::7], flat[::7]):
        want = chunks.frame_sample(steps, t, main_hand=meta["main_hand"].decode())
        np.testing.assert_array_equal(s["image"], want["image"])
        np.testing.assert_array_equal(s["actions"], want["actions"])
        assert s["instruction"] == want["instruction"]
    # a few frames evenly spread over the split: the first, the last and three between, as numbered in the loop
    flat = [(e, t) for e, (steps, _) in enumerate(rlds["val"]) for t in range(len(steps["is_first"]))]
    picks = [0, (len(flat) - 1) / 4, (len(flat) - 1) / 2, 3 * (len(flat) - 1) / 4, len(flat) - 1]
    spread = [(s["episode"], s["t"]) for s in pipeline.samples("val", per_component=5)]
    assert spread == [flat[int(np.round(i))] for i in picks]


def test_augmented_samples_draw_everything_from_the_per_sample_generator(data_dir, pipeline, rlds):
    """With augmentation, element k is augment_sample(frame_sample(rng), rng) with rng seeded by
    (stream seed, epoch, k) alone: the text choice first, then the view, colour and state dropout."""
    sp = spm.SentencePieceProcessor(model_file=pipeline.tokenizer_path)
    pipe = loader.make_pipeline(data_config(data_dir=str(data_dir), augment=True), image_size=SIZE,
                                max_text_len=TEXT_LEN)
    seed = 2
    batch = next(pipe.train_iterator(5, seed=seed))
    stream = mixture.derive_seed(pipe.cfg.shuffle_seed, seed)
    index = mixture.MixtureIndex(pipe.components(), seed=stream)
    cfg = augment.AugmentConfig(height=SIZE, state_dropout=0.1)
    plain = next(pipeline.train_iterator(5, seed=seed))
    for k in range(5):
        r = index[k]
        e, t = locate(rlds["train"], r["frame"])
        steps, meta = rlds["train"][e]
        rng = np.random.default_rng([stream, r["epoch"], k])
        s = chunks.frame_sample(steps, t, main_hand=meta["main_hand"].decode(), rng=rng)
        s = augment.augment_sample(s, rng, cfg)
        assert_example({key: v[k] for key, v in batch.items()}, model_inputs(s, pipe, sp), f"augmented {k}")
    assert not np.allclose(batch["images"], plain["images"])  # augmentation did something


def test_iterator_restores_exactly_with_worker_processes(data_dir, pipeline):
    cfg = data_config(data_dir=str(data_dir), num_workers=2, augment=True)
    pipe = loader.make_pipeline(cfg, image_size=16, max_text_len=TEXT_LEN)
    it = pipe.train_iterator(2, seed=1)
    for _ in range(7):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(100)]
    resumed = pipe.train_iterator(2, seed=1)
    resumed.set_state(state)
    got = [next(resumed) for _ in range(100)]
    assert all(type(v) is np.ndarray for v in got[0].values())  # shared memory released, plain arrays
    for i, (x, y) in enumerate(zip(want, got)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"batch {i} key {k}")
    # the same batches as an in-process iterator: workers change nothing
    solo = loader.make_pipeline(data_config(data_dir=str(data_dir), augment=True), image_size=16,
                                max_text_len=TEXT_LEN).train_iterator(2, seed=1)
    for _ in range(7):
        next(solo)
    first = next(solo)
    for k in want[0]:
        np.testing.assert_array_equal(first[k], want[0][k])
    del it, resumed, want, got


@pytest.mark.parametrize("normalize_by", ["mixture", "embodiment"])
def test_oxe_component_samples_equal_the_registry_mapping(data_dir, pipeline, rlds, fixtures_dir, normalize_by):
    """Bridge (the OXE fixture, TFRecord) mixed with the demo: converted once, its elements equal
    `oxe.frame_sample` on the episodes read with TFDS, after the same resize/normalize/tokenize; normalized with
    the mixture's statistics, or (by embodiment) bridge's by bridge's own and the demo's by the demo's."""
    import tensorflow_datasets as tfds

    src = fixtures_dir / "oxe" / "bridge_dataset"
    comps = [component("demo", str(data_dir / "frames" / "demo"), 1.0),
             component("bridge_dataset", str(src), 2.0, kind="oxe")]
    pipe = loader.make_pipeline(data_config(data_dir=str(data_dir), components=comps, rephrase=False,
                                            tokenizer=pipeline.tokenizer_path, normalize_by=normalize_by),
                                image_size=SIZE, max_text_len=TEXT_LEN)
    assert [s.name for s in pipe.val_sources] == ["demo", "bridge_dataset"]
    from vitra_jax.data import prepare

    lines = prepare.describe(loader.prepare(pipe.cfg), pipe.cfg)
    grouped = "normalized by embodiment: hand_vla (demo); bridge_dataset (bridge_dataset); the run's statistics.json: hand_vla"
    assert (grouped in lines) == (normalize_by == "embodiment"), lines
    if normalize_by == "mixture":
        demo_st = bridge_st = pipe.statistics
    else:  # each as a pipeline of that dataset alone normalizes it
        bridge_st = loader.make_pipeline(data_config(data_dir=str(data_dir), tokenizer=pipeline.tokenizer_path,
                                                     components=[comps[1]]), image_size=SIZE,
                                         max_text_len=TEXT_LEN).statistics
        demo_st = pipeline.statistics
        assert pipe.statistics is pipe.normalization.groups["hand_vla"]  # the run's own: the hand data's
        assert not np.allclose(bridge_st.action_std, demo_st.action_std)
    builder = tfds.builder_from_directory(str(src / "1.0.0"))
    # JPEGs decoded by Pillow here (TF's decoder rounds differently; the store decodes with OpenCV)
    raw = builder.as_dataset(split="train", decoders={"steps": {"observation": {"image_0": tfds.decode.SkipDecoding()}}})
    episodes = [(chunks.stack_steps(ep["steps"]), ep["episode_metadata"]) for ep in tfds.as_numpy(raw)]
    sp = spm.SentencePieceProcessor(model_file=pipe.tokenizer_path)
    entry = oxe.get("bridge_dataset")
    index = mixture.MixtureIndex(pipe.components(), seed=mixture.derive_seed(0, 0))
    batch = next(pipe.train_iterator(12, seed=0))
    oxe_elements = [k for k in range(12) if index[k]["component"] == 1]
    assert oxe_elements and len(oxe_elements) < 12  # bridge carries 2 x 250 of 644 samples per epoch
    for k in range(12):
        got = {key: v[k] for key, v in batch.items()}
        if k not in oxe_elements:
            steps, meta = rlds["train"][locate(rlds["train"], index[k]["frame"])[0]]
            t = locate(rlds["train"], index[k]["frame"])[1]
            s = chunks.frame_sample(steps, t, main_hand=meta["main_hand"].decode())
            assert_example(got, model_inputs(s, pipe, sp, demo_st), f"demo {k}")
            continue
        e, t = locate(episodes, index[k]["frame"])
        steps, meta = episodes[e]
        image = np.asarray(Image.open(io.BytesIO(steps["observation"]["image_0"][t])).convert("RGB"))
        s = oxe.frame_sample(entry, steps, t, image=image, metadata=meta)
        assert_example(got, model_inputs(s, pipe, sp, bridge_st), f"bridge {k}")


def test_process_shards_take_whole_rows_of_each_global_batch(pipeline):
    full = pipeline.dataset(seed=3, augment=False)
    rows = 2
    shards = [pipeline.dataset(seed=3, augment=False, process_index=p, process_count=2, rows=rows)
              for p in range(2)]
    for b in range(2):  # global batch b = rows of process 0, then rows of process 1
        for p in range(2):
            for r in range(rows):
                np.testing.assert_array_equal(shards[p][b * rows + r]["actions"],
                                              full[b * 4 + p * rows + r]["actions"])
    with pytest.raises(ValueError, match="process_index"):
        pipeline.dataset(seed=3, augment=False, process_index=2, process_count=2)


def test_missing_statistics_name_the_command(data_dir, pipeline, tmp_path):
    with pytest.raises(statistics.MissingStatisticsError, match="vitra_jax.data.prepare"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), statistics=str(tmp_path / "none.json")),
                             image_size=SIZE, max_text_len=TEXT_LEN)
    # a copy of the frame store without its cached statistics, computing disabled
    root = tmp_path / "frames"
    shutil.copytree(data_dir / "frames" / "demo", root,
                    ignore=shutil.ignore_patterns("dataset_statistics_*.json"))
    comps = [{"name": "demo", "kind": "hand_vla", "path": str(root), "weight": 1.0, "split": "train"}]
    cfg = data_config(data_dir=str(data_dir), components=comps, compute_statistics=False,
                      tokenizer=pipeline.tokenizer_path)
    with pytest.raises(statistics.MissingStatisticsError, match="statistics not found"):
        loader.make_pipeline(cfg, image_size=SIZE, max_text_len=TEXT_LEN)
    # computed ahead of the run, as `python -m vitra_jax.data.prepare` does, the run finds them
    with cfg.unlocked():
        cfg.compute_statistics = True
    loader.prepare(cfg)
    with cfg.unlocked():
        cfg.compute_statistics = False
    pipe = loader.make_pipeline(cfg, image_size=SIZE, max_text_len=TEXT_LEN)
    np.testing.assert_array_equal(pipe.statistics.action_std, pipeline.statistics.action_std)


def test_prepare_cli_reports_every_component(data_dir, pipeline):
    out = subprocess.run([sys.executable, "-m", "vitra_jax.data.prepare", "--config", "configs/debug.py",
                          f"--config.data.data_dir={data_dir}", f"--config.data.tokenizer={pipeline.tokenizer_path}",
                          "--config.data.compute_statistics=False"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    store = pipeline.train_sources[0].store
    assert (f"demo (hand_vla, weight 1): {store.num_episodes} episodes, {store.num_frames} frames at {store.path}; "
            f"statistics over {pipeline.statistics.num_frames} frames") in out.stdout
    assert "validation components: ['demo']" in out.stdout


def test_statistics_of_the_demo_split_equal_the_procedural_targets(pipeline):
    """A component's cached statistics equal the masked moments of the one-step targets recomputed from the
    procedural episodes (demo_002 … demo_007 are train), each counted as is and mirrored."""
    from tests.data.test_statistics import _mirror
    from tfds_builders.hand_vla import demo
    from vitra_jax.handspace import layout, trajectory

    src = pipeline.train_sources[0]
    st = loader.source_statistics(src, compute=False)  # the pipeline computed and cached them
    assert len(list(pathlib.Path(src.store.path).glob("dataset_statistics_*.json"))) == 1
    acts, masks = [], []
    for i in range(2, 8):
        ep, _ = demo.demo_episode(i, 0)
        tg = trajectory.step_targets(ep.hands, ep.extrinsics)
        m = layout.expand_hand_mask(tg.action_mask)
        acts += [tg.action, _mirror(tg.action)]
        masks += [m, np.concatenate([m[:, 51:], m[:, :51]], 1)]
    x, m = np.concatenate(acts), np.concatenate(masks)
    ref_mean = np.array([x[m[:, d], d].mean() for d in range(102)])
    ref_std = np.array([x[m[:, d], d].std() for d in range(102)])
    np.testing.assert_allclose(st.action_mean, ref_mean, atol=2e-6)
    np.testing.assert_allclose(st.action_std, ref_std, atol=2e-6)
    assert st.num_episodes == 6 and st.num_frames == 6 * 24


def test_a_store_of_another_source_or_kind_is_refused(data_dir, pipeline, fixtures_dir, tmp_path):
    # data_dir/frames/demo was converted from data_dir/tfds/...; another TFDS folder under the same name
    built = next((data_dir / "tfds" / "hand_vla" / "demo").iterdir())
    other = tmp_path / "copy" / built.name
    shutil.copytree(built, other)
    before = sorted(p.name for p in (data_dir / "frames" / "demo").rglob("*"))
    with pytest.raises(ValueError, match=f"is converted from {built}, not from {other}"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), tokenizer=pipeline.tokenizer_path,
                                         components=[component("demo", str(other))]),
                             image_size=SIZE, max_text_len=TEXT_LEN)
    assert sorted(p.name for p in (data_dir / "frames" / "demo").rglob("*")) == before
    # an OXE dataset given the hand_vla kind
    bridge = fixtures_dir / "oxe" / "bridge_dataset"
    with pytest.raises(ValueError, match="has kind 'hand_vla' but .* holds a 'bridge_dataset' dataset"):
        loader.make_pipeline(data_config(data_dir=str(tmp_path), tokenizer=pipeline.tokenizer_path,
                                         components=[component("bridge_dataset", str(bridge))]),
                             image_size=SIZE, max_text_len=TEXT_LEN)


def test_bad_configuration_is_refused(data_dir, tmp_path):
    with pytest.raises(KeyError, match="unknown data config field"):
        data_config(batch=3)
    with pytest.raises(ValueError, match="nothing to train on"):
        loader.make_pipeline(data_config(data_dir=str(tmp_path), build_demo=False), image_size=SIZE,
                             max_text_len=TEXT_LEN)
    comps = [{"name": "x", "kind": "hand_vla", "path": str(tmp_path / "nowhere")}]
    with pytest.raises(FileNotFoundError, match="neither a frame store"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), components=comps), image_size=SIZE,
                             max_text_len=TEXT_LEN)
    comps = [{"name": "demo", "path": str(data_dir / "frames" / "demo")}]
    with pytest.raises(FileNotFoundError, match="tokenizer_vocab"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), components=comps, tokenizer=str(tmp_path / "t.model")),
                             image_size=SIZE, max_text_len=TEXT_LEN)
    with pytest.raises(ValueError, match=r"normalize_by must be one of \('mixture', 'embodiment'\), got 'robot'"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), components=comps, normalize_by="robot"),
                             image_size=SIZE, max_text_len=TEXT_LEN)
    with pytest.raises(ValueError, match="data.statistics gives one set .* leave it empty"):
        loader.make_pipeline(data_config(data_dir=str(data_dir), components=comps, normalize_by="embodiment",
                                         statistics=str(tmp_path / "s.json")), image_size=SIZE, max_text_len=TEXT_LEN)


def test_a_data_section_recorded_before_newer_fields_still_opens(data_dir, pipeline):
    import json

    from vitra_jax.data.config import saved_data_config

    saved = json.loads(data_config(data_dir=str(data_dir), tokenizer=pipeline.tokenizer_path,
                                   rephrase=False).to_json_best_effort())
    del saved["normalize_by"]  # a run folder written before the field existed
    cfg = saved_data_config(saved)
    assert cfg.normalize_by == "mixture" and cfg.rephrase is False and cfg.data_dir == str(data_dir)
    pipe = loader.make_pipeline(cfg, image_size=SIZE, max_text_len=TEXT_LEN)
    np.testing.assert_array_equal(pipe.statistics.action_std, pipeline.statistics.action_std)


def test_truncated_prompts_are_cut_and_counted(data_dir, pipeline):
    sp = spm.SentencePieceProcessor(model_file=pipeline.tokenizer_path)
    short = 8
    pipe = loader.make_pipeline(data_config(data_dir=str(data_dir), rephrase=False), image_size=SIZE,
                                max_text_len=short)
    raw = list(pipeline.samples("train", max_samples=1))[0]
    assert len([sp.bos_id(), *sp.encode(raw["instruction"] + "\n")]) > short  # demo prompts are longer
    batch = next(pipe.train_iterator(3, seed=0))
    assert batch["tokens"].shape == (3, short) and batch["input_mask"].all()
    assert np.all(batch["tokens"][:, 0] == sp.bos_id())
    counts = pipe.counters()
    assert counts["samples"] == 3 and counts["truncated"] == 3 and counts["bytes_read"] > 0
    with pytest.raises(ValueError, match="unknown split"):
        next(pipe.samples("test"))


def test_unset_data_dir_is_named(tmp_path):
    with pytest.raises(ValueError, match="data_dir is not set"):
        loader.make_pipeline(data_config(data_dir=None), image_size=SIZE, max_text_len=TEXT_LEN)


def test_oxe_statistics_count_the_mapped_steps_unflipped(data_dir, pipeline, fixtures_dir):
    """A bridge-only mixture's normalizer is the plain masked mean/std of the registry-mapped per-step
    actions and states (robot data is never mirrored, so no flipped copy is counted)."""
    import tensorflow_datasets as tfds

    src = fixtures_dir / "oxe" / "bridge_dataset"
    pipe = loader.make_pipeline(data_config(data_dir=str(data_dir), tokenizer=pipeline.tokenizer_path,
                                            components=[component("bridge_dataset", str(src), kind="oxe")]),
                                image_size=SIZE, max_text_len=TEXT_LEN)
    builder = tfds.builder_from_directory(str(src / "1.0.0"))
    skip = {"steps": {"observation": {"image_0": tfds.decode.SkipDecoding()}}}
    entry = oxe.get("bridge_dataset")
    arrays = [oxe.episode_arrays(entry, chunks.stack_steps(ep["steps"]))
              for ep in tfds.as_numpy(builder.as_dataset(split="train", decoders=skip))]
    for kind, key in (("action", "action"), ("state", "state")):
        x = np.concatenate([a[key] for a in arrays]).astype(np.float64)
        m = np.concatenate([a[f"{key}_mask"] for a in arrays]) > 0
        cols = np.flatnonzero(m.any(0))
        assert len(cols) > 0
        mean = np.array([x[m[:, j], j].mean() for j in cols])
        std = np.array([x[m[:, j], j].std() for j in cols])
        np.testing.assert_allclose(getattr(pipe.statistics, f"{kind}_mean")[cols], mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(getattr(pipe.statistics, f"{kind}_std")[cols], std, rtol=1e-6, atol=1e-9)
        # the mirrored (left-hand) slots were never filled
        assert np.all(getattr(pipe.statistics, f"{kind}_count")[:51] == 0)


def test_validation_ignores_augmentation(data_dir, pipeline):
    pipe = loader.make_pipeline(data_config(data_dir=str(data_dir), augment=True), image_size=SIZE,
                                max_text_len=TEXT_LEN)
    for x, y in zip(pipe.val_batches(3, 2), pipeline.val_batches(3, 2)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
