"""Normalization statistics against plain-numpy references: masked moments per dimension, the flip counted
by hand, the release's weighted combination, the quantile sketch's error bound, the fingerprinted cache and
the release's statistics json layout."""

import json

import numpy as np
import pytest

from vitra_jax.data import statistics as S
from vitra_jax.data.running_stats import QuantileSketch


def _random_episodes(rng, lengths, p_valid=0.7):
    eps = []
    for t in lengths:
        ep = {}
        for kind in ("action", "state"):
            x = rng.normal(rng.normal(0, 2, 102), rng.uniform(0.1, 3, 102), (t, 102))
            m = rng.random((t, 102)) < p_valid
            m[:, 9:14] = m[:, 60:65] = False  # never valid (in either hand, so flipping keeps it so)
            ep[kind], ep[f"{kind}_mask"] = x, m.astype(np.float32)
        eps.append(ep)
    return eps


def _mirror(x):
    """The flipped-video vector written out per hand: x position and the y/z Euler angles negate, fingers
    stay, hands swap."""
    out = np.array(x, dtype=float)
    for base in (0, 51):
        out[..., base] *= -1
        out[..., base + 4:base + 6] *= -1
    return np.concatenate([out[..., 51:], out[..., :51]], axis=-1)


def _loop_reference(eps, kind, flip):
    """Per dimension, the valid values collected one by one, then np.mean / np.std / np.quantile."""
    mean, std, q01, q99 = (np.zeros(102) for _ in range(4))
    std[:] = 1
    for d in range(102):
        vals = []
        for ep in eps:
            x, m = ep[kind], ep[f"{kind}_mask"].astype(bool)
            copies = [(x, m)] + ([(_mirror(x), np.concatenate([m[:, 51:], m[:, :51]], 1))] if flip else [])
            for xx, mm in copies:
                for t in range(len(xx)):
                    if mm[t, d]:
                        vals.append(xx[t, d])
        if vals:
            mean[d], std[d] = np.mean(vals), np.std(vals)
            q01[d], q99[d] = np.quantile(vals, 0.01, method="lower"), np.quantile(vals, 0.99, method="lower")
    return mean, std, q01, q99


@pytest.mark.parametrize("flip", [False, True])
def test_compute_matches_a_plain_loop(flip):
    rng = np.random.default_rng(0)
    eps = _random_episodes(rng, [7, 1, 12, 5])
    eps[1]["action_mask"][:] = 0  # an episode with no valid action
    st = S.compute_statistics(iter(eps), flip=flip, progress=False)
    assert st.num_frames == 25 and st.num_episodes == 4
    for kind in ("action", "state"):
        mean, std, q01, q99 = _loop_reference(eps, kind, flip)
        np.testing.assert_allclose(getattr(st, f"{kind}_mean"), mean, atol=1e-12)
        np.testing.assert_allclose(getattr(st, f"{kind}_std"), std, atol=1e-12)
        bound = S.RELATIVE_ERROR * np.abs(q01) + S.MIN_ABS
        assert np.all(np.abs(getattr(st, f"{kind}_q01") - q01) <= bound)
        assert np.all(np.abs(getattr(st, f"{kind}_q99") - q99) <= S.RELATIVE_ERROR * np.abs(q99) + S.MIN_ABS)
        assert getattr(st, f"{kind}_std")[60] == 1 and getattr(st, f"{kind}_mean")[60] == 0
    norm = st.normalizer()
    np.testing.assert_array_equal(norm.action_std, st.action_std)


def test_flip_counts_each_frame_mirrored_by_hand():
    """Two frames, right hand only; values worked out on paper."""
    a = np.zeros((2, 102))
    a[0, 51:57] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    a[1, 51:57] = [0.3, 0.0, 0.1, 0.2, 0.1, 0.0]
    a[:, 57] = [1.0, 2.0]
    m = np.zeros((2, 102))
    m[:, 51:] = 1
    ep = {"action": a, "action_mask": m, "state": a, "state_mask": m}
    st = S.compute_statistics([ep], progress=False)
    # Left block = the mirrored right hand: x and the 2nd/3rd Euler angles change sign.
    np.testing.assert_allclose(st.action_mean[0:6], [-0.2, 0.1, 0.2, 0.3, -0.3, -0.3])
    np.testing.assert_allclose(st.action_mean[51:57], [0.2, 0.1, 0.2, 0.3, 0.3, 0.3])
    np.testing.assert_allclose(st.action_std[0:6], [0.1, 0.1, 0.1, 0.1, 0.2, 0.3])
    assert st.action_mean[6] == st.action_mean[57] == 1.5  # fingers unchanged
    assert st.action_count[0] == st.action_count[51] == 2
    unflipped = S.compute_statistics([ep], flip=False, progress=False)
    assert unflipped.action_count[0] == 0 and unflipped.action_std[0] == 1


