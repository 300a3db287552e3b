"""Episode records: the file format between the labeling pipeline and the dataset builder (numpy only).

Format version 1, one episode = two files with the same stem:
  `{stem}.npz`  arrays: `frame_index (T,)` video frame numbers, `extrinsics (T,4,4)` world→camera,
                `intrinsics (3,3)` (pixels of the original video, principal point at its centre),
                per hand h ∈ {left,right}: `h/wrist (T,3)`, `h/orient (T,3,3)`, `h/hand_pose (T,15,3,3)`,
                `h/joints (T,21,3)` (world), `h/kept (T,)`, `h/beta (10,)`.
  `{stem}.json` metadata: `format_version`, `video` (path relative to the episode folder or absolute),
                `video_name`, `fps`, `camera_motion` ('static'|'moving'|'unknown'), `main_hand`,
                `text` {hand: [[caption, [start, end]], ...]}, `labeler_versions` {stage: version}, `source`.
The json is written last, so an episode without its json is unfinished. Both are written atomically.
`load_vitra_npy` reads the released VITRA-1M pickles with an unpickler that only admits numpy arrays.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vitra_jax.handspace import layout
from vitra_jax.handspace.trajectory import HandTrack

FORMAT_VERSION = 1
CAMERA_MOTIONS = ("static", "moving", "unknown")
_HAND_FIELDS = ("wrist", "orient", "hand_pose", "joints", "kept", "beta")


class EpisodeError(ValueError):
    """An episode that cannot be used; `reason` is a short code used to count skips."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass
class Episode:
    """One labelled episode: cameras, two hand tracks in world space, captions and provenance."""

    video: str
    video_name: str
    frame_index: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    hands: dict[str, HandTrack]
    text: dict[str, list[tuple[str, tuple[int, int]]]]
    main_hand: str
    fps: float = 30.0
    camera_motion: str = "unknown"
    labeler_versions: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""
    # Alternative wordings of each caption, same intervals as `text` (e.g. the release's GPT-4 rephrasings).
    rephrasings: dict[str, list[tuple[list[str], tuple[int, int]]]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_index)


ROTATION_TOL = 1e-3  # max |RᵀR − I| and |det R − 1| of a rotation (float32 storage gives ~1e-6)
BETA_DIM = 10


def _rotation_error(r: np.ndarray) -> tuple[float, float]:
    """Largest deviation from orthonormality and of the determinant from +1 among matrices r (..., 3, 3)."""
    if r.size == 0:
        return 0.0, 0.0
    gram = np.swapaxes(r, -1, -2) @ r
    return float(np.abs(gram - np.eye(3)).max()), float(np.abs(np.linalg.det(r) - 1).max())


def _check_rotations(name: str, r: np.ndarray) -> None:
    ortho, det = _rotation_error(r)
    if ortho > ROTATION_TOL or det > ROTATION_TOL:
        raise EpisodeError("not_rotation", f"{name} is not a rotation (max |RᵀR − I| = {ortho:.2g}, "
                                           f"max |det − 1| = {det:.2g}, tolerance {ROTATION_TOL})")


