"""HaWoR results -> CamHands: its camera-space JSON files, and VITRA's per-image HaWoR output.

HaWoR (`scripts/scripts_test_video/hawor_video.py`) writes one file per tracked chunk,
`cam_space/{0 = left, 1 = right}/{first}_{last}.json` (frames inclusive), with `init_root_orient` (1,T,3,3),
`init_hand_pose` (1,T,15,3,3), `init_trans` (1,T,3) (MANO `transl`) and `init_betas` (1,T,10). A left hand is
reconstructed from the flipped crop as a right hand, then every axis-angle (root and 15 joints) gets y, z
negated: the result is MANO_LEFT parameters for the mirror-symmetric left model. In our convention (see
`mano_params`) that root is already `orient`, the finger rotations go back to right-hand form (negate y, z
again, i.e. M·R·M) and the wrist joint is mirror(J0(β)) + transl. Frames are indices into HaWoR's extracted
images (the video's frames); its camera is f = `img_focal` (600 px unless given) at the image centre.

VITRA's wrapper (`data/tools/utils_hawor.py`) returns per image {'left'|'right': {frame: {'beta',
'hand_pose', 'global_orient', 'transl'}}, 'fov_x'} with only the root un-flipped and `transl` already the
wrist joint: that is our convention as is.

HaWoR's world-space output `world_space_res.pth` (after its infiller fills missing frames) is a joblib list
[trans (2,T,3), root (2,T,3) axis-angle, hand_pose (2,T,45) axis-angle, betas (2,T,10), valid (2,T)], index
0 = left (MANO_LEFT parameters, as above), in HaWoR's SLAM world frame; `read_world_space` brings it into
each frame's camera with world->camera extrinsics (e.g. from HaWoR's SLAM file) and reads it with
`joblib_tensors` (no joblib, no arbitrary unpickling).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from preprocess.errors import HandsFileError
from preprocess.hands import joblib_tensors
from preprocess.hands.mano_model import ManoRight, wrist_rest
from preprocess.hands.mano_params import MIRROR, camhand_from_params, refocus
from preprocess.records import HANDS, CamHands
from vitra_jax.handspace.episode import load_vitra_npy
from vitra_jax.handspace.rotations import axis_angle_to_matrix

CHUNK = re.compile(r"^(\d+)_(\d+)\.json$")
DEFAULT_FOCAL = 600.0


class HaworError(HandsFileError):
    """A HaWoR output that is missing or malformed."""


def hawor_camera(width: int, height: int, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """The pinhole camera HaWoR assumes: focal `img_focal`, principal point at (W/2, H/2)."""
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def _chunks(folder: Path, num_frames: int):
    for path in sorted(folder.glob("*.json")):
        m = CHUNK.match(path.name)
        if not m:
            continue
        first, last = int(m.group(1)), int(m.group(2))
        try:
            d = json.loads(path.read_text())
            arrays = [np.asarray(d[k], np.float64)[0] for k in
                      ("init_root_orient", "init_hand_pose", "init_trans", "init_betas")]
        except (KeyError, ValueError, IndexError) as e:
            raise HaworError(f"{path}: not a HaWoR camera-space result ({type(e).__name__}: {e})") from None
        n = last - first + 1
        shapes = [a.shape for a in arrays]
        if shapes != [(n, 3, 3), (n, 15, 3, 3), (n, 3), (n, 10)] or last >= num_frames:
            raise HaworError(f"{path}: shapes {shapes} do not fit frames {first}..{last} of {num_frames}")
        yield first, last + 1, arrays


def cam_space_length(folder: str | Path) -> int:
    """1 + the last frame any chunk file of a `cam_space` folder covers (0 if none)."""
    last = [int(m.group(2)) for p in Path(folder).glob("[01]/*.json") if (m := CHUNK.match(p.name))]
    return max(last) + 1 if last else 0


def read_cam_space(folder: str | Path, num_frames: int, model: ManoRight,
                   k: np.ndarray | None = None, image_size: tuple[int, int] | None = None,
                   focal: float = DEFAULT_FOCAL) -> CamHands:
    """CamHands of a HaWoR `cam_space` folder over `num_frames` video frames.

    With `k` (our intrinsics) and `image_size` (W, H) of HaWoR's frames, hands are moved from HaWoR's
    camera (`focal`, centred principal point) to ours (`mano_params.refocus`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HaworError(f"HaWoR camera-space folder not found: {folder}")
    hands = {}
    for idx, hand in enumerate(HANDS):  # HaWoR's 0 = left, 1 = right
        orient = np.tile(np.eye(3), (num_frames, 1, 1))
        pose = np.tile(np.eye(3), (num_frames, 15, 1, 1))
        transl, betas = np.zeros((num_frames, 3)), np.zeros((num_frames, 10))
        kept = np.zeros(num_frames, bool)
        for a, b, (root, hp, tr, be) in _chunks(folder / str(idx), num_frames):
            orient[a:b], transl[a:b], betas[a:b], kept[a:b] = root, tr, be, True
            pose[a:b] = MIRROR @ hp @ MIRROR if hand == "left" else hp
        cam = camhand_from_params(model, hand, orient, pose, transl, betas, kept, kept.astype(float))
        if k is not None:
            if image_size is None:
                raise ValueError("refocusing needs the image size HaWoR saw")
            cam = refocus(cam, hawor_camera(*image_size, focal), np.asarray(k, np.float64))
        hands[hand] = cam
    return CamHands(hands=hands, backend="hawor", version="cam_space")


def from_vitra_hawor(d: dict, num_frames: int, model: ManoRight) -> CamHands:
    """CamHands of VITRA's HaWoR wrapper output {'left'|'right': {frame: params}} (already our convention)."""
    hands = {}
    for hand in HANDS:
        orient = np.tile(np.eye(3), (num_frames, 1, 1))
        pose = np.tile(np.eye(3), (num_frames, 15, 1, 1))
        wrist, betas = np.zeros((num_frames, 3)), np.zeros((num_frames, 10))
        kept = np.zeros(num_frames, bool)
        for frame, p in d.get(hand, {}).items():
            t = int(frame)
            if not 0 <= t < num_frames:
                raise HaworError(f"{hand} hand frame {t} outside 0..{num_frames - 1}")
            orient[t], pose[t] = np.asarray(p["global_orient"]).reshape(3, 3), np.asarray(p["hand_pose"])
            wrist[t], betas[t], kept[t] = np.asarray(p["transl"]).reshape(3), np.asarray(p["beta"]).reshape(10), True
        j0 = wrist_rest(model, betas) @ (MIRROR if hand == "left" else np.eye(3))
        hands[hand] = camhand_from_params(model, hand, orient, pose, wrist - j0, betas, kept, kept.astype(float))
    return CamHands(hands=hands, backend="hawor", version="vitra_wrapper")


def read_vitra_hawor(path: str | Path, model: ManoRight, num_frames: int | None = None) -> CamHands:
    """VITRA's saved HaWoR result (`.npy` dict, e.g. the release's `examples/0001.npy`; numpy-only unpickling)."""
    d = load_vitra_npy(path)
    frames = [int(f) for h in HANDS for f in d.get(h, {})]
    n = num_frames if num_frames is not None else (max(frames) + 1 if frames else 1)
    return from_vitra_hawor(d, n, model)


def from_world_space(res: list, w2c: np.ndarray, model: ManoRight) -> CamHands:
    """CamHands from HaWoR's world-space list (see module doc) and world->camera extrinsics (T, 4, 4)."""
    try:
        trans, root, pose, betas, valid = (np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float64)
                                           for x in res)
    except (TypeError, ValueError) as e:
        raise HaworError(f"not HaWoR's world-space result list ({type(e).__name__}: {e})") from None
    n = trans.shape[1]
    w2c = np.asarray(w2c, np.float64)
    if w2c.shape != (n, 4, 4) or pose.shape != (2, n, 45) or betas.shape != (2, n, 10) or valid.shape != (2, n):
        raise HaworError(f"world-space shapes {trans.shape}, {pose.shape}, {betas.shape}, {valid.shape} do not "
                         f"match extrinsics {w2c.shape}")
    r_wc, t_wc = w2c[:, :3, :3], w2c[:, :3, 3]
    hands = {}
    for idx, hand in enumerate(HANDS):
        mirror = MIRROR if hand == "left" else np.eye(3)
        hp = axis_angle_to_matrix(pose[idx].reshape(n, 15, 3))
        j0 = wrist_rest(model, betas[idx]) @ mirror
        wrist = np.einsum("tab,tb->ta", r_wc, j0 + trans[idx]) + t_wc  # MANO rotates about J0: wrist = J0 + transl
        kept = valid[idx] > 0
        hands[hand] = camhand_from_params(model, hand, r_wc @ axis_angle_to_matrix(root[idx]),
                                          mirror @ hp @ mirror, wrist - j0, betas[idx], kept, kept.astype(float))
    return CamHands(hands=hands, backend="hawor", version="world_space_res")


