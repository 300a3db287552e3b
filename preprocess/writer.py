"""Episode writer: one episode file pair (format v1, `vitra_jax.handspace.episode`) per kept segment.

An episode covers the video frames [start, stop) of one hand's segment: its cameras (world→camera), the
intrinsics of the pinhole frames expressed for the original video size (principal point at the centre, as
the format and the `hand_vla` builder expect), both hands' world tracks sliced to the span, the segment's
hand as `main_hand` with its caption over the whole episode, and the other hand's captions that overlap
the span (clipped, in episode frames). Episodes land in `{output}/episodes/{video_id}/{stem}` with the
deterministic stem `{video_id}_{hand}_{start:06d}`, so `tfds build hand_vla --config=episodes
--manual_dir={output}` reads them; `video` is the absolute path of the source video. Optional previews
(`preprocess.preview`) go to `{output}/previews/{video_id}/{stem}.png|mp4`.
"""

from __future__ import annotations

import bisect
import os
import tempfile

import numpy as np
from etils import epath

from preprocess import records, store
from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry
from vitra_jax.handspace.trajectory import HandTrack

EPISODES_DIR = "episodes"
PREVIEWS_DIR = "previews"
VIDEOS_DIR = "videos"


def episode_stem(video_id: str, hand: str, start: int) -> str:
    return f"{video_id}_{hand}_{start:06d}"


def episode_path(root: str | os.PathLike, video_id: str, hand: str, start: int) -> epath.Path:
    """Stem (no suffix) of a segment's episode files under the run folder `root`."""
    return epath.Path(root) / EPISODES_DIR / video_id / episode_stem(video_id, hand, start)


def slice_track(track: HandTrack, start: int, stop: int) -> HandTrack:
    return HandTrack(wrist=track.wrist[start:stop], orient=track.orient[start:stop],
                     hand_pose=track.hand_pose[start:stop], joints=track.joints[start:stop],
                     kept=track.kept[start:stop].astype(bool), beta=track.beta)


def episode_text(segment: records.Segment, captions: dict[str, list[records.Caption]]) -> dict:
    """{main hand: [(caption, (0, T))], other hand: its captions overlapping the segment, clipped}.

    `captions` holds every caption of the video per hand (video frames), each list sorted by start; captions
    of one hand cover its disjoint segments, so their stops are sorted too and the overlapping ones are found
    by bisection. Captions without text (N/A or captioning off) are left out, and so is the main hand when
    it has none.
    """
    n = segment.stop - segment.start
    text: dict[str, list[tuple[str, tuple[int, int]]]] = {}
    near = {}
    for hand, caps in captions.items():
        hi = bisect.bisect_left(caps, segment.stop, key=lambda c: c.start)
        lo = bisect.bisect_right(caps, segment.start, hi=hi, key=lambda c: c.stop)
        near[hand] = caps[lo:hi]  # the captions overlapping [start, stop)
    main = next((c for c in near.get(segment.hand, [])
                 if (c.start, c.stop) == (segment.start, segment.stop) and c.text), None)
    if main is not None:
        text[segment.hand] = [(main.text, (0, n))]
    for hand, caps in sorted(near.items()):
        if hand == segment.hand:
            continue
        spans = [(c.text, (max(c.start, segment.start) - segment.start, min(c.stop, segment.stop) - segment.start))
                 for c in caps if c.text]
        if spans:
            text[hand] = spans
    return text


def build_episode(*, info: records.VideoInfo, segment: records.Segment, tracks: dict[str, HandTrack],
                  extrinsics: np.ndarray, intrinsics: records.Intrinsics, camera_motion: str,
                  captions: dict[str, list[records.Caption]], labeler_versions: dict[str, str],
                  source: str, video: str | None = None) -> episode_lib.Episode:
    """The episode of `segment`; tracks and extrinsics cover the whole video (frame = row). `video`: the
    file the episode's frames come from (default: the source video; an undistorted copy for distorted ones)."""
    start, stop = segment.start, segment.stop
    k = geometry.resize_intrinsics(intrinsics.k, info.width, info.height)
    return episode_lib.Episode(
        video=video or os.path.abspath(info.path), video_name=info.video_id,
        frame_index=np.arange(start, stop, dtype=np.int64),
        extrinsics=np.asarray(extrinsics[start:stop], np.float64), intrinsics=k,
        hands={h: slice_track(tracks[h], start, stop) for h in records.HANDS},
        text=episode_text(segment, captions), main_hand=segment.hand, fps=float(info.fps),
        camera_motion=camera_motion, labeler_versions=dict(labeler_versions), source=source)


def is_local(path: str | os.PathLike) -> bool:
    """A path on this machine's file system (not a URI such as gs://bucket/run)."""
    return "://" not in os.fspath(path)


def write(stem: str | os.PathLike, ep: episode_lib.Episode) -> None:
    """Validate and write `{stem}.npz` then `{stem}.json`, each atomically (local folder or epath URI)."""
    stem = epath.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if is_local(stem):
        episode_lib.write_episode(os.fspath(stem), ep)
    else:
        copy_write(stem, ep)


def copy_write(stem: epath.Path, ep: episode_lib.Episode) -> None:
    """Write the episode in a local temporary folder, then copy each file to `stem` with temp + rename
    (npz first, json last), for stores that `write_episode` cannot open directly."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, stem.name)
        episode_lib.write_episode(local, ep)
        for suffix in (".npz", ".json"):
            with open(local + suffix, "rb") as f:
                store.atomic_write(stem.parent / (stem.name + suffix), f.read())


def exists(stem: epath.Path) -> bool:
    """Whether the episode is complete (its json is written last)."""
    return (epath.Path(stem).parent / (epath.Path(stem).name + ".json")).exists()


def write_preview(root: str | os.PathLike, stem: epath.Path, ep: episode_lib.Episode, fmt: str) -> epath.Path:
    """`{root}/previews/{video_id}/{stem}.{png|mp4}`: the episode's frames with the palm path and captions
    (`preprocess.preview`), written once."""
    from preprocess import preview

    out = epath.Path(root) / PREVIEWS_DIR / ep.video_name / f"{epath.Path(stem).name}.{fmt}"
    if not out.exists():
        preview.render_preview(ep, ep.video, out, fmt=fmt)
    return out


def undistorted_video(root: str | os.PathLike, info: records.VideoInfo, intrinsics: records.Intrinsics) -> str:
    """`{root}/videos/{video_id}.mp4`: frames 0..num_frames-1 of a distorted video, undistorted to the pinhole
    camera of `intrinsics` at the video's own size (the episodes' intrinsics describe these frames, and the
    dataset builder decodes the episode's `video` as it is). Written once, atomically; returns its path."""
    import cv2

    from preprocess import intrinsics as intrinsics_lib
    from preprocess import video as video_lib

    out = epath.Path(root) / VIDEOS_DIR / f"{info.video_id}.mp4"
    if out.exists():
        return os.fspath(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "video.mp4")
        sink = cv2.VideoWriter(local, cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (info.width, info.height))
        cap = cv2.VideoCapture(info.path, cv2.CAP_FFMPEG)
        try:
            for i in range(info.num_frames):  # decoded in order, one frame in memory at a time
                ok, bgr = cap.read()
                if not ok:
                    raise video_lib.VideoError("truncated_video", f"{info.path}: decoded {i} of {info.num_frames} frames")
                sink.write(intrinsics_lib.undistort(bgr[None], intrinsics)[0])
        finally:
            cap.release()
            sink.release()
        with open(local, "rb") as f:
            store.atomic_write(out, f.read())
    return os.fspath(out)
