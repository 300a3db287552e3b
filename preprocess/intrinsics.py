"""Camera intrinsics of a video and undistortion of its frames (VITRA §III stage 2).

Every backend has `estimate(info, frames) -> Intrinsics`; K is in the pixels of the video at its own size
(`info.width × info.height`), principal point convention cx = W/2 as in the VITRA release. The learned
calibrators run elsewhere; these classes read their documented outputs:

- `FovPrior(fov_x_deg)`: no file; f = 0.5·W / tan(fov_x/2) for both axes, principal point at the centre.
- `DroidCalibReader(path)`: the text DroidCalib's `demo.py --opt_intr` prints (its last
  "Estimated intrinsics:" line, `fx = …, fy = …, ppx = …, ppy = …[, xi = …]`, already rescaled to the
  input images; give `image_size` when those were not at the video's size), or one line of 4 or 5
  numbers `fx fy ppx ppy [xi]`. With xi (its `mei` camera model, the
  unified model without lens terms) frames are undistorted to the pinhole K_new = diag(f/(1+xi)) at the
  image centre, which keeps the image scale at the principal point.
- `MoGeReader(path)`: MoGe-2's `fov.json` (`{"fov_x": deg, "fov_y": deg}`, written per image by
  `moge infer --maps`), a folder of such per-frame outputs (median FoV, as VITRA's HaWoR wrapper does), or a
  `.npy` of normalised intrinsics (3, 3) or (N, 3, 3) (`model.infer(...)["intrinsics"]`: fx/W, fy/H,
  cx = cy = 0.5; median over N).
- `GeoCalibReader(path)`: a JSON camera of GeoCalib, either its dict form (`Camera.from_dict` keys:
  `width`, `height`, `f` or `vfov` (radians), optional `cx`, `cy`, `k1`) or the tensor form
  `{"camera": [w, h, fx, fy, cx, cy(, k1)]}`, with `camera_model` 'pinhole' | 'simple_radial' |
  'simple_divisional' (default pinhole). A list of cameras (one per frame) gives their per-parameter
  median. Distorted frames are undistorted to the pinhole of the same K, as GeoCalib's `undistort_image`.
- `Ego4DOmnidirReader(path)`: VITRA-1M's Ego4D `intrinsics/{video}.npy` (handspace.omnidir): K =
  `intrinsics_new.K`; the raw frames are undistorted only when xi > 0, as the release does.
A camera estimated at another image size is rescaled to the video's (same aspect ratio required).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np

from preprocess.errors import StageError
from preprocess.records import Intrinsics, VideoInfo
from vitra_jax.handspace import omnidir
from vitra_jax.handspace.episode import EpisodeError


class IntrinsicsError(StageError):
    """An intrinsics file that cannot be used."""


def pinhole_k(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def focal_from_fov(fov_deg: float, size: int) -> float:
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


def _rescale(k: np.ndarray, from_size: tuple[float, float], info: VideoInfo, path) -> np.ndarray:
    w, h = from_size
    if abs(w - info.width) < 0.5 and abs(h - info.height) < 0.5:
        return k
    if abs(w / h - info.width / info.height) > 0.01 * info.width / info.height:
        raise IntrinsicsError("size_mismatch", f"{path}: camera of a {w:g}×{h:g} image for a "
                                               f"{info.width}×{info.height} video (other aspect ratio)")
    k = k.copy()
    k[0] *= info.width / w
    k[1] *= info.height / h
    return k


class FovPrior:
    """A fixed horizontal field of view (no estimation), e.g. the typical FoV of a camera model."""

    name = "fov_prior"

    def __init__(self, fov_x_deg: float = 90.0):
        if not 0 < fov_x_deg < 180:
            raise ValueError(f"fov_x_deg must be in (0, 180), got {fov_x_deg}")
        self.fov_x_deg = fov_x_deg

    def estimate(self, info: VideoInfo, frames=None) -> Intrinsics:
        f = focal_from_fov(self.fov_x_deg, info.width)
        return Intrinsics(k=pinhole_k(f, f, info.width / 2, info.height / 2), width=info.width,
                          height=info.height, source="fov_prior")


def _read_text(path) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise IntrinsicsError("unreadable_intrinsics", f"{path}: {type(e).__name__}: {e}") from None


_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_DROID_LINE = re.compile(rf"fx = {_NUM}, fy = {_NUM}, ppx = {_NUM}, ppy = {_NUM}(?:, xi = {_NUM})?")


class DroidCalibReader:
    """DroidCalib's printed estimate (see the module docstring for the accepted text)."""

    name = "droidcalib"

    def __init__(self, path: str | Path, image_size: tuple[int, int] | None = None):
        self.path = path
        self.image_size = image_size  # (w, h) of the images DroidCalib saw, when not the video's size

    def parse(self) -> tuple[np.ndarray, float | None]:
        """(fx, fy, ppx, ppy) and xi (None for the pinhole/focal models)."""
        text = _read_text(self.path)
        _, sep, estimated = text.rpartition("Estimated intrinsics:")
        lines = _DROID_LINE.findall(estimated) if sep else []
        if lines:
            values = [float(v) for v in lines[0] if v != ""]
        else:
            try:
                values = [float(v) for v in text.split()]
            except ValueError:
                values = []
            if len(values) not in (4, 5):
                raise IntrinsicsError("bad_intrinsics", f"{self.path}: no 'Estimated intrinsics:' line "
                                                        "'fx = …, fy = …, ppx = …, ppy = …[, xi = …]' and not "
                                                        "4 or 5 numbers 'fx fy ppx ppy [xi]'")
        params = np.asarray(values[:4])
        xi = values[4] if len(values) == 5 else None
        if not np.all(np.isfinite(values)) or params[0] <= 0 or params[1] <= 0 or (xi is not None and xi < 0):
            raise IntrinsicsError("bad_intrinsics", f"{self.path}: implausible values {values}")
        return params, xi

    def estimate(self, info: VideoInfo, frames=None) -> Intrinsics:
        (fx, fy, cx, cy), xi = self.parse()
        raw = pinhole_k(fx, fy, cx, cy)
        if self.image_size is not None:
            raw = _rescale(raw, self.image_size, info, self.path)
            (fx, _, cx), (_, fy, cy) = raw[0], raw[1]
        if not xi:
            return Intrinsics(k=raw, width=info.width, height=info.height, source="droidcalib")
        new_k = pinhole_k(fx / (1 + xi), fy / (1 + xi), info.width / 2, info.height / 2)
        return Intrinsics(k=new_k, width=info.width, height=info.height, source="droidcalib",
                          distortion={"model": "omnidir", "k": raw, "d": np.zeros(4), "xi": float(xi)})