def validate(ep: Episode) -> None:
    """Raise EpisodeError naming the first problem, in this order: metadata; array shapes (frames,
    extrinsics, intrinsics, hand fields, beta); NaN/inf in cameras and tracked frames; rotations (camera
    rotations of every frame, wrist and finger rotations of tracked frames: orthonormal with det +1 within
    ROTATION_TOL; a bottom extrinsics row of [0, 0, 0, 1]); frame indices strictly increasing; a tracked
    frame somewhere. Untracked frames may hold anything."""
    if ep.main_hand not in layout.HANDS:
        raise EpisodeError("bad_metadata", f"main_hand {ep.main_hand!r}")
    if ep.camera_motion not in CAMERA_MOTIONS:
        raise EpisodeError("bad_metadata", f"camera_motion {ep.camera_motion!r}")
    frame_index = np.asarray(ep.frame_index)
    if frame_index.ndim != 1 or len(frame_index) == 0:
        raise EpisodeError("bad_frame_index", f"frame_index must be a non-empty 1-d array, got {frame_index.shape}")
    n = len(frame_index)
    if ep.extrinsics.shape != (n, 4, 4):
        raise EpisodeError("length_mismatch", f"extrinsics {ep.extrinsics.shape} for {n} frames")
    if np.shape(ep.intrinsics) != (3, 3):
        raise EpisodeError("bad_shape", f"intrinsics must be (3, 3), got {np.shape(ep.intrinsics)}")
    shapes = {
        "wrist": (n, 3), "orient": (n, 3, 3), "hand_pose": (n, 15, 3, 3), "joints": (n, 21, 3), "kept": (n,),
    }
    arrays = {"extrinsics": ep.extrinsics, "intrinsics": ep.intrinsics}
    for hand in layout.HANDS:
        track = ep.hands[hand]
        for field, shape in shapes.items():
            if getattr(track, field).shape != shape:
                got = getattr(track, field).shape
                raise EpisodeError("length_mismatch", f"{hand}/{field} {got} != {shape}")
        if np.shape(track.beta) != (BETA_DIM,):
            raise EpisodeError("bad_shape", f"{hand}/beta must be ({BETA_DIM},), got {np.shape(track.beta)}")
        kept = track.kept.astype(bool)
        for f in ("wrist", "orient", "hand_pose", "joints"):
            arrays[f"{hand}/{f}"] = getattr(track, f)[kept]
        arrays[f"{hand}/beta"] = track.beta
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise EpisodeError("non_finite", f"{name} has NaN/inf")
    _check_rotations("extrinsics rotation", ep.extrinsics[:, :3, :3])
    if np.abs(ep.extrinsics[:, 3] - [0, 0, 0, 1]).max() > ROTATION_TOL:
        raise EpisodeError("not_rotation", "extrinsics bottom row is not [0, 0, 0, 1]")
    for hand in layout.HANDS:
        _check_rotations(f"{hand}/orient", arrays[f"{hand}/orient"])
        _check_rotations(f"{hand}/hand_pose", arrays[f"{hand}/hand_pose"])
    if not np.issubdtype(frame_index.dtype, np.integer):
        raise EpisodeError("bad_frame_index", f"frame_index must be integers, got {frame_index.dtype}")
    steps = np.diff(frame_index)
    if frame_index[0] < 0:
        raise EpisodeError("bad_frame_index", f"frame_index starts at {int(frame_index[0])} (< 0)")
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0)) + 1
        raise EpisodeError("bad_frame_index", f"frame_index not strictly increasing: step {k} is frame "
                                              f"{int(frame_index[k])} after {int(frame_index[k - 1])}")
    if not any(ep.hands[h].kept.any() for h in layout.HANDS):
        raise EpisodeError("no_valid_frames", "no hand is tracked in any frame")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_episode(stem: str | Path, ep: Episode) -> None:
    """Write `{stem}.npz` then `{stem}.json` (each atomically) after validating the episode."""
    validate(ep)
    stem = Path(stem)
    arrays = {"frame_index": ep.frame_index, "extrinsics": ep.extrinsics, "intrinsics": ep.intrinsics}
    for hand in layout.HANDS:
        arrays.update({f"{hand}/{f}": getattr(ep.hands[hand], f) for f in _HAND_FIELDS})
    meta = {
        "format_version": FORMAT_VERSION, "video": ep.video, "video_name": ep.video_name, "fps": ep.fps,
        "camera_motion": ep.camera_motion, "main_hand": ep.main_hand, "source": ep.source,
        "text": {h: [[c, list(span)] for c, span in caps] for h, caps in ep.text.items()},
        "labeler_versions": ep.labeler_versions,
        "rephrasings": {h: [[list(alts), list(span)] for alts, span in r] for h, r in ep.rephrasings.items()},
    }
    _atomic_write(stem.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    _atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))


