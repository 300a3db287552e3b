"""Pictures of an episode for people to check: its frames with the palm's future path drawn, captions below.

`render_preview(episode, video, out, fmt='png')` writes a strip of 8 evenly sampled frames (2 rows of 4),
exactly the overlay the captioner saw for the main hand; `fmt='mp4'` writes every episode frame. The
caption(s) go on a dark band under the picture. Files are written atomically (local paths or epath URIs).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import cv2
import numpy as np
from etils import epath

from preprocess import store, video
from preprocess.caption import overlay
from vitra_jax.handspace import geometry
from vitra_jax.handspace.episode import Episode

FORMATS = ("png", "mp4")
MAX_WIDTH = 480  # preview frames are scaled down to this width
STRIP_FRAMES, STRIP_COLUMNS = 8, 4
BAND = 24  # pixels of caption band per text line
FONT = cv2.FONT_HERSHEY_SIMPLEX


def caption_lines(ep: Episode) -> list[str]:
    """One line per hand with text: 'right [0, 25): Pick up the spray bottle.' (ASCII only, for cv2 fonts)."""
    lines = []
    for hand in sorted(ep.text, key=lambda h: h != ep.main_hand):
        for text, (s, e) in ep.text[hand]:
            if e > s:
                lines.append(f"{hand} [{s}, {e}): {text}".encode("ascii", "replace").decode())
    return lines or [f"{ep.main_hand}: (no caption)"]


def add_band(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """`image` with a dark band of text lines below it; total height rounded up to even (video codecs)."""
    h, w = image.shape[:2]
    height = h + BAND * len(lines)
    height += height % 2
    out = np.zeros((height, w + w % 2, 3), np.uint8)
    out[:h, :w] = image
    scale = 0.45
    for i, line in enumerate(lines):
        cv2.putText(out, line, (6, h + BAND * i + 17), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _frames_and_k(ep: Episode, video_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Episode frames (T, h, w, 3) RGB at preview size and the intrinsics of those pixels."""
    idx = np.asarray(ep.frame_index)
    frames = video.read_frames(video_path, int(idx[0]), int(idx[-1]) + 1, max_width=MAX_WIDTH)[idx - idx[0]]
    h, w = frames.shape[1:3]
    return frames, geometry.resize_intrinsics(ep.intrinsics, w, h)


def overlaid(ep: Episode, frames: np.ndarray, k: np.ndarray, hands: Sequence[str], at: Sequence[int]) -> list:
    """Frames `at` (episode rows) with the future palm path of each of `hands` to the episode end."""
    n = len(ep)
    palms = {h: overlay.palm_positions(ep.hands[h]) for h in hands}
    out = []
    for t in at:
        image = frames[t]
        for h in hands:
            uv, valid = overlay.future_path(palms[h], ep.hands[h].kept, ep.extrinsics, k, int(t), n)
            image = overlay.draw_path(image, uv, valid)
        out.append(image)
    return out


def render_preview(episode: Episode, video_path: str | os.PathLike, out_path: str | os.PathLike, *,
                   fmt: str = "png", hands: Sequence[str] | None = None) -> epath.Path:
    """Write the preview of `episode` (decoded from `video_path`) to `out_path`; returns that path.

    `hands`: whose paths to draw (default: the main hand, as captioned).
    """
    if fmt not in FORMATS:
        raise ValueError(f"preview format must be one of {FORMATS}, got {fmt!r}")
    hands = tuple(hands) if hands is not None else (episode.main_hand,)
    unknown = [h for h in hands if h not in episode.hands]
    if unknown:
        raise ValueError(f"unknown hands {unknown}; the episode has {sorted(episode.hands)}")
    frames, k = _frames_and_k(episode, video_path)
    lines = caption_lines(episode)
    out_path = epath.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        at = overlay.sample_frames(0, len(episode), STRIP_FRAMES)
        tiles = overlaid(episode, frames, k, hands, at)
        rows = [np.concatenate(tiles[i:i + STRIP_COLUMNS], axis=1) for i in range(0, len(tiles), STRIP_COLUMNS)]
        ok, png = cv2.imencode(".png", cv2.cvtColor(add_band(np.concatenate(rows, 0), lines), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding of the preview failed")
        store.atomic_write(out_path, png.tobytes())
    else:
        images = [add_band(im, lines) for im in overlaid(episode, frames, k, hands, range(len(episode)))]
        store.atomic_write(out_path, encode_mp4(images, episode.fps))
    return out_path


def encode_mp4(images: Sequence[np.ndarray], fps: float) -> bytes:
    """MPEG-4 (mp4v) bytes of RGB frames of one size, via a local temporary file (cv2 writes only files)."""
    h, w = images[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "preview.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise RuntimeError("this OpenCV build cannot write mp4v video")
        try:
            for image in images:
                writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        with open(path, "rb") as f:
            return f.read()
