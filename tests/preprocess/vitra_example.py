"""The official VITRA example of the fixtures: its episode (`.npz` + `.json`) and its 480x368 video."""

import json
from pathlib import Path

import cv2
import numpy as np

from vitra_jax.handspace.episode import from_vitra

STEM = "Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example"
VIDEO = "03cc49c3-a7d1-445b-9a2a-545c4fae6843.mp4"
W, H = 480, 368


def video_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "videos" / VIDEO


def arrays(fixtures_dir: Path) -> dict[str, np.ndarray]:
    """The episode's arrays by their `.npz` names ('extrinsics', 'right/joints_worldspace', ...)."""
    with np.load(fixtures_dir / "videos" / f"{STEM}.npz") as z:
        return {k: z[k] for k in z.files}


def meta(fixtures_dir: Path) -> dict:
    """The episode's `.json` fields."""
    return json.loads((fixtures_dir / "videos" / f"{STEM}.json").read_text())


def episode(fixtures_dir: Path):
    """The example as a `handspace.episode.Episode` of its video."""
    a, d = arrays(fixtures_dir), meta(fixtures_dir)
    for key in ("extrinsics", "intrinsics", "video_decode_frame"):
        d[key] = a[key]
    for hand in ("left", "right"):
        d[hand] = {f.split("/", 1)[1]: v for f, v in a.items() if f.startswith(hand + "/")}
    return from_vitra(d, video=str(video_path(fixtures_dir)))


def decode_rgb(path) -> np.ndarray:
    """Every frame of a video, (T, H, W, 3) RGB, by OpenCV's plain sequential reader (not preprocess.video)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return np.stack(frames)
