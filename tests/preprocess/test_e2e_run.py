"""End to end on the real fixture videos with the real stages: MediaPipe hands (CPU, synthetic MANO file),
FoV-prior intrinsics, background-flow camera motion, stitched 0.6 s clips, segmentation, captions from the
loopback OpenAI stub, episode files, and the hand_vla `episodes` build over the output folder.

One local run (module fixture) is the reference; a run killed with SIGKILL and resumed, and a run under
the local Ray runner, must give the same episode files byte for byte. Inputs also hold an unreadable and a
zero-length video (recorded as failed with reasons) and a synthetic hand-free clip (failed: no hands).
Frames are limited to 30 per video at 480 px width to keep the test within budget.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from preprocess import config as config_lib
from preprocess import graph, records, store
from preprocess import run as run_lib
from tests.preprocess.mano_synthetic import write_synthetic_mano
from tests.preprocess.openai_stub import OpenAIStub, Reply, usage_for
from tfds_builders.hand_vla import hand_vla_dataset_builder as hv
from vitra_jax.handspace import episode as E

REPO = Path(__file__).resolve().parents[2]
VITRA = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
HAWOR = "hawor_video_0"
CAPTIONS = {"left": "Hold the plate.", "right": "Pick up the cup."}

RECIPE = """
from preprocess.config import get_config as base


def get_config(arg=None):
    c = base()
    c.video.max_width = 480
    c.video.max_frames = 30
    c.video.clip_seconds = 0.6
    c.video.overlap_seconds = 0.2
    c.hands.mano_dir = {mano!r}
    c.hands.options = {{"fit": {{"iterations": 60}}}}  # MANO fit steps (default 300): budget
    c.segment.max_gap_seconds = 0.35  # bridges VITRA frames 9-18: 3 rejected outliers + 7 MediaPipe misses
    c.caption.base_url = {url!r}
    c.caption.rate_limit_rpm = 6000.0
    c.writer.preview = "png"
    c.caption.concurrency = 1  # one captioning actor under Ray (each actor process costs start-up time)
    return c
