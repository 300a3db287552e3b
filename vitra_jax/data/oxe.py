"""Open X-Embodiment registry: how each robot dataset's steps map into the 102-d two-hand space.

One frozen `OxeEntry` per dataset, written from its published RLDS feature spec (feature names and the
layouts octo's standardization transforms read, octo-models/octo 241fb35, `oxe_dataset_configs.py` and
`oxe_standardization_transforms.py`; droid from openvla c8f03f4). The robot arm is the right hand:
- EEF position delta (3) -> right wrist Δt slots, rotation delta (3) -> right wrist Δr slots, unchanged
  (axis-angle deltas are converted to Euler xyz, the layout's rotation format);
- the gripper command (1) -> one dim, `GRIPPER_DIM`, the first right-hand finger angle (MANO index1,
  Euler x). The 102-d space has no gripper; closing a gripper is the robot's closing of the fingers, and
  one real dim keeps the grasp timing in every chunk without claiming the other 44 finger angles are known.
  Values are the dataset's own (open/close conventions differ per dataset; statistics are per dataset);
- state: EEF position / orientation / gripper state into the same slots where the spec gives them in
  that form; quaternion orientations and joint-space states stay unmapped;
- every other dim is masked (value 0), never filled in. A dataset whose layout lacks a part (e.g. no
  rotation in jaco_play's actions) leaves that part masked instead of writing zeros as octo does.
Deliberate differences from robot conventions, all forced by the hand space: deltas stay in each robot's
base frame (OXE has no camera extrinsics to move them into the camera frame as hand actions are); FoV is
an assumption (`ASSUMED_FOV_X_DEG`, the same for every entry, since OXE stores no intrinsics) with square
pixels and the principal point at the image centre; the instruction is "Left hand: None. Right hand:
<text>." (the left hand is idle). Octo blanks instructions it judged uninformative; here the text is kept
and the entry says `informative_language=False`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vitra_jax.handspace import geometry, instruction, layout, rotations

RIGHT_TRANS = layout.hand_part("right", layout.TRANS).start
RIGHT_ROT = layout.hand_part("right", layout.ROT).start
GRIPPER_DIM = layout.hand_part("right", layout.FINGERS).start  # MANO index1, Euler x, of the right hand
ASSUMED_FOV_X_DEG = 60.0  # a typical fixed RGB camera (webcams and RealSense colour are ~60-70°)


@dataclasses.dataclass(frozen=True)
class Dims:
    """`n` values of the step field at `src` (a path of keys), last axis from `start` (may be negative),
    written to dims `dst`..`dst+n` of the 102-d vector; `rotation='axis_angle'` converts to Euler xyz."""

    src: tuple[str, ...]
    start: int
    n: int
    dst: int
    rotation: str = "euler"

    def take(self, x: np.ndarray) -> np.ndarray:
        stop = self.start + self.n
        out = x[:, self.start: stop if stop != 0 else None]
        if out.shape[1] != self.n:
            raise ValueError(f"{'/'.join(self.src)} has {x.shape[1]} values per step; the registry reads "
                             f"{self.n} from index {self.start}")
        if self.rotation == "axis_angle":
            out = rotations.matrix_to_euler(rotations.axis_angle_to_matrix(out))
        return out


def _trans(*src: str, start: int = 0, n: int = 3) -> Dims:
    return Dims(tuple(src), start, n, RIGHT_TRANS)


def _rot(*src: str, start: int = 3, rotation: str = "euler") -> Dims:
    return Dims(tuple(src), start, 3, RIGHT_ROT, rotation)


def _grip(*src: str, index: int) -> Dims:
    return Dims(tuple(src), index, 1, GRIPPER_DIM)


@dataclasses.dataclass(frozen=True)
class OxeEntry:
    """One dataset: primary camera, instruction location, and its action/state maps into 102 dims."""

    name: str
    image_key: str                       # key under steps/observation
    instruction_key: tuple[str, ...]     # path inside a step (or "episode_metadata", ...)
    action: tuple[Dims, ...]
    state: tuple[Dims, ...] = ()
    instruction_encoding: str = "text"   # 'text' | 'unicode_codes' (int code points, 0-padded)
    informative_language: bool = True    # False where octo blanks the instruction as uninformative
    fov_x_deg: float = ASSUMED_FOV_X_DEG

    def action_mask(self) -> np.ndarray:
        return _mask(self.action)

    def state_mask(self) -> np.ndarray:
        return _mask(self.state)


def _mask(dims: tuple[Dims, ...]) -> np.ndarray:
    m = np.zeros(layout.ACTION_DIM, bool)
    for d in dims:
        m[d.dst: d.dst + d.n] = True
    return m


_NLI = ("observation", "natural_language_instruction")
_LI = ("language_instruction",)
_RT1_ACTION = (_trans("action", "world_vector", start=0), _rot("action", "rotation_delta", start=0),
               _grip("action", "gripper_closedness_action", index=0))
_FLAT_EEF = (_trans("action"), _rot("action"), _grip("action", index=-1))  # [Δxyz, Δrpy, ..., gripper]
_FLAT_EEF7 = (_trans("action"), _rot("action"), _grip("action", index=6))  # 7 (or more) dims, gripper 7th


def _entry(name: str, image_key: str, instruction_key: tuple[str, ...], action, state=(), **kw) -> OxeEntry:
    return OxeEntry(name, image_key, instruction_key, tuple(action), tuple(state), **kw)


REGISTRY: dict[str, OxeEntry] = {e.name: e for e in [
    # RAIL's own Bridge copy (the fixture): action and state are [xyz, rpy, gripper].
    _entry("bridge_dataset", "image_0", _LI, _FLAT_EEF7,
           (_trans("observation", "state"), _rot("observation", "state"),
            _grip("observation", "state", index=6))),
    # RT-1: dict action; state xyz + quaternion (orientation unmapped) and gripper_closed.
    _entry("fractal20220817_data", "image", _NLI, _RT1_ACTION,
           (_trans("observation", "base_pose_tool_reached"), _grip("observation", "gripper_closed", index=0))),
    # QT-Opt: its state is ZLIB-compressed bytes, left unmapped.
    _entry("kuka", "image", _NLI, _RT1_ACTION, informative_language=False),
    _entry("taco_play", "rgb_static", _NLI,
           (_trans("action", "rel_actions_world"), _rot("action", "rel_actions_world"),
            _grip("action", "rel_actions_world", index=-1)),
           (_trans("observation", "robot_obs"), _rot("observation", "robot_obs"),
            _grip("observation", "robot_obs", index=7))),
    # No rotation in the action (octo pads zeros): left masked.
    _entry("jaco_play", "image", _NLI,
           (_trans("action", "world_vector", start=0), _grip("action", "gripper_closedness_action", index=0)),
           (_trans("observation", "end_effector_cartesian_pos"),)),
    # No gripper action.
    _entry("berkeley_cable_routing", "image", _NLI,
           (_trans("action", "world_vector", start=0), _rot("action", "rotation_delta", start=0)),
           informative_language=False),
    _entry("roboturk", "front_rgb", _NLI, _RT1_ACTION, informative_language=False),
    # Its only camera is on the wrist.
    _entry("nyu_door_opening_surprising_effectiveness", "image", _NLI, _RT1_ACTION, informative_language=False),
    _entry("viola", "agentview_rgb", _NLI, _RT1_ACTION, informative_language=False),
    # robot_state[6:14] is xyz + quaternion + gripper.
    _entry("berkeley_autolab_ur5", "image", _NLI, _RT1_ACTION,
           (_trans("observation", "robot_state", start=6), _grip("observation", "robot_state", index=13))),
    _entry("toto", "image", _NLI,
           (_trans("action", "world_vector", start=0), _rot("action", "rotation_delta", start=0),
            _grip("action", "open_gripper", index=0)), informative_language=False),
    # Planar pushing: a 2-d (x, y) action and effector translation; the instruction is 0-padded code points.
    _entry("language_table", "rgb", ("observation", "instruction"), (_trans("action", n=2),),
           (_trans("observation", "effector_translation", n=2),), instruction_encoding="unicode_codes"),
    _entry("stanford_hydra_dataset_converted_externally_to_rlds", "image", _LI, _FLAT_EEF,
           (_trans("observation", "state"), _rot("observation", "state", start=7),
            _grip("observation", "state", index=-3)), informative_language=False),
    _entry("austin_buds_dataset_converted_externally_to_rlds", "image", _LI, _FLAT_EEF,
           informative_language=False),
    # action[-8:-2] is the EEF delta, action[-2] the gripper; state[-6:] is xyz + rpy.
    _entry("nyu_franka_play_dataset_converted_externally_to_rlds", "image", _LI,
           (_trans("action", start=-8), _rot("action", start=-5), _grip("action", index=-2)),
           (_trans("observation", "state", start=-6), _rot("observation", "state", start=-3)),
           informative_language=False),
    # Rotation delta is a quaternion (convention not in the spec): left masked.
    _entry("furniture_bench_dataset_converted_externally_to_rlds", "image", _LI,
           (_trans("action"), _grip("action", index=-1)),
           (_trans("observation", "state"), _grip("observation", "state", index=-1))),
    _entry("ucsd_kitchen_dataset_converted_externally_to_rlds", "image", _LI, _FLAT_EEF7),
    _entry("austin_sailor_dataset_converted_externally_to_rlds", "image", _LI, _FLAT_EEF,
           (_trans("observation", "state"),), informative_language=False),
    _entry("austin_sirius_dataset_converted_externally_to_rlds", "image", _LI, _FLAT_EEF,
           (_trans("observation", "state"),), informative_language=False),
    # Axis-angle residuals (first of the future steps) and sensed gripper closure.
    _entry("bc_z", "image", _NLI,
           (_trans("action", "future/xyz_residual"),
            _rot("action", "future/axis_angle_residual", start=0, rotation="axis_angle"),
            _grip("action", "future/target_close", index=0)),
           (_trans("observation", "present/xyz"),
            _rot("observation", "present/axis_angle", start=0, rotation="axis_angle"),
            _grip("observation", "present/sensed_close", index=0))),
    _entry("dlr_edan_shared_control_converted_externally_to_rlds", "image", _LI, _FLAT_EEF,
           (_trans("observation", "state"), _rot("observation", "state"))),
    # Rotation delta is a quaternion: left masked.
    _entry("iamlab_cmu_pickup_insert_converted_externally_to_rlds", "image", _LI,
           (_trans("action"), _grip("action", index=7))),
    _entry("utaustin_mutex", "image", _LI, _FLAT_EEF, informative_language=False),
    # 6-d EEF delta, no gripper action.
    _entry("berkeley_fanuc_manipulation", "image", _LI, (_trans("action"), _rot("action"))),
    _entry("cmu_stretch", "image", _LI, _FLAT_EEF7,
           (_trans("observation", "state"), _grip("observation", "state", index=-1))),
    _entry("fmb_dataset", "image_side_1", _LI, _FLAT_EEF7,
           (_trans("observation", "eef_pose"), _rot("observation", "eef_pose"),
            _grip("observation", "state_gripper_pose", index=0))),
    # Its only camera is on the wrist.
    _entry("dobbe", "wrist_image", _LI, _FLAT_EEF7, (_trans("observation", "state"), _rot("observation", "state"))),
    # Base-frame Cartesian velocity command (xyz, rpy) and absolute gripper position (openvla's
    # droid_baseact_transform); state: cartesian_position (xyz, rpy) and gripper_position.
    _entry("droid", "exterior_image_1_left", _LI,
           (_trans("action_dict", "cartesian_velocity"), _rot("action_dict", "cartesian_velocity"),
            _grip("action_dict", "gripper_position", index=0)),
           (_trans("observation", "cartesian_position"), _rot("observation", "cartesian_position"),
            _grip("observation", "gripper_position", index=0))),
]}
# openvla's name for the same RAIL Bridge copy.
REGISTRY["bridge_orig"] = dataclasses.replace(REGISTRY["bridge_dataset"], name="bridge_orig")

# octo's OXE_MAGIC_SOUP sampling multipliers (octo multiplies them by each dataset's transition count).
MAGIC_SOUP: dict[str, float] = {
    "fractal20220817_data": 0.54087122203, "kuka": 0.8341046294, "bridge_dataset": 1.0, "taco_play": 2.0,
    "jaco_play": 1.0, "berkeley_cable_routing": 1.0, "roboturk": 2.0,
    "nyu_door_opening_surprising_effectiveness": 1.0, "viola": 2.0, "berkeley_autolab_ur5": 2.0, "toto": 1.0,
    "language_table": 0.1, "stanford_hydra_dataset_converted_externally_to_rlds": 2.0,
    "austin_buds_dataset_converted_externally_to_rlds": 1.0,
    "nyu_franka_play_dataset_converted_externally_to_rlds": 3.0,
    "furniture_bench_dataset_converted_externally_to_rlds": 0.1,
    "ucsd_kitchen_dataset_converted_externally_to_rlds": 2.0,
    "austin_sailor_dataset_converted_externally_to_rlds": 1.0,
    "austin_sirius_dataset_converted_externally_to_rlds": 1.0, "bc_z": 0.2,
    "dlr_edan_shared_control_converted_externally_to_rlds": 1.0,
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds": 1.0, "utaustin_mutex": 1.0,
    "berkeley_fanuc_manipulation": 2.0, "cmu_stretch": 1.0,
}
# openvla's oxe_magic_soup_plus (openvla c8f03f4): the soup without nyu_door_opening, plus fmb, dobbe, droid
# (openvla notes bc_z is usable in its version 0.1.0 only).
MAGIC_SOUP_PLUS: dict[str, float] = {
    **{k: v for k, v in MAGIC_SOUP.items() if k != "nyu_door_opening_surprising_effectiveness"},
    "fmb_dataset": 1.0, "dobbe": 0.2, "droid": 0.06,
}


def get(name: str) -> OxeEntry:
    """The registry entry of dataset `name`."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown OXE dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}") from None


