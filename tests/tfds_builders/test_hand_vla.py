"""hand_vla builder: demo build in both file formats, splits, OXE-style reading, bad-input skips, Beam, the
tfds CLI, on-the-fly undistortion."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.hand_vla import hand_vla_dataset_builder as hv
from vitra_jax.handspace import episode as E
from vitra_jax.handspace import trajectory

REPO = pathlib.Path(__file__).resolve().parents[2]
CLIP = "videos/03cc49c3-a7d1-445b-9a2a-545c4fae6843.mp4"
NPY = "videos/Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example.npy"
VERSION = str(hv.Builder.VERSION)
SPLITS = {"train": 6, "val": 2}  # the demo config's 8 episodes


def _build(config, data_dir, manual_dir=None, file_format="tfrecord", beam_options=None):
    b = hv.Builder(config=config, data_dir=str(data_dir), file_format=file_format)
    manual = str(manual_dir) if manual_dir else None
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual,
                                                                        beam_options=beam_options))
    return b


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    _build("demo", d)
    return d / "hand_vla" / "demo" / VERSION


def _oxe_trajectories(ds: tf.data.Dataset) -> tf.data.Dataset:
    """How octo/dlimp read RLDS: each episode's steps stacked into one trajectory dict."""
    return ds.map(lambda ep: ep["steps"].batch(1 << 30).get_single_element())


def test_demo_tfrecord_reads_back_oxe_style(demo_dir):
    b = tfds.builder_from_directory(str(demo_dir))
    assert {name: s.num_examples for name, s in b.info.splits.items()} == SPLITS
    assert sum(f.stat().st_size for f in demo_dir.iterdir()) < 2_000_000
    trajs = list(_oxe_trajectories(b.as_dataset(split="train+val")).as_numpy_iterator())
    assert len(trajs) == 8
    val = {ep["episode_metadata"]["video_name"].numpy().decode() for ep in b.as_dataset(split="val")}
    assert val == {"demo_000", "demo_001"}  # the demo videos whose hash falls under val_fraction 0.1
    for tr in trajs:
        assert tr["action"].shape == (24, 102) and tr["observation"]["state"].shape == (24, 102)
        assert tr["observation"]["image"].shape == (24, 128, 128, 3)
        assert tr["is_first"].tolist() == [True] + [False] * 23
        assert tr["is_last"].tolist() == [False] * 23 + [True] and tr["reward"][-1] == 1.0
        text = tr["language_instruction"][0].decode()
        assert text.startswith("Left hand: ") and "Reach for the" in text and "None." in text
        # Stored actions are the one-step targets of the stored world poses and cameras.
        hands = {h: trajectory.HandTrack(
            wrist=tr["hands"][h]["wrist"].astype(np.float64),
            orient=tr["hands"][h]["orient"].astype(np.float64),
            hand_pose=tr["hands"][h]["hand_pose"].astype(np.float64), joints=tr["hands"][h]["joints"],
            kept=tr["hands"][h]["kept"], beta=np.zeros(10)) for h in ("left", "right")}
        ref = trajectory.step_targets(hands, tr["camera"]["extrinsics"].astype(np.float64))
        np.testing.assert_allclose(tr["action"], ref.action, atol=2e-5)
        assert tr["action_mask"][:-1].all() and not tr["action_mask"][-1].any()
    # Hands are drawn: pixels under the projected right wrist differ from the background texture.
    img = trajs[0]["observation"]["image"]
    assert img.std() > 10 and (np.abs(img[0].astype(int) - img[-1].astype(int)).sum(-1) > 60).mean() > 0.005


