"""Trajectory overlay on the official VITRA example: drawn pixels against projections computed here."""

import numpy as np
import pytest

from preprocess.caption import overlay
from preprocess.records import Segment
from tests.preprocess.vitra_example import H, W, arrays, decode_rgb, video_path
from vitra_jax.handspace.trajectory import HandTrack


@pytest.fixture(scope="module")
def example(fixtures_dir):
    z = arrays(fixtures_dir)
    track = HandTrack(wrist=z["right/transl_worldspace"], orient=z["right/global_orient_worldspace"],
                      hand_pose=z["right/hand_pose"], joints=z["right/joints_worldspace"],
                      kept=z["right/kept_frames"].astype(bool), beta=z["right/beta"])
    k = z["intrinsics"].astype(np.float64)
    # Release intrinsics (1440x1080 original) normalised by (2cx, 2cy), then scaled to the 480x368 video.
    k_video = np.array([[k[0, 0] / (2 * k[0, 2]) * W, 0, k[0, 2] / (2 * k[0, 2]) * W],
                        [0, k[1, 1] / (2 * k[1, 2]) * H, k[1, 2] / (2 * k[1, 2]) * H], [0, 0, 1]])
    return decode_rgb(video_path(fixtures_dir)), track, z["extrinsics"].astype(np.float64), k_video


def projected_palm(track, extrinsics, k, t, stop):
    """Palm (mean of OpenPose joints 0, 2, 5, 9, 13, 17) of frames t..stop-1 in camera t, in pixels."""
    out = []
    for s in range(t, stop):
        palm = np.mean([track.joints[s, j] for j in (0, 2, 5, 9, 13, 17)], axis=0)
        cam = extrinsics[t, :3, :3] @ palm + extrinsics[t, :3, 3]
        out.append([k[0, 0] * cam[0] / cam[2] + k[0, 2], k[1, 1] * cam[1] / cam[2] + k[1, 2]])
    return np.array(out)


