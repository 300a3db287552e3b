"""The Mei omnidirectional model of raw Ego4D videos and its undistortion maps."""

import pickle

import numpy as np
import pytest

from vitra_jax.handspace import omnidir
from vitra_jax.handspace.episode import EpisodeError

K = np.array([[260.0, 0.0, 241.0], [0.0, 262.0, 179.0], [0.0, 0.0, 1.0]])
NEW_K = np.array([[200.0, 0.0, 240.0], [0.0, 200.0, 180.0], [0.0, 0.0, 1.0]])
D = np.array([-0.12, 0.03, 0.001, -0.0015])


def test_projection_values():
    pinhole = omnidir.OmnidirIntrinsics(K, np.zeros(4), 0.0, NEW_K)
    pts = np.array([[0.1, -0.2, 1.0], [0.5, 0.3, 2.0], [-1.0, 0.4, 0.7]])
    np.testing.assert_allclose(omnidir.project(pts, pinhole), (pts @ K.T)[:, :2] / pts[:, 2:], atol=1e-9)
    # xi = 1 (stereographic): X = (1, 0, 1) -> m = (1/√2) / (1/√2 + 1) = √2 − 1
    cam = omnidir.OmnidirIntrinsics(K, np.zeros(4), 1.0, NEW_K)
    u, v = omnidir.project(np.array([1.0, 0.0, 1.0]), cam)
    assert u == pytest.approx(260 * (np.sqrt(2) - 1) + 241) and v == pytest.approx(179)
    # radial + tangential terms on the normalized point (0.2, -0.1)
    k1, k2, p1, p2 = D
    x, y, r2 = 0.2, -0.1, 0.05
    expected = [x * (1 + k1 * r2 + k2 * r2**2) + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * (1 + k1 * r2 + k2 * r2**2) + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]
    np.testing.assert_allclose(omnidir.distort_normalized(np.array([x, y]), D), expected, atol=1e-12)


def _blobs(centres: np.ndarray, width: int, height: int, sigma: float = 1.3) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width))
    for cx, cy in centres:
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return np.clip(img * 250, 0, 255).astype(np.uint8)


def test_undistorted_frame_shows_points_where_the_pinhole_camera_sees_them():
    """Blobs drawn in a raw frame where the Mei camera sees 3-D points land, after undistortion, where the
    pinhole camera `new_k` sees the same points."""
    from tfds_builders.hand_vla.sources import Undistort

    cam = omnidir.OmnidirIntrinsics(K, D, 0.8, NEW_K)
    width, height = 480, 360
    grid = np.stack(np.meshgrid(np.linspace(60, 420, 7), np.linspace(50, 310, 5)), -1).reshape(-1, 2)
    rays = np.concatenate([grid, np.ones((len(grid), 1))], 1) @ np.linalg.inv(NEW_K).T
    raw_px = omnidir.project(rays, cam)
    assert np.abs(raw_px - grid).max() > 20  # the distortion is strong: points move by tens of pixels
    raw = np.repeat(_blobs(raw_px, width, height)[..., None], 3, -1)
    out = Undistort(cam)(raw)[..., 0].astype(np.float64)
    assert out.shape == (height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    for gx, gy in grid:
        win = (np.abs(xx - gx) <= 6) & (np.abs(yy - gy) <= 6)
        w = out * win
        centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
        np.testing.assert_allclose(centroid, [gx, gy], atol=0.25)
    # A pixel whose ray leaves the raw frame is black, as in the release's BORDER_CONSTANT remap.
    wide = omnidir.OmnidirIntrinsics(K, D, 0.8, np.array([[40.0, 0, 240], [0, 40.0, 180], [0, 0, 1]]))
    map_x, map_y = omnidir.undistort_maps(wide, width, height)
    outside = (map_x < -3) | (map_x > width + 2) | (map_y < -3) | (map_y > height + 2)
    inside = (map_x > 3) & (map_x < width - 4) & (map_y > 3) & (map_y < height - 4)
    grey = Undistort(wide)(np.full_like(raw, 200))
    assert outside.mean() > 0.05 and (grey[outside] == 0).all() and (grey[inside] == 200).all()


def test_load_intrinsics(tmp_path):
    release = {"intrinsics_ori": {"K": K, "D": D.reshape(1, 4), "xi": np.array([[0.8]])},
               "intrinsics_new": {"K": NEW_K}}
    np.save(tmp_path / "v.npy", release, allow_pickle=True)
    cam = omnidir.load_intrinsics(tmp_path / "v.npy")
    np.testing.assert_array_equal(cam.k, K)
    np.testing.assert_array_equal(cam.d, D)
    assert cam.xi == 0.8 and cam.needs_undistortion
    np.testing.assert_array_equal(cam.new_k, NEW_K)
    np.save(tmp_path / "flat.npy", {**release, "intrinsics_ori": {**release["intrinsics_ori"], "xi": 0.0}})
    assert not omnidir.load_intrinsics(tmp_path / "flat.npy").needs_undistortion

    with pytest.raises(EpisodeError, match="missing_intrinsics"):
        omnidir.load_intrinsics(tmp_path / "nope.npy")
    np.save(tmp_path / "partial.npy", {"intrinsics_ori": release["intrinsics_ori"]})
    with pytest.raises(EpisodeError, match="bad_intrinsics.*intrinsics_new"):
        omnidir.load_intrinsics(tmp_path / "partial.npy")
    nan_k = K.copy()
    nan_k[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", {**release, "intrinsics_new": {"K": nan_k}})
    with pytest.raises(EpisodeError, match="bad_intrinsics.*non-finite"):
        omnidir.load_intrinsics(tmp_path / "nan.npy")
    # A pickle that would call anything but numpy's array reconstruction is refused, not run.
    with open(tmp_path / "evil.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_Evil(), f)
    with pytest.raises(EpisodeError, match="bad_intrinsics.*refusing to load posix.system"):
        omnidir.load_intrinsics(tmp_path / "evil.npy")


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo should-not-run",)
