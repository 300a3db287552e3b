"""Trajectory-aware augmentation of one training sample (VITRA §3.4), numpy + OpenCV only.

A virtual camera looks at a random point of the source view (rotation R through the sampled centre, a
random in-plane roll, a random horizontal flip M = diag(−1, 1, 1)) with a random field of view and aspect
ratio; the image is perspective-warped into it and everything 3-D follows: positions R·t, absolute
rotations R·Rot·M, delta rotations R·ΔR·Rᵀ, fingers unchanged; a flip also swaps the hands (values, masks,
words, main hand). The crop keeps the main hand's future palm path in view. Then colour jitter (smaller hue
shifts when the caption names a colour) and state dropout. A sample whose view cannot be built falls back to
a centre crop of the short side, flagged by `augment_fallback`.

Pixel coordinates follow the release: intrinsics map a point to continuous coordinates in which pixel (i, j)
covers [i, i+1) × [j, j+1) (its centre is at i + 0.5). Normalized intrinsics divide them by width/height.

Deliberate differences from the release (`augment_utils.py`; details in docs/data.md):
- intrinsics are normalized by the image size, not by twice the principal point (equal when it is centred);
- the source is pre-shrunk with INTER_AREA (release: PIL LANCZOS, also antialiasing) only when the view is
  coarser than the source, then warped once with `cv2.warpPerspective(INTER_LANCZOS4)`; the release always
  resizes (also up) before `cv2.remap(INTER_LANCZOS4)`;
- colour jitter (`color_jitter`) draws from the caller's generator (the release: from an unseeded one);
- palm points are projected without rounding to whole pixels; an empty palm path means no constraint; a path entirely behind the camera, or a view whose
  source corner falls behind the virtual camera (source FoV too wide), is a failure (fallback);
- the fallback crop is resized to height × height, its principal point moved exactly (release: set to the
  crop centre); values of masked entries stay zero after the transform.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vitra_jax.data import color_jitter
from vitra_jax.handspace import geometry, instruction, layout, rotations, trajectory

_FLIP = np.diag([-1.0, 1.0, 1.0])
_REQUIRED = ("image", "instruction", "text_left", "text_right", "main_hand", "fov", "state", "state_mask",
             "actions", "action_mask", "intrinsics", "palm_path")


class AugmentError(ValueError):
    """The sampled view cannot be built for this sample (the caller falls back to a centre crop)."""


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Release values (`augmentation_func`, `apply_color_augmentation`, `human_dataset.py`)."""

    height: int = 224  # output height; width = int(height · aspect)
    aspect_range: tuple[float, float] = (1.0, 2.0)  # aspect = exp(U[log lo, log hi])
    fov_range_deg: tuple[float, float] = (45.0, 150.0)  # horizontal FoV, absolute bounds
    fov_range_relative: tuple[float, float] = (0.05, 1.0)  # ... relative to the source FoV
    center_augmentation: float = 1.0  # 1: centre anywhere within half the spare FoV
    margin_ratio: float = 0.05  # palm bbox expansion per side
    inplane_deg: float = 30.0  # in-plane roll within ±inplane_deg
    min_overlap: float = 0.95  # fraction of the palm bbox the rolled crop must keep
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.3  # additive, ±
    contrast: float = 0.3  # factor 1 ± contrast
    saturation: float = 0.4  # factor 1 ± saturation
    hue: float = 0.3  # ± hue · 180 (OpenCV hue units)
    hue_color_word: float = 0.04  # the hue bound when the caption names a colour
    state_dropout: float = 0.1  # both hand states masked and zeroed

    def __post_init__(self):
        if self.height < 8:
            raise ValueError(f"AugmentConfig.height must be at least 8, got {self.height}")
        lo, hi = self.aspect_range
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentConfig.aspect_range must satisfy 0 < lo <= hi, got {self.aspect_range}")
        lo, hi = self.fov_range_deg
        if not 0 < lo <= hi < 180:
            raise ValueError(f"AugmentConfig.fov_range_deg must satisfy 0 < lo <= hi < 180, got {(lo, hi)}")
        lo, hi = self.fov_range_relative
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentConfig.fov_range_relative must satisfy 0 < lo <= hi, got {(lo, hi)}")
        if not 0 <= self.inplane_deg < 90:
            raise ValueError(f"AugmentConfig.inplane_deg must lie in [0, 90), got {self.inplane_deg}")
        for name in ("flip_prob", "jitter_prob", "state_dropout", "min_overlap", "center_augmentation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must lie in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class View:
    """A sampled virtual camera: source camera → view rotation (flip included, det −1 when flipped), the
    view's pixel intrinsics and size (width, height)."""

    rotation: np.ndarray
    intrinsics: np.ndarray
    size: tuple[int, int]
    flip: bool

    def homography(self, src_intrinsics: np.ndarray) -> np.ndarray:
        """(3, 3) map of continuous source pixel coordinates to view pixel coordinates."""
        return self.intrinsics @ self.rotation @ np.linalg.inv(np.asarray(src_intrinsics, np.float64))


def _check_sample(sample: dict) -> None:
    missing = [k for k in _REQUIRED if k not in sample]
    if missing:
        raise ValueError(f"sample lacks keys {missing}")
    image, k = np.asarray(sample["image"]), np.asarray(sample["intrinsics"], np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"sample image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"sample intrinsics must be a finite (3, 3) matrix with positive focals, got {k}")
    n_act = np.shape(sample["actions"])
    for key, shape in (("state", (layout.STATE_DIM,)), ("state_mask", (layout.STATE_DIM,)),
                       ("action_mask", n_act)):
        if np.shape(sample[key]) != shape:
            raise ValueError(f"sample {key} must have shape {shape}, got {np.shape(sample[key])}")
    if len(n_act) != 2 or n_act[1] != layout.ACTION_DIM:
        raise ValueError(f"sample actions must be (N, {layout.ACTION_DIM}), got {n_act}")
    if np.shape(sample["palm_path"])[1:] != (3,) or np.ndim(sample["palm_path"]) != 2:
        raise ValueError(f"sample palm_path must be (M, 3), got {np.shape(sample['palm_path'])}")
    if sample["main_hand"] not in layout.HANDS:
        raise ValueError(f"sample main_hand must be one of {layout.HANDS}, got {sample['main_hand']!r}")


def _hfov(vfov: float, aspect: float) -> float:
    """Horizontal FoV of an image of `aspect` (width / height) whose vertical FoV is `vfov`."""
    return float(2 * np.arctan(aspect * np.tan(vfov / 2)))


def _palm_bbox(palm_path: np.ndarray, k_norm: np.ndarray, margin: float) -> np.ndarray | None:
    """Normalized [x0, y0, x1, y1] of the projected palm path, expanded by `margin` per side, in [0, 1]."""
    pts = np.asarray(palm_path, np.float64)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return None
    if np.all(pts[:, 2] <= 0):
        raise AugmentError("the main hand's palm path lies behind the camera")
    # The release clips depths at 5 cm and projected points to the image.
    uv = geometry.project(np.concatenate([pts[:, :2], np.maximum(pts[:, 2:], 0.05)], axis=1), k_norm)
    uv = np.clip(uv, 0.0, 1.0)
    centre, half = (uv.min(0) + uv.max(0)) / 2, (uv.max(0) - uv.min(0)) / 2 * (1 + 2 * margin)
    return np.clip(np.concatenate([centre - half, centre + half]), 0.0, 1.0)


def _pinned_range(need_lo: float, need_hi: float, lo: float, hi: float) -> tuple[float, float]:
    """[need_lo, need_hi] ∩ [lo, hi]; when they do not meet, the end of [lo, hi] nearest the need."""
    if need_hi < lo:
        return lo, lo
    if need_lo > hi:
        return hi, hi
    return max(need_lo, lo), min(need_hi, hi)


def _rotation_onto_z(d: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction d onto +z."""
    d = d / np.linalg.norm(d)
    axis = np.cross(d, [0.0, 0.0, 1.0])
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return np.eye(3)
    return rotations.axis_angle_to_matrix(axis / s * np.arctan2(s, d[2]))


def _fit_inside(k_norm: np.ndarray, r: np.ndarray, aspect: float) -> tuple[float, float]:
    """Largest (width, height) on the view's z=1 plane of an `aspect` rectangle centred on the optical axis
    whose corners see the source image (its outline, mapped into the view, is convex around the axis)."""
    corners = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1], [1, 0, 1]], np.float64)
    rays = corners @ np.linalg.inv(k_norm).T @ r.T
    if np.any(rays[:, 2] <= 1e-6):
        raise AugmentError("a source image corner lies behind the virtual camera (source FoV too wide)")
    poly = rays[:, :2] / rays[:, 2:]
    # s·diag = a + t·(b − a) for both diagonals × the 4 edges a→b, solved in one batch.
    diags = np.broadcast_to(np.array([[aspect, 1.0], [aspect, -1.0]])[:, None], (2, 4, 2))
    edges = np.broadcast_to(poly - np.roll(poly, -1, axis=0), (2, 4, 2))
    m = np.stack([diags, edges], axis=-1).reshape(8, 2, 2)
    solvable = np.abs(np.linalg.det(m)) > 1e-12
    rhs = np.broadcast_to(poly, (2, 4, 2)).reshape(8, 2, 1)[solvable]
    s = np.linalg.solve(m[solvable], rhs)[:, 0, 0]
    half = np.fmin.reduce(np.abs(s), initial=np.inf)
    if not np.isfinite(half) or half <= 0:
        raise AugmentError("no view rectangle fits inside the source image")
    return 2 * half * aspect, 2 * half


def _crop_ok(pts: list[list[float]], bbox: list[float] | None, min_overlap: float) -> bool:
    """Whether the rolled crop's corners `pts` (4 × [x, y], normalized source units) lie in the image and
    their bounding box keeps `min_overlap` of the palm bbox."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    if min(x0, y0) < 0 or max(x1, y1) > 1:
        return False
    if bbox is None:
        return True
    area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
    if area <= 0:
        return x0 <= bbox[0] and bbox[2] <= x1 and y0 <= bbox[1] and bbox[3] <= y1
    iw, ih = min(x1, bbox[2]) - max(x0, bbox[0]), min(y1, bbox[3]) - max(y0, bbox[1])
    return iw > 0 and ih > 0 and iw * ih / area >= min_overlap


def _roll_range(cfg: AugmentConfig, centre: np.ndarray, crop: np.ndarray, bbox: np.ndarray | None):
    """[lo, hi] roll angles (radians) found by bisection for which the rolled crop (normalized source
    units) stays in the image and its bounding box keeps `min_overlap` of the palm bbox (release rule).
    Both ends are bisected together."""
    rect = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * crop / 2
    box = None if bbox is None else [float(v) for v in bbox]
    limit = float(np.deg2rad(cfg.inplane_deg))
    good, bad = [0.0, 0.0], [limit, -limit]
    for _ in range(20):
        mid = [(g + b) / 2 for g, b in zip(good, bad)]
        c, s = np.cos(mid).tolist(), np.sin(mid).tolist()
        # One C-ordered Rᵀ per end: the corners come out bit-equal to the per-angle rect @ R.T.
        pts = (rect @ np.array([[[ci, si], [-si, ci]] for ci, si in zip(c, s)]) + centre).tolist()
        for i, corners in enumerate(pts):
            if _crop_ok(corners, box, cfg.min_overlap):
                good[i] = mid[i]
            else:
                bad[i] = mid[i]
    return good[1], good[0]


def sample_view(sample: dict, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> View:
    """Draw a virtual camera for `sample` (release `sample_perspective_rot_flip_with_traj_constraint`).

    Raises AugmentError when no view can be built."""
    _check_sample(sample)
    h_src, w_src = sample["image"].shape[:2]
    k_pix = np.asarray(sample["intrinsics"], np.float64)
    k_norm = np.diag([1.0 / w_src, 1.0 / h_src, 1.0]) @ k_pix
    aspect = float(np.exp(rng.uniform(*np.log(cfg.aspect_range))))
    size = (int(cfg.height * aspect), cfg.height)
    ext = 1.0 / np.array([k_norm[0, 0], k_norm[1, 1]])  # source extent on the z=1 plane, (x, y)
    src_fov = 2 * np.arctan(ext / 2)

    # 1. Horizontal FoV: absolute and relative bounds, at least what the palm bbox needs.
    rel_lo, rel_hi = cfg.fov_range_relative
    lo = max(np.deg2rad(cfg.fov_range_deg[0]), min(rel_lo * src_fov[0], _hfov(rel_lo * src_fov[1], aspect)))
    hi = min(np.deg2rad(cfg.fov_range_deg[1]), min(rel_hi * src_fov[0], _hfov(rel_hi * src_fov[1], aspect)))
    bbox = _palm_bbox(sample["palm_path"], k_norm, cfg.margin_ratio)
    if bbox is not None:
        need = np.maximum(2 * np.arctan(0.5 * (bbox[2:] - bbox[:2]) * ext), 1e-2)
        lo = max(lo, need[0], _hfov(need[1], aspect))
    fov_x = rng.uniform(min(lo, hi), hi)
    fov = np.array([fov_x, 2 * np.arctan(np.tan(fov_x / 2) / aspect)])

    # 2. Centre: within half the spare FoV, shifted so the crop covers the palm bbox.
    spare = cfg.center_augmentation * 0.5 * (src_fov - fov)
    crop = 2 * np.tan(fov / 2) / ext
    centre = np.empty(2)
    for i in range(2):
        lo_c, hi_c = 0.5 + 0.5 * np.tan([-spare[i], spare[i]]) / np.tan(src_fov[i] / 2)
        if bbox is not None:
            lo_c, hi_c = _pinned_range(bbox[i + 2] - crop[i] / 2, bbox[i] + crop[i] / 2, lo_c, hi_c)
        # A crop narrower than the bbox gives a reversed range: the release then draws between its ends.
        centre[i] = rng.uniform(min(lo_c, hi_c), max(lo_c, hi_c))

    # 3. Rotate the ray through the centre onto the optical axis; shrink the view to stay in the source.
    r_centre = _rotation_onto_z(np.linalg.inv(k_norm) @ [centre[0], centre[1], 1.0])
    fit = _fit_inside(k_norm, r_centre, aspect)
    extent = np.minimum(2 * np.tan(fov / 2), fit)

    # 4. In-plane roll within the range that keeps the crop in the image and the palm bbox in the crop.
    roll_lo, roll_hi = _roll_range(cfg, centre, extent / ext, bbox)
    roll = float(rng.uniform(roll_lo, roll_hi)) if roll_lo <= roll_hi else 0.0
    c, s = np.cos(roll), np.sin(roll)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ r_centre

    # 5. Flip: mirror the view (M·R) and its principal point.
    k_view = np.array([[1 / extent[0], 0, 0.5], [0, 1 / extent[1], 0.5], [0, 0, 1]])
    flip = bool(rng.random() < cfg.flip_prob)
    if flip:
        k_view[0, 2] = 1.0 - k_view[0, 2]
        r = _FLIP @ r
    k_view = np.diag([size[0], size[1], 1.0]) @ k_view
    if not (np.all(np.isfinite(k_view)) and np.all(np.isfinite(r))):
        raise AugmentError("the sampled view is not finite")
    return View(rotation=r, intrinsics=k_view, size=size, flip=flip)


def warp_image(image: np.ndarray, src_intrinsics: np.ndarray, view: View) -> np.ndarray:
    """The source image seen by `view` (one perspective warp, Lanczos; outside the source is black)."""
    image = np.ascontiguousarray(image)
    h_src, w_src = image.shape[:2]
    w_out, h_out = view.size
    # Pre-shrink (antialias) to the view's pixel density at its centre when that is coarser than the source.
    scale = min(1.0, view.intrinsics[0, 0] / src_intrinsics[0, 0], view.intrinsics[1, 1] / src_intrinsics[1, 1])
    work = image
    if scale < 1.0:
        size = (max(1, int(w_src * scale)), max(1, int(h_src * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    to_work = np.diag([work.shape[1] / w_src, work.shape[0] / h_src, 1.0])
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # pixel index -> continuous coordinate
    out_to_src = np.linalg.inv(half) @ to_work @ np.linalg.inv(view.homography(src_intrinsics)) @ half
    return cv2.warpPerspective(work, out_to_src, (w_out, h_out), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _rotate_positions(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A float64 copy of states or actions `x` (..., 102) with each hand's position t replaced by R·t."""
    out = np.array(x, np.float64)
    for hand in layout.HANDS:
        tr = layout.hand_part(hand, layout.TRANS)
        out[..., tr] = out[..., tr] @ r.T
    return out


def _rotate_hands(state: np.ndarray, actions: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """State (102,) and actions (N, 102) seen by R: positions R·t; absolute rotations R·Rot·M (state), delta
    rotations R·ΔR·Rᵀ (actions); M = the flip part of R. All Euler angles convert in one call each way."""
    state, actions = _rotate_positions(state, r), _rotate_positions(actions, r)
    m = _FLIP if np.linalg.det(r) < 0 else np.eye(3)
    rots = [layout.hand_part(hand, layout.ROT) for hand in layout.HANDS]
    rows = np.concatenate([state[None], actions])
    mats = rotations.euler_to_matrix(np.stack([rows[:, rot] for rot in rots]))  # (hand, 1 + N, 3, 3)
    euler = rotations.matrix_to_euler(np.concatenate([r @ mats[:, :1] @ m, r @ mats[:, 1:] @ r.T], axis=1))
    for i, rot in enumerate(rots):
        state[rot], actions[:, rot] = euler[i, 0], euler[i, 1:]
    return state, actions


def _flip_texts(sample: dict) -> dict:
    return {
        "instruction": instruction.flip_instruction(sample["instruction"]),
        "text_left": instruction.swap_hand_words(sample["text_right"]),
        "text_right": instruction.swap_hand_words(sample["text_left"]),
        "main_hand": "left" if sample["main_hand"] == "right" else "right",
    }


def apply_view(sample: dict, view: View) -> dict:
    """`sample` seen by `view`: warped image, new intrinsics and FoV, hands and palm path transformed; with
    a flip the hands swap in values, masks and words. No colour jitter or dropout."""
    _check_sample(sample)
    k_src = np.asarray(sample["intrinsics"], np.float64)
    r = view.rotation
    masks = {k: np.asarray(sample[k], np.float32) for k in ("state_mask", "action_mask")}
    state, actions = _rotate_hands(sample["state"], sample["actions"], r)
    out = dict(sample)
    if view.flip:
        state, actions = layout.swap_hands(state), layout.swap_hands(actions)
        masks = {k: layout.swap_hands(v) for k, v in masks.items()}
        out.update(_flip_texts(sample))
    out["image"] = warp_image(np.asarray(sample["image"]), k_src, view)
    out["intrinsics"] = view.intrinsics.astype(np.float32)
    out["fov"] = np.asarray(geometry.fov_from_intrinsics(view.intrinsics, *view.size), np.float32)
    out["state"] = (state * masks["state_mask"]).astype(np.float32)
    out["actions"] = (actions * masks["action_mask"]).astype(np.float32)
    out.update(masks)
    out["palm_path"] = (np.asarray(sample["palm_path"], np.float64) @ r.T).astype(np.float32)
    return out


def flip_sample(sample: dict) -> dict:
    """The sample of the horizontally mirrored image (deterministic): hands swap in values, masks, words."""
    _check_sample(sample)
    out = dict(sample)
    out.update(_flip_texts(sample))
    image = np.asarray(sample["image"])
    k = np.array(sample["intrinsics"], np.float64)
    k[0, 2] = image.shape[1] - k[0, 2]
    out["image"] = np.ascontiguousarray(image[:, ::-1])
    out["intrinsics"] = k.astype(np.float32)
    for key in ("state", "actions"):
        out[key] = trajectory.flip_horizontal(sample[key]).astype(np.float32)
    for key in ("state_mask", "action_mask"):
        out[key] = layout.swap_hands(np.asarray(sample[key], np.float32))
    out["palm_path"] = (np.asarray(sample["palm_path"], np.float64) @ _FLIP).astype(np.float32)
    return out


def _jitter(image: np.ndarray, caption: str, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    return color_jitter.color_jitter(image, caption, rng, p=cfg.jitter_prob, brightness=cfg.brightness,
                                     contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue,
                                     hue_color_word=cfg.hue_color_word)


def center_crop(sample: dict, cfg: AugmentConfig = AugmentConfig()) -> dict:
    """The fallback view: the centred square of the short side, resized to height × height."""
    _check_sample(sample)
    image = np.asarray(sample["image"])
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    k = np.array(sample["intrinsics"], np.float64)
    k[0, 2] -= left
    k[1, 2] -= top
    k = np.diag([cfg.height / side, cfg.height / side, 1.0]) @ k
    interp = cv2.INTER_AREA if side > cfg.height else cv2.INTER_LANCZOS4
    out = dict(sample)
    out["image"] = cv2.resize(image[top:top + side, left:left + side], (cfg.height, cfg.height),
                              interpolation=interp)
    out["intrinsics"] = k.astype(np.float32)
    out["fov"] = np.asarray(geometry.fov_from_intrinsics(k, cfg.height, cfg.height), np.float32)
    return out


def augment_sample(sample: dict, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> dict:
    """One augmented training sample (VITRA §3.4): view, warp and 3-D transform, colour jitter, state
    dropout. Returns the same keys plus `augment_fallback` (1 when the centre-crop fallback was used)."""
    try:
        out = apply_view(sample, sample_view(sample, rng, cfg))
        out["image"] = _jitter(out["image"], out["instruction"], rng, cfg)
        out["augment_fallback"] = 0
    except AugmentError:
        out = center_crop(sample, cfg)
        out["augment_fallback"] = 1
    if rng.random() < cfg.state_dropout:
        out["state"] = np.zeros_like(out["state"])
        out["state_mask"] = np.zeros_like(out["state_mask"])
    return out