def _const(mean, std, frames, left_valid=True):
    """Statistics of `frames` frames whose every dimension has this mean and std (left hand optionally unseen)."""
    v = np.full(102, mean, float)
    count = np.full(102, float(frames))
    if not left_valid:
        count[:51] = 0
    return S.DatasetStatistics(v, np.full(102, std), v - 1, v + 1, v, np.full(102, std), v - 1, v + 1,
                               num_frames=frames, num_episodes=1, action_count=count, state_count=count)


def test_combine_is_the_weighted_average_of_means_and_stds():
    const = _const
    parts = {"a": const(1.0, 2.0, 100), "b": const(4.0, 1.0, 300, left_valid=False)}
    out = S.combine(parts, {"a": 3.0, "b": 0.5})
    # right dims: weights 3·100 = 300 and 0.5·300 = 150 -> 2/3, 1/3 (a mean of stds, not a pooled std)
    assert out.action_mean[60] == pytest.approx(2 / 3 * 1 + 1 / 3 * 4)
    assert out.action_std[60] == pytest.approx(2 / 3 * 2 + 1 / 3 * 1)
    assert out.state_q99[60] == pytest.approx(2 / 3 * 2 + 1 / 3 * 5)
    assert out.action_mean[0] == 1.0 and out.action_std[0] == 2.0  # left: only "a" ever saw it
    assert out.num_frames == 400 and out.num_episodes == 2
    with pytest.raises(KeyError, match=r"no mixture weight for \['b'\]"):
        S.combine(parts, {"a": 1.0})


def test_normalize_by_embodiment_groups_hand_data_and_keeps_each_robot_apart():
    parts = {"ego4d": _const(1.0, 2.0, 100), "epic": _const(4.0, 1.0, 300),
             "bridge_dataset": _const(7.0, 0.5, 50, left_valid=False), "kuka": _const(-2.0, 3.0, 80, False)}
    weights = {"ego4d": 3.0, "epic": 0.5, "bridge_dataset": 0.1, "kuka": 0.2}
    kinds = {"ego4d": "hand_vla", "epic": "hand_vla", "bridge_dataset": "oxe", "kuka": "oxe"}
    by = S.mixture_statistics(parts, weights, kinds, "embodiment")
    assert by.group_of == {"ego4d": "hand_vla", "epic": "hand_vla", "bridge_dataset": "bridge_dataset",
                           "kuka": "kuka"}
    assert by.default == "hand_vla" and by.main is by.groups["hand_vla"]
    # the hand group: weights 3·100 and 0.5·300 -> 2/3, 1/3; the robots: their own numbers on the dims they have
    assert by.of("epic").action_mean[70] == pytest.approx(2 / 3 * 1 + 1 / 3 * 4)
    assert by.of("bridge_dataset").action_mean[60] == 7.0 and by.of("bridge_dataset").action_std[60] == 0.5
    assert by.of("kuka").state_mean[55] == -2.0 and by.of("kuka").state_std[55] == 3.0
    assert by.of("kuka").action_mean[0] == 0.0 and by.of("kuka").action_std[0] == 1.0  # never seen: identity
    one = S.mixture_statistics(parts, weights, kinds)  # the release's rule: one set for all
    assert set(one.groups) == {"mixture"} and set(one.group_of.values()) == {"mixture"}
    w = np.array([300, 150, 5, 16]) / 471  # weight × frames, all four see the right hand
    assert one.main.action_mean[60] == pytest.approx(w @ [1.0, 4.0, 7.0, -2.0])
    robots = S.mixture_statistics({k: parts[k] for k in ("kuka", "bridge_dataset")}, weights,
                                  {"kuka": "oxe", "bridge_dataset": "oxe"}, "embodiment")
    assert robots.default == "kuka"  # no hand data: the first component's
    with pytest.raises(ValueError, match="normalize_by must be one of"):
        S.mixture_statistics(parts, weights, kinds, "dataset")


def test_quantile_sketch_within_its_bound():
    rng = np.random.default_rng(1)
    x = np.stack([rng.standard_t(2, 40_000) * 0.05, rng.uniform(-np.pi, np.pi, 40_000),
                  rng.exponential(1e-3, 40_000), np.zeros(40_000)], 1)
    valid = rng.random(x.shape) < 0.9
    sk = QuantileSketch(4, relative_error=0.002)
    for rows in np.array_split(np.arange(len(x)), 7):
        sk.update(np.where(valid[rows], x[rows], np.nan), valid[rows])  # invalid entries may hold NaN
    for p in (0.0, 0.01, 0.5, 0.99, 1.0):
        ref = np.array([np.quantile(x[valid[:, d], d], p, method="lower") for d in range(4)])
        assert np.all(np.abs(sk.quantile(p) - ref) <= 0.002 * np.abs(ref) + 1e-6), p
    assert sk.counts.nbytes < 5_000_000  # fixed, whatever the number of samples
    with pytest.raises(ValueError, match="relative_error"):
        QuantileSketch(2, relative_error=1.5)