def test_demo_is_deterministic_and_array_record_matches(demo_dir, tmp_path):
    _build("demo", tmp_path, file_format="array_record")
    raw = {"steps": {"observation": {"image": tfds.decode.SkipDecoding()}}}  # compare the JPEG bytes
    sources = tfds.data_source("hand_vla/demo", data_dir=str(tmp_path), decoders=raw)
    assert {name: len(src) for name, src in sources.items()} == SPLITS
    records = [src[i] for src in sources.values() for i in range(len(src))]
    tf_ds = tfds.builder_from_directory(str(demo_dir)).as_dataset(split="train+val", decoders=raw)
    tf_eps = list(tfds.as_numpy(tf_ds))
    by_name = {r["episode_metadata"]["video_name"]: r for r in records}
    assert len(by_name) == len(tf_eps) == 8
    for ep in tf_eps:
        rec = by_name[ep["episode_metadata"]["video_name"]]
        steps = list(ep["steps"])
        rec_steps = [rec["steps"][i] for i in range(len(rec["steps"]))]  # steps decode lazily, one by one
        assert len(rec_steps) == len(steps) == 24
        for a, b in zip(rec_steps, steps):
            np.testing.assert_array_equal(a["action"], b["action"])
            assert a["observation"]["image"] == b["observation"]["image"]
            assert a["language_instruction"] == b["language_instruction"]
    # grain reads the ArrayRecord split directly: random access, then batches of stacked step actions.
    import grain

    def actions(ep):
        return np.stack([ep["steps"][i]["action"] for i in range(len(ep["steps"]))])

    ds = grain.MapDataset.source(sources["val"]).map(actions)
    (batch,) = list(ds.to_iter_dataset().batch(2))
    tf_val = tfds.builder_from_directory(str(demo_dir)).as_dataset(split="val", decoders=raw)
    np.testing.assert_array_equal(batch, np.stack([ep["steps"]["action"] for ep in tfds.as_numpy(
        tf_val.map(lambda ep: {"steps": ep["steps"].batch(64).get_single_element()}))]))


