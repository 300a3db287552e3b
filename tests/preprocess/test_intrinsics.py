"""Intrinsics backends on files written in each tool's documented format, and frame undistortion."""

import json
import math

import numpy as np
import pytest

from preprocess import intrinsics
from preprocess.records import VideoInfo
from vitra_jax.handspace import omnidir

INFO = VideoInfo(path="v.mp4", video_id="v", fps=30.0, width=480, height=368, num_frames=10)


def test_fov_prior_is_half_width_over_tan_half_fov():
    k = intrinsics.FovPrior(90.0).estimate(INFO).k
    np.testing.assert_allclose(k, [[240, 0, 240], [0, 240, 184], [0, 0, 1]], atol=1e-12)  # tan 45° = 1
    k = intrinsics.FovPrior(60.0).estimate(INFO).k
    assert k[0, 0] == pytest.approx(240 * math.sqrt(3)) and k[1, 1] == k[0, 0]  # tan 30° = 1/√3
    with pytest.raises(ValueError, match="fov_x_deg"):
        intrinsics.FovPrior(180.0)


def _blobs(centres, width, height, sigma=1.3):
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width))
    for cx, cy in centres:
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(img * 250, 0, 255).astype(np.uint8)[..., None], 3, -1)


def _centroids(img, points, radius=6):
    img = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    out = []
    for gx, gy in points:
        w = img * ((np.abs(xx - gx) <= radius) & (np.abs(yy - gy) <= radius))
        out.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(out)


# 3-D points spread over the view, in front of the camera (camera axes, metres).
GRID = np.stack(np.meshgrid(np.linspace(-0.8, 0.8, 6), np.linspace(-0.55, 0.55, 4), [1.0]), -1).reshape(-1, 3)


def _check_undistortion(intr, raw_pixels_of, scale=1.0):
    """Blobs drawn in the raw frame where the distorted camera sees GRID land, after `undistort`, where the
    pinhole K of `intr` projects the same points (K @ X, written out)."""
    width, height = round(INFO.width * scale), round(INFO.height * scale)
    raw_px = raw_pixels_of(GRID) * scale
    k = intr.k * np.array([[scale], [scale], [1.0]])
    pinhole_px = (GRID @ k.T)[:, :2] / GRID[:, 2:]
    inside = (pinhole_px > 8).all(1) & (pinhole_px[:, 0] < width - 8) & (pinhole_px[:, 1] < height - 8)
    inside &= (raw_px > 8).all(1) & (raw_px[:, 0] < width - 8) & (raw_px[:, 1] < height - 8)
    assert inside.sum() >= 8 and np.abs(raw_px - pinhole_px)[inside].max() > 8  # distortion moves points
    raw = _blobs(raw_px[inside], width, height)
    out = intrinsics.undistort(raw[None], intr)[0]
    np.testing.assert_allclose(_centroids(out, pinhole_px[inside]), pinhole_px[inside], atol=0.3 + 0.2 / scale)


K_RAW = np.array([[260.0, 0.0, 241.0], [0.0, 262.0, 185.0], [0.0, 0.0, 1.0]])
K_NEW = np.array([[200.0, 0.0, 240.0], [0.0, 200.0, 184.0], [0.0, 0.0, 1.0]])
D = np.array([-0.12, 0.03, 0.001, -0.0015])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_ego4d_omnidir_undistortion_lands_on_the_pinhole_projection(tmp_path, scale):
    release = {"intrinsics_ori": {"K": K_RAW, "D": D.reshape(1, 4), "xi": np.array([[0.8]])},
               "intrinsics_new": {"K": K_NEW}}
    np.save(tmp_path / "video.npy", release, allow_pickle=True)
    intr = intrinsics.Ego4DOmnidirReader(tmp_path / "video.npy").estimate(INFO)
    np.testing.assert_array_equal(intr.k, K_NEW)
    assert intr.distortion["model"] == "omnidir" and intr.distortion["xi"] == 0.8
    cam = omnidir.OmnidirIntrinsics(K_RAW, D, 0.8, K_NEW)
    _check_undistortion(intr, lambda x: omnidir.project(x, cam), scale)
    # xi = 0: the release leaves the frames as they are.
    release["intrinsics_ori"]["xi"] = np.array([[0.0]])
    np.save(tmp_path / "flat.npy", release, allow_pickle=True)
    flat = intrinsics.Ego4DOmnidirReader(tmp_path / "flat.npy").estimate(INFO)
    frames = np.random.default_rng(0).integers(0, 255, (2, 368, 480, 3), dtype=np.uint8)
    assert flat.distortion == {"model": "none"} and intrinsics.undistort(frames, flat) is frames


