"""Run orchestration without heavy models: input listing, result settings saved and enforced, a crashing hand
backend recorded per clip while the run goes on, the summary's counts."""

import json
import os
import pathlib
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from preprocess import config as config_lib
from preprocess import errors, graph, store
from preprocess import run as run_lib
from preprocess.hands import mediapipe_env
from tests.preprocess import vitra_example
from tests.preprocess.mano_synthetic import write_synthetic_mano


def _still_video(path, frames=6):
    rng = np.random.default_rng(0)
    still = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (0, 0), 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (128, 96))
    for _ in range(frames):
        writer.write(still)
    writer.release()


def test_list_videos(tmp_path):
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "a.webm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert graph.list_videos(str(tmp_path), config_lib.VIDEO_SUFFIXES) == [str(tmp_path / "a.webm"),
                                                                         str(tmp_path / "b.mp4")]
    assert graph.list_videos(str(tmp_path / "b.mp4"), config_lib.VIDEO_SUFFIXES) == [str(tmp_path / "b.mp4")]
    (tmp_path / "a.mp4").write_bytes(b"")
    with pytest.raises(errors.ConfigError, match="two videos share the id 'a'"):
        graph.list_videos(str(tmp_path), config_lib.VIDEO_SUFFIXES)
    with pytest.raises(errors.ConfigError, match="no such file or folder"):
        graph.list_videos(str(tmp_path / "missing"), config_lib.VIDEO_SUFFIXES)


def test_result_settings_are_saved_and_enforced(tmp_path):
    cfg = config_lib.get_config()
    run_lib.check_settings(run_lib.epath.Path(tmp_path), cfg)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["segment"]["min_segment_seconds"] == 0.5 and saved["hands"]["backend"] == "mediapipe"
    assert "concurrency" not in saved["caption"] and "base_url" not in saved["caption"]
    # Endpoints, paths and parallelism may change between runs; result settings may not.
    cfg.caption.base_url = "http://127.0.0.1:9/v1"
    cfg.caption.concurrency = 16
    cfg.hands.mano_dir = "/elsewhere"
    run_lib.check_settings(run_lib.epath.Path(tmp_path), cfg)
    cfg.segment.min_segment_seconds = 1.0
    cfg.hands.backend = "precomputed"
    with pytest.raises(run_lib.SettingsMismatch, match=r"\(hands.backend, segment.min_segment_seconds differ\)"):
        run_lib.check_settings(run_lib.epath.Path(tmp_path), cfg)


REPO = pathlib.Path(__file__).resolve().parents[2]


def test_settings_errors_come_before_any_work(tmp_path, monkeypatch):
    inputs = tmp_path / "videos"
    inputs.mkdir()
    _still_video(inputs / "one.mp4")
    out = tmp_path / "out"
    cfg = config_lib.get_config()
    cfg.caption.backend = "none"
    with pytest.raises(errors.ConfigError, match="no mano_dir is configured"):
        run_lib.label(str(inputs), str(out), cfg)
    cfg.hands.backend = "precomputed"
    with pytest.raises(errors.ConfigError, match="set hands.path"):
        run_lib.label(str(inputs), str(out), cfg)
    cfg.hands.path = str(tmp_path / "{video_id}.npz")
    cfg.caption.backend = "openai"
    monkeypatch.delenv(cfg.caption.api_key_env, raising=False)
    with pytest.raises(errors.ConfigError, match=f"no API key: the environment variable {cfg.caption.api_key_env}"):
        run_lib.label(str(inputs), str(out), cfg)
    with pytest.raises(errors.ConfigError, match="no such file or folder"):
        run_lib.label(str(tmp_path / "missing"), str(out), cfg)
    assert not out.exists()  # nothing claimed the output folder


