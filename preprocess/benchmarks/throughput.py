"""Labeling throughput per CPU core: the model-free stages in video-seconds per wall-second, the CPU hand
backend in frames per second.

    python -m preprocess.benchmarks.throughput [--minutes 10] [--mano_dir DIR] [--hand_frames 60]

One thread everywhere (OpenCV, torch), so the figures are per core; a machine labels N times faster with N
worker processes. Inputs are the real fixture videos (`../shared/fixtures/videos`, or $VITRA_FIXTURES):
- decode: `video.read_frames` of both clips at their own size (1080p and 480×368);
- flow check: `camera_motion.classify` on the decoded clips; it analyses at most `max_pairs` (16) frame
  pairs per clip whatever its length, so the chained figure uses a 20 s clip at the slower measured cost
  per pair;
- geometry: per-clip intrinsics (FoV prior), recombination of clip hands and cameras (`video.stitch`,
  `camera_pose.stitch_poses` with Sim(3) alignment on each overlap) and world-space hands, on a long video
  made by playing the official VITRA episode's camera-space hands and cameras forwards and backwards
  (`--minutes`, 20 s clips with 2 s overlap);
- segmentation: `segment.segment` of both hands of that video;
- episode writing: `writer.build_episode` + `writer.write` of every segment (npz + json, local disk);
- hands: the MediaPipe backend (MediaPipe in its own venv, PnP, MANO fit) on the VITRA clip and the first
  `--hand_frames` frames of the HaWoR clip at 640 px; without `--mano_dir` a synthetic MANO file (same
  shapes as the real one, so the same cost) is used.
Goal: model-free stages together ≥ 100× real time per core.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from preprocess import backends, camera_motion, camera_pose, graph, intrinsics, records, segment, video, writer
from vitra_jax.handspace.episode import load_vitra_npy

FIXTURES = Path(os.environ.get("VITRA_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures"))
VITRA = "03cc49c3-a7d1-445b-9a2a-545c4fae6843"
HAWOR = "hawor_video_0"
GOAL = 100.0


def _timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ping_pong(n: int, length: int) -> np.ndarray:
    """Indices 0..n-1, n-2..1, 0.. repeated up to `length` (a continuous back-and-forth replay)."""
    cycle = np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)])
    return np.resize(cycle, length)


def long_video(minutes: float, fps: float = 30.0):
    """Info, clips, per-clip CamHands, per-clip camera poses and intrinsics of a replayed official episode."""
    d = load_vitra_npy(FIXTURES / "videos" / f"Ego4D_{VITRA}_ep_example.npy")
    n = int(minutes * 60 * fps)
    idx = ping_pong(len(d["extrinsics"]), n)
    info = records.VideoInfo(path=str(FIXTURES / "videos" / f"{VITRA}.mp4"), video_id="replay", fps=fps,
                             width=480, height=368, num_frames=n)
    clips = video.plan_clips(info, 20.0, 2.0)
    right = d["right"]
    joints = np.asarray(right["joints_camspace"])[idx]
    hand = dict(kept=np.ones(n, bool), wrist=joints[:, 0], orient=np.asarray(right["global_orient_camspace"])[idx],
                hand_pose=np.asarray(right["hand_pose"])[idx], joints=joints, beta=np.asarray(right["beta"]),
                score=np.ones(n))
    c2w = np.linalg.inv(np.asarray(d["extrinsics"], np.float64)[idx])
    cams, poses = [], []
    for c in clips:
        sl = slice(c.start, c.stop)
        part = {k: (v[sl] if k != "beta" else v) for k, v in hand.items()}
        cams.append(records.CamHands(hands={h: records.CamHand(**part) for h in records.HANDS}, backend="replay",
                                     version="0"))
        local = c2w[sl]
        local = np.linalg.inv(local[0]) @ local  # each clip's world is its own first camera, as a SLAM's is
        poses.append(records.CameraPoses(extrinsics=np.linalg.inv(local), source="megasam", scale_known=True))
    return info, clips, cams, poses


def model_free(minutes: float, max_pairs: int | None = None) -> list[tuple[str, float, float]]:
    """(stage, seconds, video seconds) per model-free stage."""
    rows = []
    frames = {}
    for name in (VITRA, HAWOR):
        path = str(FIXTURES / "videos" / f"{name}.mp4")
        info = video.probe(path)
        secs, frames[name] = _timed(lambda p=path, i=info: video.read_frames(p, 0, i.num_frames))
        rows.append((f"decode {name[:8]} ({info.width}x{info.height})", secs, info.num_frames / info.fps))
    config = camera_motion.CameraMotionConfig()
    if max_pairs:
        config = camera_motion.CameraMotionConfig(**{**dataclasses.asdict(config), "max_pairs": max_pairs})
    per_pair = []
    for name, f in frames.items():
        secs, motion = _timed(lambda f=f: camera_motion.classify(f, config=config), repeats=2)
        per_pair.append(secs / motion.stats["pairs"])
        rows.append((f"flow check {name[:8]} ({motion.stats['pairs']} pairs)", secs, len(f) / 30.0))
    # A clip analyses at most max_pairs pairs whatever its length: the cost of a 20 s clip.
    rows.append((f"flow check, 20 s clip ({config.max_pairs} pairs)", config.max_pairs * max(per_pair), 20.0))

    info, clips, cams, poses = long_video(minutes)
    duration = info.num_frames / info.fps

    def geometry():
        for _ in clips:
            intrinsics.FovPrior(90.0).estimate(info)
        stitched = graph.stitch_hands(clips, cams)
        world_poses = camera_pose.stitch_poses(clips, poses)
        return world_poses, camera_pose.world_hands(stitched, world_poses)

    secs, (world_poses, tracks) = _timed(geometry)
    rows.append((f"geometry ({len(clips)} clips)", secs, duration))
    config = segment.SegmentConfig()
    secs, segs = _timed(lambda: [s for h in records.HANDS for s in segment.segment(tracks[h], info.fps, h,
                                                                                        config=config)[0]])
    rows.append((f"segmentation ({len(segs)} segments)", secs, duration))
    intr = intrinsics.FovPrior(90.0).estimate(info)
    captions = {h: [records.Caption(s.hand, s.start, s.stop, "Pick up the bottle.", "gpt-4.1", "v1")
                    for s in segs if s.hand == h] for h in records.HANDS}
    with tempfile.TemporaryDirectory() as tmp:
        def write_all():
            for s in segs:
                ep = writer.build_episode(info=info, segment=s, tracks=tracks, extrinsics=world_poses.extrinsics,
                                          intrinsics=intr, camera_motion="moving", captions=captions,
                                          labeler_versions={"hands": "replay"}, source="bench")
                writer.write(writer.episode_path(tmp, info.video_id, s.hand, s.start), ep)
        secs, _ = _timed(write_all)
    rows.append((f"episode writing ({len(segs)} episodes)", secs, duration))
    return rows


def hand_backend(mano_dir: str | None, hand_frames: int) -> list[tuple[str, dict]]:
    from preprocess.hands.mediapipe_backend import MediaPipeBackend

    with tempfile.TemporaryDirectory() as tmp:
        if mano_dir is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
            from tests.preprocess.mano_synthetic import write_synthetic_mano
            mano = write_synthetic_mano(Path(tmp) / "mano")
            mano_dir = str(mano.parent if mano.is_file() else mano)
        rows = []
        with MediaPipeBackend(mano_dir) as backend:
            for name, max_width, n in ((VITRA, None, 25), (HAWOR, 640, hand_frames)):
                path = str(FIXTURES / "videos" / f"{name}.mp4")
                info = video.probe(path)
                frames = video.read_frames(path, 0, min(n, info.num_frames), max_width=max_width)
                k = backends.frame_intrinsics(intrinsics.FovPrior(90.0).estimate(info), frames)
                backend.estimate(frames[:2], k)  # start the MediaPipe process outside the timing
                fps = backend.frames_per_second(frames, k)
                rows.append((f"{name[:8]} {frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames", fps))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the replayed long video")
    parser.add_argument("--mano_dir", default=None, help="folder with MANO_RIGHT.pkl (default: synthetic)")
    parser.add_argument("--hand_frames", type=int, default=60, help="HaWoR frames for the hand backend")
    parser.add_argument("--max_pairs", type=int, default=None, help="flow check frame pairs per clip")
    parser.add_argument("--skip_hands", action="store_true")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rows = model_free(args.minutes, args.max_pairs)
    print(f"{'stage (1 core)':42} {'wall s':>8} {'video s':>8} {'× real time':>12}")
    for name, secs, dur in rows:
        print(f"{name:42} {secs:8.3f} {dur:8.1f} {dur / secs:12.0f}")
    # Model-free stages chained: one video-second costs the sum of each stage's cost per video-second.
    chained = [r for r in rows if r[0].startswith(("flow check, 20 s", "geometry", "segmentation", "episode"))]
    cost = sum(secs / dur for _, secs, dur in chained)
    decode = [r for r in rows if r[0].startswith("decode")]
    with_decode = cost + sum(secs for _, secs, _ in decode) / sum(dur for _, _, dur in decode)
    print(f"{'model-free stages chained (no decode)':42} {'':8} {'':8} {1 / cost:12.0f}"
          f"  (goal ≥ {GOAL:.0f}×: {'met' if 1 / cost >= GOAL else 'NOT met'})")
    print(f"{'  with decoding (both clips, source size)':42} {'':8} {'':8} {1 / with_decode:12.0f}")
    if not args.skip_hands:
        print(f"\n{'MediaPipe hand backend (1 core)':42} {'frames/s':>8} {'detect':>8} {'fit':>8}")
        for name, fps in hand_backend(args.mano_dir, args.hand_frames):
            print(f"{name:42} {fps['total']:8.1f} {fps['detect']:8.1f} {fps['fit']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