class MoGeReader:
    """MoGe-2 field of view / normalised intrinsics (see the module docstring for the accepted files)."""

    name = "moge"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _fovs(self) -> np.ndarray:
        files = sorted(self.path.rglob("fov.json")) if self.path.is_dir() else [self.path]
        if not files:
            raise IntrinsicsError("missing_intrinsics", f"{self.path}: no fov.json inside")
        fovs = []
        for f in files:
            try:
                d = json.loads(_read_text(f))
                fovs.append((float(d["fov_x"]), float(d["fov_y"])))
            except (ValueError, KeyError, TypeError) as e:
                raise IntrinsicsError("bad_intrinsics", f"{f}: expected {{'fov_x': deg, 'fov_y': deg}}: "
                                                        f"{type(e).__name__}: {e}") from None
        return np.asarray(fovs)

    def estimate(self, info: VideoInfo, frames=None) -> Intrinsics:
        if self.path.suffix == ".npy":
            try:
                norm = np.load(self.path, allow_pickle=False).astype(np.float64)
            except (OSError, ValueError) as e:
                raise IntrinsicsError("unreadable_intrinsics", f"{self.path}: {type(e).__name__}: {e}") from None
            if norm.shape[-2:] != (3, 3) or norm.ndim > 3:
                raise IntrinsicsError("bad_intrinsics", f"{self.path}: expected (3, 3) or (N, 3, 3), got {norm.shape}")
            norm = np.median(norm.reshape(-1, 3, 3), axis=0)
            fx, fy, cx, cy = norm[0, 0] * info.width, norm[1, 1] * info.height, norm[0, 2], norm[1, 2]
            if not (fx > 0 and fy > 0 and abs(cx - 0.5) < 0.05 and abs(cy - 0.5) < 0.05):
                raise IntrinsicsError("bad_intrinsics", f"{self.path}: not normalised intrinsics (fx/W, fy/H, "
                                                        f"cx = cy = 0.5): {norm.tolist()}")
            k = pinhole_k(fx, fy, cx * info.width, cy * info.height)
        else:
            fov = np.median(self._fovs(), axis=0)
            if not np.all((fov > 0) & (fov < 180)):
                raise IntrinsicsError("bad_intrinsics", f"{self.path}: field of view {fov.tolist()} deg")
            k = pinhole_k(focal_from_fov(fov[0], info.width), focal_from_fov(fov[1], info.height),
                          info.width / 2, info.height / 2)
        return Intrinsics(k=k, width=info.width, height=info.height, source="moge")