"""


def _answer(prompt: str) -> str:
    return CAPTIONS["left"] if "person's left hand" in prompt else CAPTIONS["right"]


def _load_recipe(path: Path):
    ns: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)  # noqa: S102 (our own test recipe)
    return ns["get_config"]()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("e2e")
    inputs = root / "videos"
    inputs.mkdir()
    for name in (f"{VITRA}.mp4", f"{HAWOR}.mp4"):
        (inputs / name).symlink_to(fixtures_dir / "videos" / name)
    (inputs / "empty.mp4").write_bytes(b"")
    (inputs / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    (inputs / "notes.txt").write_text("not a video")
    # A static, hand-free clip: a textured still frame (rendered here) held for 12 frames.
    rng = np.random.default_rng(0)
    still = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 2)
    writer = cv2.VideoWriter(str(inputs / "still.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 120))
    for _ in range(12):
        writer.write(still)
    writer.release()
    mano = write_synthetic_mano(root / "mano")
    stub = OpenAIStub(answer=_answer).__enter__()
    os.environ.setdefault("OPENAI_API_KEY", "test-key")
    recipe = root / "recipe.py"
    mano_dir = str(mano.parent if mano.is_file() else mano)
    recipe.write_text(RECIPE.format(mano=mano_dir, url=stub.base_url))
    yield {"root": root, "inputs": inputs, "recipe": recipe, "stub": stub}
    stub.__exit__(None, None, None)


@pytest.fixture(scope="module")
def local(setup):
    out = setup["root"] / "local"
    stub = setup["stub"]
    before = (stub.count, stub.tokens_in, stub.tokens_out)
    summary = run_lib.label(str(setup["inputs"]), str(out), _load_recipe(setup["recipe"]))
    calls = (stub.count - before[0], stub.tokens_in - before[1], stub.tokens_out - before[2])
    return out, summary, calls


def _episode_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "episodes").rglob("*.*"))}


def test_local_run_labels_the_fixtures(setup, local):
    out, summary, (requests, tokens_in, tokens_out) = local
    s = store.Store(out)
    assert summary["videos"] == {"total": 5, "done": 2,
                                 "failed": {"no_hands": 1, "unreadable_video": 2}}
    assert s.failure("work/empty/plan")["detail"].endswith("empty file (0 bytes)")
    assert "not a video FFmpeg can open" in s.failure("work/broken/plan")["detail"]
    assert s.failure("work/still/tracks")["reason"] == "no_hands"
    # 30 frames in 0.6 s clips (18 frames) overlapping by 0.2 s (6): [0, 18) and [12, 30); VITRA: [12, 25).
    assert [(c.start, c.stop) for c in s.load(f"work/{HAWOR}/plan")["clips"]] == [(0, 18), (12, 30)]
    assert [(c.start, c.stop) for c in s.load(f"work/{VITRA}/plan")["clips"]] == [(0, 18), (12, 25)]
    assert summary["clips"] == {"total": 5, "done": 5, "failed": {}}
    # Both moving head cameras are found moving in every clip, the still clip static.
    for vid in (VITRA, HAWOR):
        for k in (0, 1):
            assert s.load(f"work/{vid}/clip{k:04d}/camera_motion").label == "moving"
    assert s.load("work/still/clip0000/camera_motion").label == "static"
    # Both hands are tracked through most of the HaWoR clip (MediaPipe: both hands in 28-29 of these frames).
    tracks = s.load(f"work/{HAWOR}/tracks")["tracks"]
    assert tracks["left"].kept.sum() >= 20 and tracks["right"].kept.sum() >= 20
    # Captions: one request per segment, the stub's token counts are what the summary reports and prices.
    segments = {vid: s.load(f"work/{vid}/tracks")["segments"] for vid in (VITRA, HAWOR)}
    n_segments = sum(map(len, segments.values()))
    assert n_segments >= 3 and requests == n_segments == summary["captions"]["done"]
    assert summary["api"]["tokens_in"] == tokens_in and summary["api"]["tokens_out"] == tokens_out
    assert summary["api"]["cost_usd"] == pytest.approx(tokens_in * 2e-6 + tokens_out * 8e-6)
    assert tokens_in == sum(usage_for(b)[0] for b in setup["stub"].requests[:requests])
    # Episodes: one per segment, valid, with the segment's frames, the FoV-prior K of the original video,
    # the main hand's caption over the whole episode and the labeler versions.
    files = _episode_files(out)
    stems = sorted({Path(f).with_suffix("") for f in files})
    assert summary["episodes"] == len(stems) == n_segments and len(files) == 2 * len(stems)
    for stem in stems:
        ep = E.read_episode(out / stem)
        E.validate(ep)
        vid = ep.video_name
        seg = next(g for g in segments[vid] if stem.name == f"{vid}_{g.hand}_{g.start:06d}")
        assert ep.frame_index.tolist() == list(range(seg.start, seg.stop)) and ep.main_hand == seg.hand
        assert ep.text[seg.hand] == [(CAPTIONS[seg.hand], (0, seg.stop - seg.start))]
        w, h = (1920, 1080) if vid == HAWOR else (480, 368)
        np.testing.assert_allclose(ep.intrinsics, [[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1]])  # 90° FoV
        assert ep.camera_motion == "moving" and ep.video == str(setup["inputs"] / f"{vid}.mp4")
        assert ep.labeler_versions["hands"].startswith("mediapipe@") and ep.labeler_versions["caption"] == \
            "gpt-4.1@caption_v1"
        assert ep.hands[seg.hand].kept.sum() >= 0.5 * len(ep)
    assert json.loads((out / "summary.json").read_text()) == summary
    # A PNG preview per episode: 2 rows of 4 frames (480 px wide each) over a caption band.
    for stem in stems:
        png = cv2.imread(str(out / "previews" / stem.parent.name / f"{stem.name}.png"))
        frame_h = 270 if stem.parent.name == HAWOR else 368
        assert png.shape[1] == 4 * 480 and png.shape[0] > 2 * frame_h


def test_output_folder_builds_with_tfds(local, tmp_path):
    out, summary, _ = local
    b = hv.Builder(config="episodes", data_dir=str(tmp_path))
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(out)))
    assert not b.skipped
    assert sum(s.num_examples for s in b.info.splits.values()) == summary["episodes"]
    ds = b.as_dataset(split="+".join(b.info.splits))
    texts = set()
    for ep in ds:
        steps = list(ep["steps"])
        texts.add(steps[0]["language_instruction"].numpy().decode())
        assert steps[0]["observation"]["image"].shape[0] == 224  # short side
    assert any(CAPTIONS["right"] in t for t in texts)


def test_killed_run_resumes_to_identical_episodes(setup, local):
    out_ref, summary_ref, _ = local
    out = setup["root"] / "killed"
    cmd = [sys.executable, "-m", "preprocess.run", f"--input={setup['inputs']}", f"--output={out}",
           f"--config={setup['recipe']}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 120
    while not list(out.glob("work/*/clip*/hands.done")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob("work/*/clip*/hands.done")), "the run ended before any hand result existed"
    assert not (out / "summary.json").exists() and not list(out.glob("episodes/*/*.json"))
    # Rerun to completion (2 worker processes): the same episode files, nothing twice, the same counts.
    done = subprocess.run([*cmd, "--workers=2", "--captioner=openai"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _episode_files(out) == _episode_files(out_ref)
    assert json.loads((out / "summary.json").read_text()) == summary_ref
    assert f"episodes  {summary_ref['episodes']}\n" in done.stdout and "failed: no_hands=1, unreadable_video=2" \
        in done.stdout


def test_ray_runner_gives_the_same_episodes(setup, local):
    out_ref, summary_ref, _ = local
    out = setup["root"] / "ray"
    summary = run_lib.label(str(setup["inputs"]), str(out), _load_recipe(setup["recipe"]), runner="ray",
                            ray_num_cpus=2)
    assert _episode_files(out) == _episode_files(out_ref)
    assert summary == summary_ref


def test_api_error_is_recorded_and_a_rerun_completes(setup, local):
    out_ref, summary_ref, _ = local
    out = setup["root"] / "api_error"
    shutil.copytree(out_ref, out, symlinks=True)
    for path in [*out.glob(f"work/{HAWOR}/captions/*"), *out.glob(f"work/{HAWOR}/episodes.*")]:
        path.unlink()
    shutil.rmtree(out / "episodes" / HAWOR)
    shutil.rmtree(out / "cache")  # cached answers would spare the API calls
    cfg = _load_recipe(setup["recipe"])
    with OpenAIStub(answer=Reply.error(400)) as failing:
        cfg.caption.base_url = failing.base_url
        summary = run_lib.label(str(setup["inputs"]), str(out), cfg)
    n_hawor = len(store.Store(out).load(f"work/{HAWOR}/tracks")["segments"])
    assert failing.count == n_hawor  # a bad request is not retried
    assert summary["captions"]["failed"] == {"api_error": n_hawor}
    assert summary["videos"]["failed"] == {**summary_ref["videos"]["failed"], "api_error": 1}
    assert "HTTP 400" in store.Store(out).failure(f"work/{HAWOR}/captions/left_000000_000030")["detail"]
    assert not (out / "episodes" / HAWOR).exists()
    assert summary["episodes"] == summary_ref["episodes"] - n_hawor
    summary = run_lib.label(str(setup["inputs"]), str(out), _load_recipe(setup["recipe"]))  # the API is back
    assert _episode_files(out) == _episode_files(out_ref) and summary == summary_ref


def test_rerun_with_other_settings_is_refused(setup, local):
    out, _, _ = local
    cfg = _load_recipe(setup["recipe"])
    cfg.video.max_frames = 20
    with pytest.raises(run_lib.SettingsMismatch, match=r"video.max_frames differ"):
        run_lib.label(str(setup["inputs"]), str(out), cfg)
    assert graph.list_videos(str(setup["inputs"]), config_lib.VIDEO_SUFFIXES)[0].endswith(f"{VITRA}.mp4")
    assert isinstance(store.Store(out).load(f"work/{VITRA}/plan")["info"], records.VideoInfo)
