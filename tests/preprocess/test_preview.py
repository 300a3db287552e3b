"""Episode previews of the official VITRA example: files decode, sizes, and the path drawn where it projects."""

import cv2
import numpy as np
import pytest

from preprocess import preview
from tests.preprocess.vitra_example import H, W, decode_rgb, episode, video_path


@pytest.fixture(scope="module")
def example(fixtures_dir):
    return episode(fixtures_dir), decode_rgb(video_path(fixtures_dir))


def palm_pixels(ep, t):
    """Future palm (mean of joints 0, 2, 5, 9, 13, 17) of frames t..24 in camera t, on the 480x368 video."""
    k = ep.intrinsics
    fx, fy = k[0, 0] / (2 * k[0, 2]) * W, k[1, 1] / (2 * k[1, 2]) * H  # normalised by (2cx, 2cy), scaled
    uv = []
    for s in range(t, 25):
        palm = ep.hands["right"].joints[s][[0, 2, 5, 9, 13, 17]].mean(0)
        cam = ep.extrinsics[t, :3, :3] @ palm + ep.extrinsics[t, :3, 3]
        uv.append([fx * cam[0] / cam[2] + W / 2, fy * cam[1] / cam[2] + H / 2])
    return np.array(uv)


def distance(pix, uv):
    """Distance of pixels (N, 2) to the polyline through uv and to its first point (the start dot)."""
    best = np.linalg.norm(pix - uv[0], axis=1)
    for a, b in zip(uv[:-1], uv[1:]):
        ab = b - a
        s = np.clip(((pix - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(pix - (a + s[:, None] * ab), axis=1))
    return best


def far_from(uv, margin):
    """Mask (H, W) of pixels farther than `margin` from the path."""
    ys, xs = np.mgrid[:H, :W]
    return (distance(np.stack([xs.ravel(), ys.ravel()], 1).astype(float), uv) > margin).reshape(H, W)


def test_png_strip(example, tmp_path):
    ep, raw = example
    out = preview.render_preview(ep, ep.video, tmp_path / "previews" / "ep.png")
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["ep.png"]  # no temporary left over
    strip = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert strip.shape == (2 * H + 24, 4 * W, 3)  # 2 rows of 4 frames + one caption line (left's span is empty)
    for i, t in enumerate([0, 3, 6, 10, 13, 17, 20, 24]):
        tile = strip[(i // 4) * H:(i // 4 + 1) * H, (i % 4) * W:(i % 4 + 1) * W]
        uv = palm_pixels(ep, t)
        px = np.round(uv).astype(int)
        changed = np.any(tile != raw[t], axis=-1)
        assert changed[px[:, 1], px[:, 0]].all(), f"tile {i}: path not drawn where the palm projects"
        ys, xs = np.nonzero(changed)  # PNG is lossless: only pixels on the path and start dot changed
        assert distance(np.stack([xs, ys], 1).astype(float), uv).max() <= 7
    band = strip[2 * H:]
    assert (band > 200).any() and band.mean() < 40  # white text on black


def test_mp4_every_frame(example, tmp_path):
    ep, raw = example
    out = preview.render_preview(ep, ep.video, tmp_path / "ep.mp4", fmt="mp4")
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    frames = decode_rgb(out).astype(int)
    assert len(frames) == 25 and frames[0].shape == (H + 24, W, 3)
    for t in (0, 12):
        uv = palm_pixels(ep, t)
        video = frames[t][:H]
        diff = np.abs(video - raw[t]).sum(-1)
        end = np.round(uv[-1]).astype(int)
        drawn = 0.3 * raw[t][end[1], end[0]] + 0.7 * np.array([255, 0, 0])  # red end of the path, alpha 0.7
        assert np.abs(video[end[1], end[0]] - drawn).max() < 40 < np.abs(raw[t][end[1], end[0]] - drawn).max()
        assert diff[far_from(uv, 10)].mean() < 12  # elsewhere only compression noise


def test_bad_format(example, tmp_path):
    ep, _ = example
    with pytest.raises(ValueError, match="format"):
        preview.render_preview(ep, ep.video, tmp_path / "ep.gif", fmt="gif")
    assert not (tmp_path / "ep.gif").exists()