def test_droidcalib_printout_pinhole_and_mei(tmp_path):
    printed = ("################################\nInitial intrinsics:\n"
               "fx = 424.0, fy = 424.0, ppx = 240.0, ppy = 184.0\nEstimated intrinsics:\n"
               "fx = 251.20, fy = 252.80, ppx = 241.50, ppy = 183.25\n")
    (tmp_path / "pinhole.txt").write_text(printed)
    intr = intrinsics.DroidCalibReader(tmp_path / "pinhole.txt").estimate(INFO)
    np.testing.assert_array_equal(intr.k, [[251.2, 0, 241.5], [0, 252.8, 183.25], [0, 0, 1]])
    assert intr.distortion == {"model": "none"} and intr.source == "droidcalib"
    # Calibrated on frames extracted at half size: K doubles for the video.
    half = intrinsics.DroidCalibReader(tmp_path / "pinhole.txt", image_size=(240, 184)).estimate(INFO)
    np.testing.assert_allclose(half.k, [[502.4, 0, 483], [0, 505.6, 366.5], [0, 0, 1]])
    (tmp_path / "mei.txt").write_text(printed.replace("ppy = 183.25", "ppy = 183.25, xi = 0.900"))
    intr = intrinsics.DroidCalibReader(tmp_path / "mei.txt").estimate(INFO)
    # Pinhole target: f / (1 + xi) at the image centre.
    np.testing.assert_allclose(intr.k, [[251.2 / 1.9, 0, 240], [0, 252.8 / 1.9, 184], [0, 0, 1]])
    # The Mei model is the unified model without lens terms: handspace.omnidir with D = 0.
    cam = omnidir.OmnidirIntrinsics(intrinsics.pinhole_k(251.2, 252.8, 241.5, 183.25), np.zeros(4), 0.9, intr.k)
    _check_undistortion(intr, lambda x: omnidir.project(x, cam))
    (tmp_path / "plain.txt").write_text("251.2 252.8 241.5 183.25 0.9\n")
    np.testing.assert_array_equal(intrinsics.DroidCalibReader(tmp_path / "plain.txt").estimate(INFO).k, intr.k)
    (tmp_path / "bad.txt").write_text("Estimated intrinsics:\nnothing converged\n")
    with pytest.raises(intrinsics.IntrinsicsError, match="bad_intrinsics: .*bad.txt"):
        intrinsics.DroidCalibReader(tmp_path / "bad.txt").estimate(INFO)
    with pytest.raises(intrinsics.IntrinsicsError, match="unreadable_intrinsics"):
        intrinsics.DroidCalibReader(tmp_path / "absent.txt").estimate(INFO)


def test_moge_fov_json_folder_and_normalised_intrinsics(tmp_path):
    (tmp_path / "fov.json").write_text(json.dumps({"fov_x": 90.0, "fov_y": 60.0}))
    k = intrinsics.MoGeReader(tmp_path / "fov.json").estimate(INFO).k
    np.testing.assert_allclose(k, [[240, 0, 240], [0, 184 * math.sqrt(3), 184], [0, 0, 1]], atol=1e-9)
    for i, fov_x in enumerate([80.0, 90.0, 120.0]):  # `moge infer -o out --maps` on a folder of frames
        (tmp_path / "out" / f"{i:04d}").mkdir(parents=True)
        (tmp_path / "out" / f"{i:04d}" / "fov.json").write_text(json.dumps({"fov_x": fov_x, "fov_y": 60.0}))
    assert intrinsics.MoGeReader(tmp_path / "out").estimate(INFO).k[0, 0] == pytest.approx(240.0)  # median 90°
    norm = np.array([[[0.5, 0, 0.5], [0, 0.6, 0.5], [0, 0, 1]], [[0.7, 0, 0.5], [0, 0.8, 0.5], [0, 0, 1]],
                     [[0.6, 0, 0.5], [0, 0.7, 0.5], [0, 0, 1]]])
    np.save(tmp_path / "intrinsics.npy", norm)
    k = intrinsics.MoGeReader(tmp_path / "intrinsics.npy").estimate(INFO).k
    np.testing.assert_allclose(k, [[0.6 * 480, 0, 240], [0, 0.7 * 368, 184], [0, 0, 1]])
    np.save(tmp_path / "pixels.npy", intrinsics.pinhole_k(300, 300, 240, 184))
    with pytest.raises(intrinsics.IntrinsicsError, match="not normalised"):
        intrinsics.MoGeReader(tmp_path / "pixels.npy").estimate(INFO)
    (tmp_path / "bad.json").write_text(json.dumps({"fov": 90}))
    with pytest.raises(intrinsics.IntrinsicsError, match="fov_x"):
        intrinsics.MoGeReader(tmp_path / "bad.json").estimate(INFO)


