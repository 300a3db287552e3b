"""Records passed between labeling stages (numpy only).

Every record is a dataclass whose fields are numpy arrays, Python scalars, strings, or dicts/lists of
those (records may nest), so the run store can save any stage result per clip atomically and read it back.
Frame indices inside a clip's records count from the clip's first frame; `Clip.start` maps them to the
video. Camera frames are OpenCV axes (x right, y down, z forward), metres.
"""

from __future__ import annotations

import dataclasses

import numpy as np

HANDS = ("left", "right")


@dataclasses.dataclass
class VideoInfo:
    path: str
    video_id: str  # file stem, unique within a run
    fps: float
    width: int
    height: int
    num_frames: int


@dataclasses.dataclass
class Clip:
    """Frames [start, stop) of a video; neighbouring clips overlap so results can be stitched."""

    video_id: str
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.video_id}/clip{self.index:04d}"

    def __len__(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass
class Intrinsics:
    """Pinhole intrinsics of the frames the later stages see (after undistortion), in their pixels."""

    k: np.ndarray  # (3, 3)
    width: int
    height: int
    source: str  # 'geocalib' | 'moge' | 'droidcalib' | 'fov_prior' | 'metadata' | 'given'
    # Distortion of the raw frames: {'model': 'none'} or {'model': 'omnidir', 'k': (3,3), 'd': (4,), 'xi': float}
    # or the backend's own model; `undistort` turns the raw frames into the pinhole frames of `k`.
    distortion: dict = dataclasses.field(default_factory=lambda: {"model": "none"})


@dataclasses.dataclass
class CameraMotion:
    label: str  # 'static' | 'moving'
    median_flow_px: float  # robust statistic of background flow, px/frame at the analysis width
    stats: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CamHand:
    """One hand in camera space over T frames, in the release's conventions (vitra_jax.handspace.mano).

    `wrist` is the wrist *joint* position (not MANO's `transl`). `hand_pose` is in right-hand form for both
    hands; for a left hand the right-hand model's joints are mirrored in x and then `orient` applies:
    joints = orient · mirror(J_right − J0) + wrist. Untracked frames have kept=False (values undefined).
    """

    kept: np.ndarray  # (T,) bool
    wrist: np.ndarray  # (T, 3)
    orient: np.ndarray  # (T, 3, 3)
    hand_pose: np.ndarray  # (T, 15, 3, 3)
    joints: np.ndarray  # (T, 21, 3) OpenPose order
    beta: np.ndarray  # (10,)
    score: np.ndarray  # (T,) detection confidence in [0, 1], 0 where untracked


@dataclasses.dataclass
class CamHands:
    hands: dict[str, CamHand]  # 'left', 'right'
    backend: str
    version: str


@dataclasses.dataclass
class CameraPoses:
    extrinsics: np.ndarray  # (T, 4, 4) world -> camera; world = camera of the first frame unless the backend says
    source: str  # 'static' | 'megasam' | 'hawor_slam' | 'given'
    scale_known: bool = True  # False when translations are up to an unknown scale


@dataclasses.dataclass
class Segment:
    """An atomic action of one hand: video frames [start, stop)."""

    hand: str
    start: int
    stop: int


@dataclasses.dataclass
class Dropped:
    hand: str
    start: int
    stop: int
    reason: str  # e.g. 'too_short' | 'too_long' | 'low_motion' | 'untracked'


@dataclasses.dataclass
class Caption:
    hand: str
    start: int
    stop: int
    text: str | None  # None when the model answered N/A or captioning was off
    model: str
    prompt_version: str
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False


def empty_cam_hand(num_frames: int) -> CamHand:
    """A hand never seen in `num_frames` frames."""
    eye = np.broadcast_to(np.eye(3), (num_frames, 3, 3)).copy()
    return CamHand(kept=np.zeros(num_frames, bool), wrist=np.zeros((num_frames, 3)), orient=eye,
                   hand_pose=np.broadcast_to(np.eye(3), (num_frames, 15, 3, 3)).copy(),
                   joints=np.zeros((num_frames, 21, 3)), beta=np.zeros(10), score=np.zeros(num_frames))