GEOCALIB_MODELS = ("pinhole", "simple_radial", "simple_divisional")


def _geocalib_params(d: dict, path) -> tuple[str, np.ndarray]:
    """(model, [w, h, fx, fy, cx, cy, k1]) of one GeoCalib camera dict."""
    model = d.get("camera_model", "pinhole")
    if model not in GEOCALIB_MODELS:
        raise IntrinsicsError("bad_intrinsics", f"{path}: camera_model {model!r} not in {GEOCALIB_MODELS}")
    if "camera" in d:
        values = [float(v) for v in np.asarray(d["camera"], np.float64).reshape(-1)]
        if len(values) not in (6, 7, 8):
            raise IntrinsicsError("bad_intrinsics", f"{path}: 'camera' needs [w, h, fx, fy, cx, cy(, k1)]")
        w, h, fx, fy, cx, cy = values[:6]
        k1 = values[6] if len(values) > 6 else 0.0
    else:
        w, h = float(d["width"]), float(d["height"])
        f = float(d["f"]) if "f" in d else 0.5 * h / math.tan(float(d["vfov"]) / 2)
        fx = fy = f
        cx, cy = float(d.get("cx", w / 2)), float(d.get("cy", h / 2))
        k1 = float(d.get("k1", 0.0))
    return model, np.array([w, h, fx, fy, cx, cy, k1])


class GeoCalibReader:
    """GeoCalib's camera as JSON (see the module docstring for the accepted forms)."""

    name = "geocalib"

    def __init__(self, path: str | Path):
        self.path = path

    def estimate(self, info: VideoInfo, frames=None) -> Intrinsics:
        try:
            d = json.loads(_read_text(self.path))
            cams = [_geocalib_params(c, self.path) for c in (d if isinstance(d, list) else [d])]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, IntrinsicsError):
                raise
            raise IntrinsicsError("bad_intrinsics", f"{self.path}: not a GeoCalib camera: "
                                                    f"{type(e).__name__}: {e}") from None
        if not cams or len({m for m, _ in cams}) != 1:
            raise IntrinsicsError("bad_intrinsics", f"{self.path}: no camera, or cameras of several models")
        model = cams[0][0]
        w, h, fx, fy, cx, cy, k1 = np.median(np.stack([p for _, p in cams]), axis=0)
        if not (w > 0 and h > 0 and fx > 0 and fy > 0 and np.isfinite(k1)):
            raise IntrinsicsError("bad_intrinsics", f"{self.path}: implausible camera {[w, h, fx, fy, cx, cy, k1]}")
        k = _rescale(pinhole_k(fx, fy, cx, cy), (w, h), info, self.path)
        distortion = {"model": "none"} if model == "pinhole" or k1 == 0 else {"model": model, "k": k, "k1": k1}
        return Intrinsics(k=k, width=info.width, height=info.height, source="geocalib", distortion=distortion)