def _field(tree: dict, path: tuple[str, ...]) -> Any:
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            have = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"step field {'/'.join(path[:i + 1])} not found (have: {have})")
        node = node[key]
    return node


def map_dims(dims: tuple[Dims, ...], steps: dict, num_steps: int) -> np.ndarray:
    """(T, 102) float32: the mapped values of every step, 0 in unmapped dims."""
    out = np.zeros((num_steps, layout.ACTION_DIM), np.float32)
    for d in dims:
        x = np.asarray(_field(steps, d.src), np.float64).reshape(num_steps, -1)
        out[:, d.dst: d.dst + d.n] = d.take(x)
    return out


def num_steps(steps: dict) -> int:
    return len(steps["is_first"])


def _instruction(entry: OxeEntry, steps: dict, t: int, metadata: dict | None) -> str:
    if entry.instruction_key[0] == "episode_metadata":
        value = _field(metadata or {}, entry.instruction_key[1:])
    else:
        value = _field(steps, entry.instruction_key)[t]
    if entry.instruction_encoding == "unicode_codes":
        codes = np.asarray(value).ravel()
        return "".join(chr(int(c)) for c in codes[: np.argmax(codes == 0) if (codes == 0).any() else None])
    return value.decode() if isinstance(value, bytes) else str(value)