def read_world_space(path: str | Path, w2c: np.ndarray, model: ManoRight) -> CamHands:
    """CamHands of HaWoR's `world_space_res.pth`, moved into the cameras given by w2c (T, 4, 4)."""
    if not Path(path).is_file():
        raise HaworError(f"HaWoR world-space result not found: {path}")
    return from_world_space(joblib_tensors.load(path), w2c, model)


class HaworBackend:
    """`HandBackend` over HaWoR's `cam_space` folder of one video: frames [start, start + len(frames)).

    `video_size` is the (W, H) HaWoR ran at (the video's own size; default: the frames' size) and `focal` its
    `img_focal` in those pixels; hands are moved into the camera of the intrinsics passed to `estimate` or
    `video_hands`.
    """

    name = "hawor"
    version = "cam_space"

    def __init__(self, path: str | Path, mano_dir: str | Path, *, start: int = 0,
                 video_size: tuple[int, int] | None = None, focal: float = DEFAULT_FOCAL):
        from preprocess.hands.mano_model import load_mano

        self.path, self.start, self.video_size, self.focal = Path(path), start, video_size, focal
        self.model = load_mano(mano_dir)
        if not self.path.is_dir():
            raise HaworError(f"HaWoR camera-space folder not found: {self.path}")

    def video_hands(self, intrinsics, length: int) -> CamHands:
        """Video frames [0, length), `length` >= `cam_space_length(path)` (no frames needed), in the camera of
        `intrinsics` (at the size of the frames)."""
        width, height = intrinsics.width, intrinsics.height
        scale = 1.0 if self.video_size is None else width / self.video_size[0]
        k_ours_in_hawor_pixels = np.asarray(intrinsics.k, np.float64) * [[1 / scale], [1 / scale], [1.0]]
        return read_cam_space(self.path, length, self.model, k=k_ours_in_hawor_pixels,
                              image_size=(round(width / scale), round(height / scale)), focal=self.focal)

    def estimate(self, frames: np.ndarray, intrinsics) -> CamHands:
        from preprocess.hands.precomputed import slice_frames

        stop = self.start + len(frames)
        return slice_frames(self.video_hands(intrinsics, max(stop, cam_space_length(self.path))), self.start, stop)