class Ego4DOmnidirReader:
    """VITRA-1M's Ego4D omnidirectional calibration `.npy` (DroidCalib's Mei model plus lens terms)."""

    name = "ego4d_omnidir"

    def __init__(self, path: str | Path):
        self.path = path

    def estimate(self, info: VideoInfo, frames=None) -> Intrinsics:
        try:
            cam = omnidir.load_intrinsics(self.path)
        except EpisodeError as e:
            raise IntrinsicsError(e.reason, str(e)) from None
        # The release gives raw and new K for the video at its own size (principal point near the centre).
        size = (2 * cam.new_k[0, 2], 2 * cam.new_k[1, 2])
        k = _rescale(cam.new_k, size, info, self.path)
        distortion = {"model": "none"}
        if cam.needs_undistortion:
            raw = _rescale(cam.k, size, info, self.path)
            distortion = {"model": "omnidir", "k": raw, "d": cam.d.copy(), "xi": cam.xi}
        return Intrinsics(k=k, width=info.width, height=info.height, source="droidcalib", distortion=distortion)


def _distort_geocalib(m: np.ndarray, model: str, k1: float) -> np.ndarray:
    """GeoCalib's distortion of undistorted normalised points (..., 2)."""
    r2 = np.sum(m * m, -1, keepdims=True)
    if model == "simple_radial":
        return m * (1 + k1 * r2)
    # simple_divisional: the inverse of x_u = x_d / (1 + k1 r_d²)
    denom = 2 * k1 * r2
    radial = np.where(denom == 0, 1.0, (1 - np.sqrt(np.clip(1 - 4 * k1 * r2, 0, None))) /
                      np.where(denom == 0, 1.0, denom))
    return m * radial


def undistort_maps(intrinsics: Intrinsics, width: int, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """float32 maps (H, W) for frames of width × height: the raw pixel seen by each pinhole pixel of
    `intrinsics.k` (both scaled to that size); None when the frames need no undistortion."""
    dist = intrinsics.distortion
    model = dist.get("model", "none")
    if model == "none":
        return None
    sx, sy = width / intrinsics.width, height / intrinsics.height
    scale = np.array([[sx], [sy], [1.0]])
    new_k = intrinsics.k * scale
    raw_k = np.asarray(dist["k"], np.float64) * scale
    if model == "omnidir":
        cam = omnidir.OmnidirIntrinsics(k=raw_k, d=np.asarray(dist["d"], np.float64), xi=float(dist["xi"]),
                                        new_k=new_k)
        return omnidir.undistort_maps(cam, width, height)
    if model in ("simple_radial", "simple_divisional"):
        j, i = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        rays = np.stack([j, i, np.ones_like(j)], -1) @ np.linalg.inv(new_k).T
        md = _distort_geocalib(rays[..., :2] / rays[..., 2:], model, float(dist["k1"]))
        uv = md @ raw_k[:2, :2].T + raw_k[:2, 2]
        return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)
    raise IntrinsicsError("bad_intrinsics", f"unknown distortion model {model!r}")


_MAPS: dict[tuple, tuple | None] = {}  # a few videos' fixed-point maps, per process (1080p maps take ~1 s)


def _key(intrinsics: Intrinsics, width: int, height: int) -> tuple:
    def frozen(v):
        return tuple(np.asarray(v, np.float64).ravel().tolist()) if isinstance(v, np.ndarray | list) else v
    dist = tuple(sorted((k, frozen(v)) for k, v in intrinsics.distortion.items()))
    return (frozen(intrinsics.k), intrinsics.width, intrinsics.height, dist, width, height)


def undistort(frames: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Raw frames (T, H, W, 3) -> the pinhole frames of `intrinsics.k` (same size; bicubic, black outside the
    raw image, as the release's undistortion). Frames at another size than `intrinsics` use both cameras
    scaled to their size. Frames without distortion are returned as they are."""
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    key = _key(intrinsics, width, height)
    if key not in _MAPS:
        maps = undistort_maps(intrinsics, width, height)
        if len(_MAPS) >= 4:
            _MAPS.pop(next(iter(_MAPS)))
        _MAPS[key] = None if maps is None else cv2.convertMaps(maps[0], maps[1], cv2.CV_16SC2)
    maps = _MAPS[key]
    if maps is None:
        return frames
    return np.stack([cv2.remap(f, maps[0], maps[1], interpolation=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_CONSTANT) for f in frames])