def _write_bad_inputs(root: pathlib.Path, fixtures: pathlib.Path) -> None:
    ep = E.from_vitra(E.load_vitra_npy(fixtures / NPY), video=str(fixtures / CLIP), source="Ego4D")
    E.write_episode(root / "good", ep)
    arrays = dict(np.load(root / "good.npz"))
    meta = (root / "good.json").read_text()

    def variant(name, meta_text=meta, **changes):
        np.savez(root / f"{name}.npz", **{**arrays, **changes})
        (root / f"{name}.json").write_text(meta_text)

    nan_wrist = arrays["right/wrist"].copy()
    nan_wrist[7, 2] = np.nan
    variant("nan", **{"right/wrist": nan_wrist})
    variant("idle", **{"right/kept": np.zeros(25, bool)})
    variant("short", **{"extrinsics": arrays["extrinsics"][:20]})
    variant("missing", meta.replace(CLIP.split("/")[-1], "gone.mp4"))
    (root / "garbage.mp4").write_bytes(b"not a video" * 100)
    variant("corrupt", meta.replace(str(fixtures / CLIP), str(root / "garbage.mp4")))
    variant("broken", meta[: len(meta) // 2])  # truncated JSON
    variant("uncaptioned", json.dumps({**json.loads(meta), "text": {}}))  # labelled with --captioner=none


LENIENT = hv.HandVlaConfig(name="episodes_lenient", source="episodes", max_skip_fraction=1.0)
BAD_COUNTS = {"length_mismatch": 1, "missing_video": 1, "no_instruction": 1, "no_valid_frames": 1,
              "non_finite": 1, "unreadable_input": 1, "unreadable_video": 1}


def test_bad_inputs_are_skipped_and_counted(fixtures_dir, tmp_path):
    manual = tmp_path / "episodes"
    manual.mkdir()
    _write_bad_inputs(manual, fixtures_dir)
    b = _build(LENIENT, tmp_path / "out", manual)
    assert dict(b.skipped) == BAD_COUNTS
    assert b.info.splits["train"].num_examples == 1
    built = tfds.builder_from_directory(str(tmp_path / "out/hand_vla/episodes_lenient" / VERSION))
    (ep,) = built.as_dataset(split="train")
    assert ep["episode_metadata"]["file_path"].numpy().decode().endswith("good")
    # With the default limit (5 %), 7 skips among 8 inputs fail the build, naming the counts.
    with pytest.raises(RuntimeError, match=r"7 of 8 inputs skipped \(87.5%\), more than max_skip_fraction 5.0% "
                                           r"\(length_mismatch=1, .*unreadable_video=1\)"):
        _build("episodes", tmp_path / "strict", manual)
    assert not list((tmp_path / "strict").rglob("dataset_info.json"))


def test_a_bug_fails_the_build_instead_of_counting_as_bad_input(fixtures_dir, tmp_path, monkeypatch):
    from tfds_builders.hand_vla import examples

    manual = tmp_path / "episodes"
    manual.mkdir()
    E.write_episode(manual / "good", E.from_vitra(E.load_vitra_npy(fixtures_dir / NPY),
                                                  video=str(fixtures_dir / CLIP), source="Ego4D"))

    def broken(*args, **kwargs):
        return {}["steps"]  # a programming error, not an input problem

    monkeypatch.setattr(examples, "episode_example", broken)
    with pytest.raises(KeyError, match="steps"):
        _build(LENIENT, tmp_path / "out", manual)
    assert not list((tmp_path / "out").rglob("dataset_info.json"))


def test_no_usable_episode_fails_without_a_finished_dataset(fixtures_dir, tmp_path):
    manual = tmp_path / "episodes"
    manual.mkdir()
    _write_bad_inputs(manual, fixtures_dir)
    for p in manual.glob("good.*"):
        p.unlink()
    with pytest.raises(RuntimeError, match="no usable episode among 6 train inputs"):
        _build("episodes", tmp_path / "out", manual)
    assert not list((tmp_path / "out").rglob("dataset_info.json"))
    for p in manual.iterdir():  # only an episode whose metadata does not parse: refused before any split
        if not p.name.startswith("broken."):
            p.unlink()
    with pytest.raises(RuntimeError, match=r"no usable episode among 1 inputs \(skipped: unreadable_input=1\)"):
        _build("episodes", tmp_path / "out3", manual)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no episodes here")
    with pytest.raises(FileNotFoundError, match="no episodes inputs under"):
        _build("episodes", tmp_path / "out2", empty)


def test_custom_short_side_config_rescales_images_and_intrinsics(fixtures_dir, tmp_path):
    raw = tmp_path / "raw" / "Ego4D"
    (raw / "episodic_annotations").mkdir(parents=True)
    (raw / "videos").mkdir()
    (raw / "episodic_annotations" / pathlib.Path(NPY).name).symlink_to(fixtures_dir / NPY)
    (raw / "videos" / pathlib.Path(CLIP).name).symlink_to(fixtures_dir / CLIP)
    config = hv.HandVlaConfig(name="vitra1m_112", source="vitra1m", short_side=112)
    (ep,) = tfds.as_numpy(_build(config, tmp_path / "out", tmp_path / "raw").as_dataset(split="train"))
    step = next(iter(ep["steps"]))
    assert step["observation"]["image"].shape == (112, 146, 3)
    np.testing.assert_allclose(step["camera"]["intrinsics"][:2, 2], [73, 56])
    with pytest.raises(ValueError, match="unknown source 'videos'"):
        _build(hv.HandVlaConfig(name="x", source="videos"), tmp_path / "out2", tmp_path / "raw")


RAW_IMAGES = {"steps": {"observation": {"image": tfds.decode.SkipDecoding()}}}  # compare the JPEG bytes


def _images_by_episode(data_dir, split="train+val") -> dict[str, list[bytes]]:
    """video_name -> the stored JPEG bytes of its steps, for every episode of a built demo dataset."""
    b = tfds.builder_from_directory(str(data_dir))
    out = {}
    for ep in tfds.as_numpy(b.as_dataset(split=split, decoders=RAW_IMAGES)):
        out[ep["episode_metadata"]["video_name"].decode()] = [s["observation"]["image"] for s in ep["steps"]]
    return out


def test_tfds_cli_beam_multiprocess_build_matches_local_build(tmp_path, demo_dir):
    """`tfds build --beam_pipeline_options=...` on 2 worker processes writes the same splits and records."""
    tfds_bin = pathlib.Path(sys.executable).parent / "tfds"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [str(tfds_bin), "build", "hand_vla", "--imports=tfds_builders.hand_vla.hand_vla_dataset_builder",
           "--config=demo", f"--data_dir={tmp_path}",
           "--beam_pipeline_options=direct_num_workers=2,direct_running_mode=multi_processing"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)  # any cwd
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hand_vla (beam): wrote 8 episodes; skipped: none" in proc.stdout + proc.stderr
    out = tmp_path / "hand_vla" / "demo" / VERSION
    assert {n: s.num_examples for n, s in tfds.builder_from_directory(str(out)).info.splits.items()} == SPLITS
    for split in SPLITS:  # same episodes in each split, in the same order, with byte-identical images
        assert list(_images_by_episode(out, split).items()) == list(_images_by_episode(demo_dir, split).items())
    shutil.rmtree(tmp_path / "downloads", ignore_errors=True)


def test_local_worker_processes_match_single_process_build(tmp_path, demo_dir, monkeypatch):
    monkeypatch.setenv("HAND_VLA_WORKERS", "2")
    _build("demo", tmp_path)
    assert _images_by_episode(tmp_path / "hand_vla" / "demo" / VERSION) == _images_by_episode(demo_dir)


def test_beam_build_counts_skipped_episodes(fixtures_dir, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    manual = tmp_path / "episodes"
    manual.mkdir()
    _write_bad_inputs(manual, fixtures_dir)
    b = _build(LENIENT, tmp_path / "out", manual, beam_options=PipelineOptions(["--direct_num_workers=1"]))
    assert dict(b.skipped) == BAD_COUNTS
    assert b.info.splits["train"].num_examples == 1


def test_egoexo4d_frames_and_intrinsics_are_centre_cropped(fixtures_dir, tmp_path):
    """EgoExo4D keeps the centre 256/448 of each side; intrinsics follow the release's crop-then-resize
    formula (written out here per axis, for a frame of 2c pixels along that axis)."""
    import cv2

    from tfds_builders.hand_vla import examples, sources

    raw = tmp_path / "EgoExo4D"
    (raw / "episodic_annotations").mkdir(parents=True)
    (raw / "videos").mkdir()
    (raw / "episodic_annotations" / pathlib.Path(NPY).name).symlink_to(fixtures_dir / NPY)
    (raw / "videos" / pathlib.Path(CLIP).name).symlink_to(fixtures_dir / CLIP)
    ep, frames = sources.load_vitra1m(str(raw / "episodic_annotations" / pathlib.Path(NPY).name), 128)
    k0 = E.load_vitra_npy(fixtures_dir / NPY)["intrinsics"]
    h, w = frames.shape[1:3]
    k = examples.episode_example(ep, frames, "x", 0)["steps"][0]["camera"]["intrinsics"]
    fraction = 256 / 448
    for axis, size in ((0, w), (1, h)):
        crop = fraction * 2 * k0[axis, 2]
        scale = size / crop
        assert k[axis, axis] == pytest.approx(k0[axis, axis] * scale, rel=1e-5)
        assert k[axis, 2] == pytest.approx((k0[axis, 2] - (2 * k0[axis, 2] - crop) / 2) * scale, rel=1e-5)
    cap = cv2.VideoCapture(str(fixtures_dir / CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(ep.frame_index[0]))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    fh, fw = bgr.shape[:2]
    ch, cw = round(fh * fraction), round(fw * fraction)
    window = bgr[(fh - ch) // 2:(fh - ch) // 2 + ch, (fw - cw) // 2:(fw - cw) // 2 + cw]
    expected = cv2.cvtColor(cv2.resize(window, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frames[0], expected)
    assert min(h, w) == 128


def test_raw_ego4d_frames_are_undistorted_on_the_fly(fixtures_dir, tmp_path):
    """With `undistort`, each needed raw frame goes through the release's remap before resizing; the
    annotation's intrinsics (those of the undistorted video) are kept; xi = 0 leaves frames as they are."""
    import cv2

    from tfds_builders.hand_vla import sources
    from vitra_jax.handspace import omnidir

    raw = tmp_path / "Ego4D"
    for sub in ("episodic_annotations", "videos", "intrinsics"):
        (raw / sub).mkdir(parents=True)
    npy = raw / "episodic_annotations" / pathlib.Path(NPY).name
    npy.symlink_to(fixtures_dir / NPY)
    (raw / "videos" / pathlib.Path(CLIP).name).symlink_to(fixtures_dir / CLIP)
    video_name = pathlib.Path(CLIP).stem
    new_k = np.array([[300.0, 0, 240], [0, 300.0, 184], [0, 0, 1]])
    release = {"intrinsics_ori": {"K": np.array([[330.0, 0, 238], [0, 331.0, 186], [0, 0, 1]]),
                                  "D": np.array([[-0.1, 0.02, 0.0005, -0.001]]), "xi": np.array([[0.7]])},
               "intrinsics_new": {"K": new_k}}
    np.save(raw / "intrinsics" / f"{video_name}.npy", release, allow_pickle=True)

    ep, frames = sources.load_vitra1m(str(npy), 112, undistort=True)
    _, plain = sources.load_vitra1m(str(npy), 112)
    np.testing.assert_array_equal(ep.intrinsics, E.load_vitra_npy(fixtures_dir / NPY)["intrinsics"])
    cap = cv2.VideoCapture(str(fixtures_dir / CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(ep.frame_index[3]))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    fixed = sources.Undistort(omnidir.load_intrinsics(raw / "intrinsics" / f"{video_name}.npy"))(bgr)
    h, w = frames.shape[1:3]
    expected = cv2.cvtColor(cv2.resize(fixed, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frames[3], expected)
    assert np.abs(frames.astype(int) - plain.astype(int)).mean() > 5
    # The next episode of the same video reuses the maps.
    before = sources.undistorter.cache_info().hits
    np.testing.assert_array_equal(sources.load_vitra1m(str(npy), 112, undistort=True)[1], frames)
    assert sources.undistorter.cache_info().hits == before + 1

    release["intrinsics_ori"]["xi"] = np.array([[0.0]])  # the release skips the remap when xi == 0
    np.save(raw / "intrinsics" / f"{video_name}.npy", release, allow_pickle=True)
    np.testing.assert_array_equal(sources.load_vitra1m(str(npy), 112, undistort=True)[1], plain)

    (raw / "intrinsics" / f"{video_name}.npy").unlink()
    config = hv.HandVlaConfig(name="raw", source="vitra1m", short_side=112, undistort=True)
    with pytest.raises(RuntimeError, match="missing_intrinsics=1"):
        _build(config, tmp_path / "out", tmp_path)
    assert not list((tmp_path / "out").rglob("dataset_info.json"))


def test_undistort_without_intrinsics_folder_fails(fixtures_dir, tmp_path):
    """Raw videos must not pass for undistorted ones: a dataset folder without intrinsics/ fails the build
    (or, asked for, only warns); pinhole datasets (EPIC, SSv2) need none."""
    from tfds_builders.hand_vla import sources

    for name in ("Ego4D", "epic"):
        raw = tmp_path / "raw" / name
        (raw / "episodic_annotations").mkdir(parents=True)
        (raw / "videos").mkdir()
        (raw / "episodic_annotations" / pathlib.Path(NPY).name).symlink_to(fixtures_dir / NPY)
        (raw / "videos" / pathlib.Path(CLIP).name).symlink_to(fixtures_dir / CLIP)
    config = hv.HandVlaConfig(name="raw", source="vitra1m", short_side=64, undistort=True, val_fraction=0.0)
    with pytest.raises(sources.MissingIntrinsicsError, match=r"\['[^']*/raw/Ego4D'\] have no intrinsics/ folder"):
        _build(config, tmp_path / "out", tmp_path / "raw")
    assert not list((tmp_path / "out").rglob("dataset_info.json"))
    npy = str(tmp_path / "raw" / "Ego4D" / "episodic_annotations" / pathlib.Path(NPY).name)
    with pytest.raises(sources.MissingIntrinsicsError, match="has no intrinsics/ folder"):
        sources.load_vitra1m(npy, 64, undistort=True)
    _, plain = sources.load_vitra1m(npy, 64)
    np.testing.assert_array_equal(sources.load_vitra1m(npy, 64, undistort=True, require_intrinsics=False)[1], plain)
    epic = str(tmp_path / "raw" / "epic" / "episodic_annotations" / pathlib.Path(NPY).name)
    np.testing.assert_array_equal(sources.load_vitra1m(epic, 64, undistort=True)[1], plain)
    lenient = hv.HandVlaConfig(name="raw_warn", source="vitra1m", short_side=64, undistort=True,
                               require_intrinsics=False, val_fraction=0.0)
    assert _build(lenient, tmp_path / "out2", tmp_path / "raw").info.splits["train"].num_examples == 2


def test_unreadable_annotation_is_an_input_error(fixtures_dir, tmp_path):
    from tfds_builders.hand_vla import sources

    ann = tmp_path / "Ego4D" / "episodic_annotations"
    ann.mkdir(parents=True)
    (ann / "cut.npy").write_bytes((fixtures_dir / NPY).read_bytes()[:5000])  # truncated pickle
    spec = sources.LoadSpec("vitra1m", 64)
    item, err = sources.load(spec, (0, str(ann / "cut.npy")))
    assert isinstance(err, E.EpisodeError) and err.reason == "unreadable_input"
    assert "cut.npy: " in str(err)