def read_episode(stem: str | Path) -> Episode:
    """Read an episode written by `write_episode`; relative video paths resolve against its folder.

    Unreadable files raise EpisodeError("unreadable_input"), missing or malformed fields ("bad_metadata").
    """
    stem = Path(stem)
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError) as e:  # ValueError: bad json or bad UTF-8
        raise EpisodeError("unreadable_input", f"{stem}.json: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise EpisodeError("bad_metadata", f"{stem}.json format_version {version}")
    try:
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeError("unreadable_input", f"{stem}.npz: {type(e).__name__}: {e}") from None
    try:
        hands = {h: HandTrack(**{f: arrays[f"{h}/{f}"] for f in _HAND_FIELDS}) for h in layout.HANDS}
        video = meta["video"]
        if not os.path.isabs(video):
            video = str(stem.parent / video)
        return Episode(
            video=video, video_name=meta["video_name"], frame_index=arrays["frame_index"],
            extrinsics=arrays["extrinsics"], intrinsics=arrays["intrinsics"], hands=hands,
            text={h: [(c, tuple(s)) for c, s in caps] for h, caps in meta["text"].items()},
            main_hand=meta["main_hand"], fps=float(meta["fps"]), camera_motion=meta["camera_motion"],
            labeler_versions=dict(meta.get("labeler_versions", {})), source=meta.get("source", ""),
            rephrasings={h: [(list(a), tuple(s)) for a, s in r] for h, r in meta.get("rephrasings", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field missing or of the wrong kind
        raise EpisodeError("bad_metadata", f"{stem}: missing or malformed field: {type(e).__name__}: {e}") from None


class _ArraysOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"), ("numpy", "ndarray"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def load_vitra_npy(path: str | Path) -> dict:
    """The dict pickled in a released VITRA-1M `.npy`, loading nothing but numpy arrays and plain data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        _, _, dtype = read_header(f)  # shape, fortran order, dtype
        if dtype != np.dtype(object):
            raise EpisodeError("bad_annotation", f"{path}: expected a pickled dict, got dtype {dtype}")
        obj = _ArraysOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    obj = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(obj, dict):
        raise EpisodeError("bad_annotation", f"{path}: pickled {type(obj).__name__}, not a dict")
    return obj


def camera_motion_of(extrinsics: np.ndarray, tol: float = 1e-6) -> str:
    """'static' when every world→camera matrix equals the first (within tol), else 'moving'."""
    return "static" if np.abs(extrinsics - extrinsics[:1]).max() <= tol else "moving"


def from_vitra(d: dict, video: str, source: str = "", fps: float = 30.0) -> Episode:
    """An Episode from a released VITRA-1M annotation dict (deprecated fields ignored).

    The release has no camera-motion flag; it is read off the extrinsics (constant = static).
    """
    try:
        hands = {
            h: HandTrack(
                wrist=np.array(d[h]["transl_worldspace"], np.float64),
                orient=np.array(d[h]["global_orient_worldspace"], np.float64),
                hand_pose=np.array(d[h]["hand_pose"], np.float64),
                joints=np.array(d[h]["joints_worldspace"], np.float64),
                kept=np.asarray(d[h]["kept_frames"]).astype(bool),
                beta=np.array(d[h]["beta"], np.float64),
            )
            for h in layout.HANDS
        }
        text = {h: [(str(c), (int(s), int(e))) for c, (s, e) in caps]
                for h, caps in d.get("text", {}).items()}
        rephrasings = {h: [([str(a).strip() for a in alts], (int(s), int(e))) for alts, (s, e) in r]
                       for h, r in d.get("text_rephrase", {}).items()}
        return Episode(
            video=video, video_name=str(d["video_name"]),
            frame_index=np.array(d["video_decode_frame"], np.int64),
            extrinsics=np.array(d["extrinsics"], np.float64),
            intrinsics=np.array(d["intrinsics"], np.float64),
            hands=hands, text=text, main_hand=str(d["anno_type"]), fps=fps,
            camera_motion=camera_motion_of(np.asarray(d["extrinsics"], np.float64)),
            labeler_versions={"release": "VITRA-1M"}, source=source, rephrasings=rephrasings,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EpisodeError("bad_annotation", f"missing or malformed field {e}") from e