def intrinsics(entry: OxeEntry, width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics of the assumed FoV: square pixels, principal point at the centre."""
    f = (width / 2.0) / math.tan(math.radians(entry.fov_x_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], np.float32)


def episode_arrays(entry: OxeEntry, steps: dict) -> dict[str, np.ndarray]:
    """Per-step mapped `action`, `state` and their per-dimension masks, each (T, 102) float32."""
    n = num_steps(steps)
    return {"action": map_dims(entry.action, steps, n),
            "action_mask": np.broadcast_to(entry.action_mask(), (n, layout.ACTION_DIM)).astype(np.float32),
            "state": map_dims(entry.state, steps, n),
            "state_mask": np.broadcast_to(entry.state_mask(), (n, layout.STATE_DIM)).astype(np.float32)}


def frame_sample(entry: OxeEntry, steps: dict, t: int, *, image: np.ndarray, metadata: dict | None = None,
                 chunk_len: int = layout.CHUNK_LEN) -> dict:
    """The policy sample anchored at step t (same keys as `chunks.frame_sample`).

    actions[k] is step t+k's mapped action; rows past the episode end are 0 and masked. `metadata` is the
    episode metadata, read only by entries whose instruction lives there."""
    n = num_steps(steps)
    if not 0 <= t < n:
        raise IndexError(f"step {t} out of range: the episode has {n} steps")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    rows = np.arange(t, min(t + chunk_len, n))
    sub = _take_rows(steps, entry.action, rows)
    actions = np.zeros((chunk_len, layout.ACTION_DIM), np.float32)
    action_mask = np.zeros((chunk_len, layout.ACTION_DIM), np.float32)
    actions[: len(rows)] = map_dims(entry.action, sub, len(rows))
    action_mask[: len(rows)] = entry.action_mask()
    state = map_dims(entry.state, _take_rows(steps, entry.state, np.array([t])), 1)[0]
    h, w = image.shape[:2]
    k = intrinsics(entry, w, h)
    text = _instruction(entry, steps, t, metadata)
    right = instruction.clean_text(text)
    return {
        "image": image,
        "instruction": instruction.format_instruction(None, text),
        "text_left": instruction.NONE_TEXT,
        "text_right": right,
        "main_hand": "right",
        "fov": np.asarray(geometry.fov_from_intrinsics(k, w, h), np.float32),
        "state": state,
        "state_mask": entry.state_mask().astype(np.float32),
        "actions": actions,
        "action_mask": action_mask,
        "intrinsics": k,
        "palm_path": np.zeros((0, 3), np.float32),
    }


def _take_rows(steps: dict, dims: tuple[Dims, ...], rows: np.ndarray) -> dict:
    """The fields `dims` read, restricted to `rows` (same nested layout)."""
    out: dict = {}
    for d in dims:
        node = out
        for key in d.src[:-1]:
            node = node.setdefault(key, {})
        node[d.src[-1]] = np.asarray(_field(steps, d.src))[rows]
    return out