def test_command_line_errors_are_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    got = subprocess.run([sys.executable, "-m", "preprocess.run", "--input", str(tmp_path / "missing"), "--output",
                          str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert got.stderr.strip().splitlines()[-1] == f"preprocess.run: --input {tmp_path / 'missing'}: no such file or folder"
    assert not (tmp_path / "out").exists()


def test_another_mano_model_is_another_run(tmp_path):
    cfg = config_lib.get_config()
    a = write_synthetic_mano(tmp_path / "a")
    b = write_synthetic_mano(tmp_path / "b", pose_correctives=False)
    run_lib.check_settings(run_lib.epath.Path(tmp_path / "out"), cfg, str(a))
    run_lib.check_settings(run_lib.epath.Path(tmp_path / "out"), cfg, str(tmp_path / "a" / "MANO_RIGHT.pkl"))
    with pytest.raises(run_lib.SettingsMismatch, match=r"\(hands.mano_sha256 differ\)"):
        run_lib.check_settings(run_lib.epath.Path(tmp_path / "out"), cfg, str(b))


def test_crashing_hand_backend_is_recorded_per_clip(tmp_path):
    inputs = tmp_path / "videos"
    inputs.mkdir()
    _still_video(inputs / "one.mp4")
    _still_video(inputs / "two.mp4")
    # A MediaPipe venv whose python dies at once: the worker process ends before answering.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text("#!/bin/sh\necho 'worker died' >&2\nexit 3\n")
    (venv / "bin/python").chmod(stat.S_IRWXU)
    (venv / mediapipe_env.MARKER).write_text(json.dumps({"pins": list(mediapipe_env.PINS)}))
    mano = write_synthetic_mano(tmp_path / "mano")
    cfg = config_lib.get_config()
    cfg.hands.mano_dir = str(mano.parent if mano.is_file() else mano)
    cfg.hands.options = {"venv": str(venv)}
    cfg.caption.backend = "none"
    summary = run_lib.label(str(inputs), str(tmp_path / "out"), cfg)
    assert summary["videos"] == {"total": 2, "done": 0, "failed": {"backend_crash": 2}}
    assert summary["clips"] == {"total": 2, "done": 0, "failed": {"backend_crash": 2}}
    assert summary["episodes"] == 0 and summary["api"]["tokens_in"] == 0
    s = store.Store(tmp_path / "out")
    failure = s.failure("work/one/clip0000/hands")
    assert failure["reason"] == "backend_crash" and "worker died" in failure["detail"]
    assert s.done("work/one/clip0000/intrinsics") and not s.done("work/one/clip0000/camera_motion")
    assert s.failure("work/two/tracks")["detail"].startswith("two/clip0000 hands:")
    assert not (tmp_path / "out/episodes").exists()


def test_precomputed_hands_give_episodes_of_the_official_annotation(tmp_path, fixtures_dir):
    vid = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
    npz = fixtures_dir / f"videos/Ego4D_{vid}_ep_example.npz"
    inputs = tmp_path / "videos"
    inputs.mkdir()
    (inputs / f"{vid}.mp4").symlink_to(fixtures_dir / f"videos/{vid}.mp4")
    cfg = config_lib.get_config()
    cfg.hands.backend = "precomputed"
    cfg.hands.path = str(npz)
    cfg.caption.backend = "none"
    cfg.video.clip_seconds, cfg.video.overlap_seconds = 0.5, 0.2  # clips [0, 15), [9, 24), [18, 25)
    summary = run_lib.label(str(inputs), str(tmp_path / "out"), cfg)
    assert summary["clips"] == {"total": 3, "done": 3, "failed": {}} and summary["videos"]["done"] == 1
    official = vitra_example.arrays(fixtures_dir)
    from vitra_jax.handspace import episode as E

    stems = sorted((tmp_path / "out/episodes" / vid).glob("*.json"))
    assert len(stems) == summary["episodes"] >= 1
    for path in stems:
        ep = E.read_episode(path.with_suffix(""))
        assert ep.main_hand == "right" and ep.text == {}  # captioning off
        span = ep.frame_index
        # No pose backend for a moving camera here: world = camera at every frame (identity extrinsics),
        # so the stored hands are the annotation's camera-space hands, stitched from three clips.
        np.testing.assert_array_equal(ep.extrinsics, np.broadcast_to(np.eye(4), (len(span), 4, 4)))
        np.testing.assert_allclose(ep.hands["right"].joints, official["right/joints_camspace"][span], atol=1e-12)
        np.testing.assert_allclose(ep.hands["right"].hand_pose, official["right/hand_pose"][span], atol=1e-12)
        assert ep.labeler_versions == {"video": f"opencv@{cv2.__version__}", "intrinsics": "fov_prior@0.1.0",
                                       "hands": "vitra_release@VITRA-1M", "camera_motion": "farneback@0.1.0",
                                       "camera_pose": "camera_frame@0.1.0", "segment": "speed_minima@0.1.0"}
    # A missing result file fails the clips with a reason; the run still ends with a summary.
    cfg.hands.path = str(tmp_path / "missing_{video_id}.npz")
    summary = run_lib.label(str(inputs), str(tmp_path / "out2"), cfg)
    assert summary["clips"]["failed"] == {"bad_hands_file": 3} and summary["videos"]["failed"] == {"bad_hands_file": 1}


def test_distorted_video_gets_an_undistorted_copy_for_its_episodes(tmp_path, fixtures_dir):
    vid = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
    inputs = tmp_path / "videos"
    inputs.mkdir()
    (inputs / f"{vid}.mp4").symlink_to(fixtures_dir / f"videos/{vid}.mp4")
    camera = {"width": 480, "height": 368, "f": 220.0, "k1": -0.15, "camera_model": "simple_radial"}
    (tmp_path / f"{vid}.geocalib.json").write_text(json.dumps(camera))
    cfg = config_lib.get_config()
    cfg.intrinsics.backend = "geocalib"
    cfg.intrinsics.path = str(tmp_path / "{video_id}.geocalib.json")
    cfg.hands.backend = "precomputed"
    cfg.hands.path = str(fixtures_dir / f"videos/Ego4D_{vid}_ep_example.npz")
    cfg.caption.backend = "none"
    out = tmp_path / "out"
    summary = run_lib.label(str(inputs), str(out), cfg)
    assert summary["episodes"] >= 1
    from preprocess import intrinsics
    from vitra_jax.handspace import episode as E

    copy = out / "videos" / f"{vid}.mp4"
    for path in (out / "episodes" / vid).glob("*.json"):
        ep = E.read_episode(path.with_suffix(""))
        assert ep.video == str(copy)
        np.testing.assert_allclose(ep.intrinsics, [[220, 0, 240], [0, 220, 184], [0, 0, 1]])
    # The copy holds every frame, undistorted: compare with undistorting the decoded source (codec error only).
    cap, ref = cv2.VideoCapture(str(copy)), cv2.VideoCapture(str(inputs / f"{vid}.mp4"))
    intr = store.Store(out).load(f"work/{vid}/clip0000/intrinsics")
    assert intr.distortion["model"] == "simple_radial"
    errors, raw_errors = [], []
    for _ in range(25):
        (ok1, a), (ok2, b) = cap.read(), ref.read()
        assert ok1 and ok2 and a.shape == (368, 480, 3)
        errors.append(np.abs(a.astype(int) - intrinsics.undistort(b[None], intr)[0]).mean())
        raw_errors.append(np.abs(a.astype(int) - b).mean())
    assert not cap.read()[0]
    assert max(errors) < 6 < min(raw_errors)  # it matches the undistorted frames, not the raw ones


def test_remote_output_path_writes_the_same_episodes(tmp_path, fixtures_dir, monkeypatch):
    """Outputs that are URIs (gs://...) go through epath copies and get no default caption cache; forced
    here on a local folder, the episodes must equal those written directly."""
    from preprocess import backends, writer

    vid = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
    inputs = tmp_path / "videos"
    inputs.mkdir()
    (inputs / f"{vid}.mp4").symlink_to(fixtures_dir / f"videos/{vid}.mp4")
    cfg = config_lib.get_config()
    cfg.hands.backend = "precomputed"
    cfg.hands.path = str(fixtures_dir / f"videos/Ego4D_{vid}_ep_example.npz")
    cfg.caption.backend = "none"
    run_lib.label(str(inputs), str(tmp_path / "direct"), cfg)
    assert backends.caption_cache_dir(cfg.caption, "gs://bucket/run") == ""
    assert backends.caption_cache_dir(cfg.caption, str(tmp_path)) == str(tmp_path / "cache/captions")
    copies = []
    real_copy_write = writer.copy_write
    monkeypatch.setattr(writer, "is_local", lambda path: False)
    monkeypatch.setattr(writer, "copy_write", lambda stem, ep: (copies.append(stem.name), real_copy_write(stem, ep)))
    run_lib.label(str(inputs), str(tmp_path / "remote"), cfg)
    direct = sorted((tmp_path / "direct/episodes").rglob("*.*"))
    remote = sorted((tmp_path / "remote/episodes").rglob("*.*"))
    assert [p.name for p in direct] == [p.name for p in remote] and len(direct) >= 2
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(direct, remote))
    assert sorted(copies) == sorted({p.with_suffix("").name for p in remote})


def test_a_changed_video_stops_a_rerun(tmp_path):
    inputs = tmp_path / "videos"
    inputs.mkdir()
    _still_video(inputs / "one.mp4")
    cfg = config_lib.get_config()
    cfg.hands.backend = "precomputed"
    cfg.hands.path = str(tmp_path / "none_{video_id}.npz")  # no hands file: the clip fails, the plan is kept
    cfg.caption.backend = "none"
    run_lib.label(str(inputs), str(tmp_path / "out"), cfg)
    run_lib.label(str(inputs), str(tmp_path / "out"), cfg)  # unchanged: fine
    _still_video(inputs / "one.mp4", frames=9)
    with pytest.raises(graph.VideoChanged, match=r"one.mp4 changed since its results .* use a new --output"):
        run_lib.label(str(inputs), str(tmp_path / "out"), cfg)