def test_save_load_round_trip_and_missing_file(tmp_path):
    st = S.compute_statistics(_random_episodes(np.random.default_rng(2), [4, 6]), progress=False)
    st.save(tmp_path / "s.json")
    back = S.DatasetStatistics.load(tmp_path / "s.json")
    for f in ("action_mean", "action_std", "action_q01", "state_q99", "state_count"):
        np.testing.assert_array_equal(getattr(back, f), getattr(st, f))
    assert (back.num_frames, back.num_episodes) == (10, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left
    with pytest.raises(S.MissingStatisticsError, match="python -m vitra_jax.data.prepare"):
        S.DatasetStatistics.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match=r"action_mask must have shape \(3, 102\)"):
        S.compute_statistics([{"action": np.zeros((3, 102)), "action_mask": np.ones((3, 5)),
                               "state": np.zeros((3, 102)), "state_mask": np.ones((3, 102))}], progress=False)


def test_cache_invalidates_on_fingerprint_and_transform_version(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRA_JAX_CACHE", str(tmp_path / "user"))
    eps = _random_episodes(np.random.default_rng(3), [5])
    calls = []

    def compute():
        calls.append(1)
        return S.compute_statistics(eps, progress=False)

    data = tmp_path / "data"
    first = S.cached_statistics(data, "v1", compute)
    again = S.cached_statistics(data, "v1", compute)
    assert len(calls) == 1 and list(data.glob("dataset_statistics_*.json"))
    np.testing.assert_array_equal(first.action_mean, again.action_mean)
    S.cached_statistics(data, "v2", compute)
    assert len(calls) == 2
    monkeypatch.setattr(S, "TRANSFORM_VERSION", "changed-recipe")
    S.cached_statistics(data, "v1", compute)
    assert len(calls) == 3 and len(list(data.glob("dataset_statistics_*.json"))) == 3
    (data / S.cache_name("v1")).write_text("{not json")  # a damaged cache file is recomputed, not trusted
    S.cached_statistics(data, "v1", compute)
    assert len(calls) == 4 and S.DatasetStatistics.load(data / S.cache_name("v1")).num_frames == 5
    # A data folder that cannot be written (here: its path runs through a file) falls back to the user cache.
    (tmp_path / "file").write_text("x")
    S.cached_statistics(tmp_path / "file" / "data", "v1", compute)
    S.cached_statistics(tmp_path / "file" / "data", "v1", compute)
    assert len(calls) == 5 and len(list((tmp_path / "user" / "statistics").glob("*.json"))) == 1


def test_load_official_layout(tmp_path):
    rng = np.random.default_rng(4)
    d = {"num_traj": 1234}
    for kind, width in (("state", 61), ("action", 51)):
        for hand in ("left", "right"):
            d[f"{kind}_{hand}"] = {"mean": rng.normal(size=width).tolist(),
                                   "std": rng.uniform(0.1, 1, width).tolist()}
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(d))
    st = S.load_official(tmp_path / "dataset_statistics.json")
    np.testing.assert_array_equal(st.state_mean[:51], d["state_left"]["mean"][:51])  # 10 shape values dropped
    np.testing.assert_array_equal(st.state_std[51:], d["state_right"]["std"][:51])
    np.testing.assert_array_equal(st.action_mean[51:], d["action_right"]["mean"])
    assert st.num_frames == 1234 and np.isnan(st.action_q01).all()
    # Our statistics written in the release's layout read back the same.
    (tmp_path / "ours.json").write_text(json.dumps(st.to_official()))
    back = S.load_official(tmp_path / "ours.json")
    np.testing.assert_array_equal(back.action_std, st.action_std)
    np.testing.assert_array_equal(back.state_mean, st.state_mean)
    # Without left-hand entries the release fills 1e-4.
    for k in ("state_left", "action_left"):
        del d[k]
    (tmp_path / "right_only.json").write_text(json.dumps(d))
    right_only = S.load_official(tmp_path / "right_only.json")
    assert (right_only.action_mean[:51] == 1e-4).all() and (right_only.state_std[:51] == 1e-4).all()
    del d["action_right"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="need 'action_right'"):
        S.load_official(tmp_path / "bad.json")