def distance_to_polyline(points, poly):
    """Distance of each point (N, 2) to the polyline through `poly` (M, 2)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(poly[:-1], poly[1:]):
        ab = b - a
        s = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + s[:, None] * ab), axis=1))
    return best


def test_drawn_pixels_follow_the_projected_future_palm(example):
    frames, track, extrinsics, k = example
    assert frames.shape == (25, H, W, 3)
    out = overlay.overlay_frames(frames, Segment("right", 0, 25), track, extrinsics, k)
    assert [t for t, _ in out] == [0, 3, 6, 10, 13, 17, 20, 24]  # linspace(0, 24, 8) truncated
    for t, image in out:
        uv = projected_palm(track, extrinsics, k, t, 25)
        changed = np.any(image != frames[t], axis=-1)
        ys, xs = np.nonzero(changed)
        pix = np.stack([xs, ys], 1).astype(float)
        # Every changed pixel is on the path (cv2 thickness 3 paints 5 px wide, plus 1 px antialiasing) or
        # on the start dot (radius 5 px, plus antialiasing).
        on_path = distance_to_polyline(pix, uv) <= 4.0 if len(uv) > 1 else np.zeros(len(pix), bool)
        on_dot = np.linalg.norm(pix - uv[0], axis=1) <= 7.0
        assert np.all(on_path | on_dot), f"frame {t}: {np.sum(~(on_path | on_dot))} stray pixels"
        # ...and the path is really drawn: the pixel under every projected palm position changed.
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        assert inside.all()
        px = np.round(uv).astype(int)
        assert changed[px[:, 1], px[:, 0]].all(), f"frame {t}"
        # Blue dot at the palm now; red at the end of a drawn path (alpha 0.7 over the frame).
        r, g, b = image[px[0, 1], px[0, 0]].astype(int)
        assert b >= 178 and r <= 77 and g <= 77
        if len(uv) > 2 and np.linalg.norm(uv[-1] - uv[0]) > 8:
            r, g, b = image[px[-1, 1], px[-1, 0]].astype(int)
            assert r >= 170 and g <= 90 and b <= 90, (t, (r, g, b))


def test_trajectory_ends_at_the_spray_bottle(example):
    frames, track, extrinsics, k = example
    (t, image), *_ = overlay.overlay_frames(frames, Segment("right", 0, 25), track, extrinsics, k)
    assert t == 0
    # The bottle's red label in the raw first frame, found by colour near the bottle (by eye: x 295-330,
    # y 90-160): the strongly red pixels there.
    raw = frames[0].astype(int)
    red = (raw[..., 0] - np.maximum(raw[..., 1], raw[..., 2])) > 80
    window = np.zeros_like(red)
    window[105:125, 295:330] = True
    ys, xs = np.nonzero(red & window)
    assert len(xs) >= 20
    label = np.array([xs.mean(), ys.mean()])
    uv = projected_palm(track, extrinsics, k, 0, 25)
    assert np.linalg.norm(uv[-1] - label) < 30  # the palm ends beside the bottle it grasps...
    assert np.linalg.norm(uv[0] - label) > 150  # ...after travelling from the bottom right of the view
    end = np.round(uv[-1]).astype(int)
    assert 295 <= end[0] <= 330 and 90 <= end[1] <= 160
    r, g, b = image[end[1], end[0]].astype(int)
    assert r >= 170 and g <= 90 and b <= 90


def straight_track(kept, z=1.0):
    """A palm moving 4 cm per frame along +x at depth z in front of the identity camera."""
    n = len(kept)
    joints = np.zeros((n, 21, 3))
    joints[:, :, 0] = (np.arange(n) * 0.04 - 0.4)[:, None]
    joints[:, :, 2] = z
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    return HandTrack(wrist=joints[:, 0], orient=eye, hand_pose=np.broadcast_to(np.eye(3), (n, 15, 3, 3)),
                     joints=joints, kept=np.asarray(kept, bool), beta=np.zeros(10))


def test_untracked_frames_leave_a_gap():
    n = 21
    kept = np.ones(n, bool)
    kept[9:12] = False
    frames = np.full((n, 80, 120, 3), 40, np.uint8)
    extrinsics = np.broadcast_to(np.eye(4), (n, 4, 4))
    k = np.array([[100.0, 0, 60], [0, 100, 40], [0, 0, 1]])
    (t, image), *_ = overlay.overlay_frames(frames, Segment("right", 0, n), straight_track(kept), extrinsics, k,
                                            num_frames=1)
    assert t == 0
    changed = np.any(image != 40, axis=-1)
    # u = 100 * x + 60 with x = 0.04 s - 0.4: frames 0..8 at u 20..52, frames 12..20 at u 68..100, v = 40.
    assert changed[40, 20:53].all() and changed[40, 68:101].all()
    assert not changed[:, 52 + 4:68 - 4].any()  # nothing between frames 8 and 12 (beyond line caps)
    assert not changed[:, 101 + 4:].any() and not changed[:40 - 7].any() and not changed[40 + 8:].any()  # dot: r 5


def test_points_behind_the_camera_are_not_drawn():
    n = 5
    track = straight_track(np.ones(n, bool), z=-1.0)
    image = overlay.draw_path(np.zeros((40, 60, 3), np.uint8), *overlay.future_path(
        overlay.palm_positions(track), track.kept, np.broadcast_to(np.eye(4), (n, 4, 4)),
        np.array([[50.0, 0, 30], [0, 50, 20], [0, 0, 1]]), 0, n))
    assert not image.any()


def test_a_segment_to_a_far_point_is_drawn_up_to_the_edge():
    # From (10, 20) towards a point a million pixels to the right on the row v = 20 (palm nearly on the
    # camera plane): the visible part still runs to the image border.
    image = overlay.draw_path(np.zeros((40, 60, 3), np.uint8), np.array([[10.0, 20.0], [1e6, 20.0]]),
                              np.array([True, True]))
    changed = image.any(-1)
    assert changed[20, 10:60].all() and not changed[:14].any() and not changed[27:].any()


def test_bad_inputs_name_the_problem(example):
    frames, track, extrinsics, k = example
    with pytest.raises(ValueError, match="segment"):
        overlay.overlay_frames(frames, Segment("right", 20, 30), track, extrinsics, k)
    with pytest.raises(ValueError, match="uint8"):
        overlay.overlay_frames(frames.astype(np.float32), Segment("right", 0, 5), track, extrinsics, k)
    with pytest.raises(ValueError, match="extrinsics"):
        overlay.overlay_frames(frames, Segment("right", 0, 5), track, extrinsics[:10], k)
