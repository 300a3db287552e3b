"""WiLoR (and HaMeR) per-detection results -> CamHands.

WiLoR's demo gives, per detected hand: `is_right`, MANO parameters `global_orient` (1,3,3), `hand_pose`
(15,3,3) and `betas` (10,) as rotation matrices, and `pred_cam_t_full` (3,), the camera translation for a
camera of focal 5000/256 · max(W, H) centred on the image. A left hand is reconstructed from the flipped
crop as a right hand and its vertices/joints get x negated afterwards:
    joints_left = mirror(MANO_R(R, θ, β) joints) + cam_t.
In our convention (see `mano_params`) that is orient = M·R·M (the root un-flipped), hand_pose = θ (right-hand
form kept, as VITRA does) and wrist = mirror(J0(β)) + cam_t; a right hand keeps R and has wrist J0(β) + cam_t.
Then the hand is moved from WiLoR's camera to ours (`mano_params.refocus`).

WiLoR writes no parameter file of its own; `read_json` takes the detections as a JSON document
{"image_size": [W, H], "focal_length": F (optional), "frames": [[detection, ...] per frame]} with each
detection holding the keys above (nested lists) and optionally `score`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from preprocess.errors import HandsFileError
from preprocess.hands.mano_model import ManoRight
from preprocess.hands.mano_params import MIRROR, camhand_from_params, refocus
from preprocess.records import HANDS, CamHands


class WilorError(HandsFileError):
    """WiLoR detections that are missing or malformed."""


def wilor_focal(width: int, height: int) -> float:
    """WiLoR's full-image focal length: FOCAL_LENGTH 5000 at its 256 px crop, scaled to the longer side."""
    return 5000.0 / 256.0 * max(width, height)


def from_detections(frames: list[list[dict]], image_size: tuple[int, int], k: np.ndarray, model: ManoRight,
                    focal: float | None = None) -> CamHands:
    """CamHands from per-frame lists of WiLoR detections (the most confident one per hand and frame)."""
    width, height = image_size
    f = focal if focal is not None else wilor_focal(width, height)
    k_wilor = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    n = len(frames)
    hands = {}
    for hand in HANDS:
        orient = np.tile(np.eye(3), (n, 1, 1))
        pose = np.tile(np.eye(3), (n, 15, 1, 1))
        transl, betas, score = np.zeros((n, 3)), np.zeros((n, 10)), np.zeros(n)
        kept = np.zeros(n, bool)
        for t, dets in enumerate(frames):
            for det in dets:
                try:
                    if bool(np.asarray(det["is_right"]).reshape(())) != (hand == "right"):
                        continue
                    s = float(det.get("score", 1.0))
                    if kept[t] and score[t] >= s:
                        continue
                    root = np.asarray(det["global_orient"], np.float64).reshape(3, 3)
                    orient[t] = root if hand == "right" else MIRROR @ root @ MIRROR
                    pose[t] = np.asarray(det["hand_pose"], np.float64).reshape(15, 3, 3)
                    betas[t] = np.asarray(det["betas"], np.float64).reshape(10)
                    transl[t] = np.asarray(det["pred_cam_t_full"], np.float64).reshape(3)
                except (KeyError, ValueError, TypeError) as e:
                    raise WilorError(f"frame {t}: malformed WiLoR detection ({type(e).__name__}: {e})") from None
                score[t], kept[t] = s, True
        cam = camhand_from_params(model, hand, orient, pose, transl, betas, kept, score)
        hands[hand] = refocus(cam, k_wilor, np.asarray(k, np.float64))
    return CamHands(hands=hands, backend="wilor", version="detections")


def _load(path: str | Path) -> tuple[list[list[dict]], tuple[int, ...], float | None]:
    """A WiLoR detections JSON (format in the module doc) as (frames, image_size, focal_length or None)."""
    try:
        d = json.loads(Path(path).read_text())
        return d["frames"], tuple(int(x) for x in d["image_size"]), d.get("focal_length")
    except FileNotFoundError:
        raise WilorError(f"WiLoR detections file not found: {path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise WilorError(f"{path}: not a WiLoR detections file ({type(e).__name__}: {e})") from None


def read_json(path: str | Path, k: np.ndarray, model: ManoRight) -> CamHands:
    """CamHands from a JSON file of WiLoR detections (format in the module doc)."""
    frames, size, focal = _load(path)
    return from_detections(frames, size, k, model, focal)


class WilorBackend:
    """`HandBackend` over a WiLoR detections JSON of one video: frames [start, start + len(frames)).

    The JSON's `image_size` is the size WiLoR saw; if the frames are resized, the intrinsics passed to
    `estimate` are taken back to that size first (pixels scale, the view does not change).
    """

    name = "wilor"
    version = "detections"

    def __init__(self, path: str | Path, mano_dir: str | Path, *, start: int = 0):
        from preprocess.hands.mano_model import load_mano

        self.path, self.start = Path(path), start
        self.model = load_mano(mano_dir)
        if not self.path.is_file():
            raise WilorError(f"WiLoR detections file not found: {path}")

    def video_hands(self, intrinsics) -> CamHands:
        """Every frame of the file, in the camera of `intrinsics` (at the size of the frames)."""
        detections, size, focal = _load(self.path)
        scale = intrinsics.width / float(size[0])
        k = np.asarray(intrinsics.k, np.float64) * [[1 / scale], [1 / scale], [1.0]]
        return from_detections(detections, size, k, self.model, focal)

    def estimate(self, frames: np.ndarray, intrinsics) -> CamHands:
        from preprocess.hands.precomputed import slice_frames

        return slice_frames(self.video_hands(intrinsics), self.start, self.start + len(frames))