def test_geocalib_camera_forms_and_scaling(tmp_path):
    # Dict form with a vertical FoV (radians) at half the video size: f = 0.5·184 / tan(30°), scaled ×2.
    (tmp_path / "dict.json").write_text(json.dumps({"width": 240, "height": 184, "vfov": math.pi / 3}))
    intr = intrinsics.GeoCalibReader(tmp_path / "dict.json").estimate(INFO)
    f = 2 * 92 * math.sqrt(3)
    np.testing.assert_allclose(intr.k, [[f, 0, 240], [0, f, 184], [0, 0, 1]])
    assert intr.distortion == {"model": "none"} and intr.source == "geocalib"
    cams = [{"camera_model": "simple_radial", "camera": [480, 368, f0, f0, 240, 184, k1]}
            for f0, k1 in [(300, -0.1), (310, -0.2), (320, -0.3)]]
    (tmp_path / "per_frame.json").write_text(json.dumps(cams))
    intr = intrinsics.GeoCalibReader(tmp_path / "per_frame.json").estimate(INFO)
    np.testing.assert_allclose(intr.k, intrinsics.pinhole_k(310, 310, 240, 184))
    assert intr.distortion["model"] == "simple_radial" and intr.distortion["k1"] == pytest.approx(-0.2)
    (tmp_path / "other_aspect.json").write_text(json.dumps({"width": 480, "height": 480, "f": 300}))
    with pytest.raises(intrinsics.IntrinsicsError, match="size_mismatch"):
        intrinsics.GeoCalibReader(tmp_path / "other_aspect.json").estimate(INFO)
    (tmp_path / "fisheye.json").write_text(json.dumps({"camera_model": "kannala", "camera": [1, 1, 1, 1, 0, 0]}))
    with pytest.raises(intrinsics.IntrinsicsError, match="camera_model 'kannala'"):
        intrinsics.GeoCalibReader(tmp_path / "fisheye.json").estimate(INFO)


def test_geocalib_radial_and_divisional_undistortion():
    k = intrinsics.pinhole_k(300.0, 300.0, 240.0, 184.0)

    def radial(points, k1=-0.25):  # GeoCalib SimpleRadial.distort: x_d = x (1 + k1 r²)
        m = points[:, :2] / points[:, 2:]
        return (m * (1 + k1 * (m**2).sum(1, keepdims=True))) * 300 + [240, 184]

    intr = intrinsics.Intrinsics(k=k, width=480, height=368, source="geocalib",
                                 distortion={"model": "simple_radial", "k": k, "k1": -0.25})
    _check_undistortion(intr, radial)

    # SimpleDivisional is defined by its undistortion x_u = x_d / (1 + k1 r_d²): start from raw pixels.
    k1 = -0.4
    raw_px = np.stack(np.meshgrid(np.linspace(60, 420, 6), np.linspace(50, 320, 4)), -1).reshape(-1, 2)
    md = (raw_px - [240, 184]) / 300
    mu = md / (1 + k1 * (md**2).sum(1, keepdims=True))
    pinhole_px = mu * 300 + [240, 184]
    intr = intrinsics.Intrinsics(k=k, width=480, height=368, source="geocalib",
                                 distortion={"model": "simple_divisional", "k": k, "k1": k1})
    out = intrinsics.undistort(_blobs(raw_px, 480, 368)[None], intr)[0]
    keep = (pinhole_px > 8).all(1) & (pinhole_px[:, 0] < 472) & (pinhole_px[:, 1] < 360)
    assert keep.sum() >= 12 and np.abs(raw_px - pinhole_px)[keep].max() > 8
    np.testing.assert_allclose(_centroids(out, pinhole_px[keep]), pinhole_px[keep], atol=0.4)
