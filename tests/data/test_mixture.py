"""The weighted mixture index: magic_mix proportions, exact per-epoch passes, process shards, restore."""

import collections

import grain
import numpy as np
import pytest

from vitra_jax.data import mixture

COMPONENTS = [mixture.Component("a", 120, 1.0), mixture.Component("b", 37, 5.0),
              mixture.Component("c", 50, 0.5), mixture.Component("d", 9, 3.0)]


def test_magic_mix_is_the_release_mixture():
    # VITRA release, `magic_mix`: per-epoch samples per sub-dataset = weight x frames.
    assert mixture.MAGIC_MIX == {"ego4d_cooking_and_cleaning": 1.0, "egoexo4d": 3.0, "epic": 1.0,
                                 "ssv2": 5.0, "ego4d_other": 0.5}


def test_proportions_over_10k_samples_follow_weight_times_frames():
    index = mixture.MixtureIndex(COMPONENTS, seed=3)
    counts = collections.Counter(index[k]["component"] for k in range(10_000))
    # written out: 120*1 : 37*5 : 50*0.5 : 9*3 = 120 : 185 : 25 : 27
    expected = np.array([120, 185, 25, 27]) / 357
    got = np.array([counts[c] for c in range(4)]) / 10_000
    assert np.all(np.abs(got - expected) < 0.02), (got, expected)


def test_one_epoch_holds_each_component_weight_times_its_frames():
    index = mixture.MixtureIndex(COMPONENTS, seed=0)
    assert index.epoch_length == 357
    per = collections.defaultdict(collections.Counter)
    for k in range(index.epoch_length):
        r = index[k]
        assert r["epoch"] == 0
        per[r["component"]][r["frame"]] += 1
    # weight 1: every frame once; weight 5 / 3: every frame exactly 5 / 3 times (fresh passes);
    # weight 0.5: 25 distinct frames of 50, once each
    assert per[0] == collections.Counter(range(120))
    assert per[1] == collections.Counter({f: 5 for f in range(37)})
    assert len(per[2]) == 25 and set(per[2].values()) == {1} and max(per[2]) < 50
    assert per[3] == collections.Counter({f: 3 for f in range(9)})


def test_epochs_reshuffle_and_the_stream_is_a_function_of_the_seed():
    a = mixture.MixtureIndex(COMPONENTS, seed=7)
    b = mixture.MixtureIndex(COMPONENTS, seed=7)
    n = a.epoch_length
    first = [(a[k]["component"], a[k]["frame"]) for k in range(n)]
    assert first == [(b[k]["component"], b[k]["frame"]) for k in range(n)]
    second = [(a[k]["component"], a[k]["frame"]) for k in range(n, 2 * n)]
    assert second != first and collections.Counter(c for c, _ in second) == collections.Counter(c for c, _ in first)
    # the weight-0.5 component shows a different half of its frames in the next epoch
    assert {f for c, f in first if c == 2} != {f for c, f in second if c == 2}
    other = mixture.MixtureIndex(COMPONENTS, seed=8)
    assert [(other[k]["component"], other[k]["frame"]) for k in range(n)] != first


def test_large_components_use_the_constant_memory_shuffle_and_stay_permutations():
    big = mixture.Component("big", (1 << 18) + 5, 1.0)
    index = mixture.MixtureIndex([big], seed=1)
    frames = {index[k]["frame"] for k in range(2000)}
    assert len(frames) == 2000 and max(frames) < big.num_frames


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover_the_stream(count):
    index = mixture.MixtureIndex(COMPONENTS, seed=5)
    n = 2 * index.epoch_length
    shards = [index[p::count] for p in range(count)]
    seen = []
    for p, shard in enumerate(shards):
        seen += [shard[i]["index"] for i in range(len(range(p, n, count)))]
    assert sorted(seen) == list(range(n))  # disjoint (no duplicates) and complete
    for p, shard in enumerate(shards):
        for i in (0, 1, 17):
            assert shard[i] == index[p + i * count]


@pytest.mark.parametrize("count,rows", [(2, 3), (3, 1), (4, 5)])
def test_process_rows_are_blocks_of_each_global_batch(count, rows):
    index = mixture.MixtureIndex(COMPONENTS, seed=5)
    shards = [mixture.ProcessRows(index, rows, p, count) for p in range(count)]
    for b in range(4):
        global_batch = [shards[p][b * rows + r]["index"] for p in range(count) for r in range(rows)]
        assert global_batch == list(range(b * rows * count, (b + 1) * rows * count))
    with pytest.raises(ValueError, match="process_index"):
        mixture.ProcessRows(index, rows, count, count)


def test_iterator_restores_mid_epoch():
    ds = mixture.MixtureIndex(COMPONENTS, seed=2).to_iter_dataset()
    it = iter(ds)
    for _ in range(100):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(50)]
    it2 = iter(ds)
    it2.set_state(state)
    assert [next(it2) for _ in range(50)] == want
    assert want[0]["index"] == 100


def test_permute_is_a_permutation_on_both_paths():
    for size in (1, 2, 10, (1 << 18) + 3):
        sample = range(min(size, 5000))
        got = [mixture.permute(i, size, seed=11) for i in sample]
        assert len(set(got)) == len(got) and all(0 <= g < size for g in got)


def test_bad_components_are_refused():
    with pytest.raises(ValueError, match="no frames"):
        mixture.Component("x", 0, 1.0)
    with pytest.raises(ValueError, match="positive weight"):
        mixture.Component("x", 5, 0.0)
    with pytest.raises(ValueError, match="unique"):
        mixture.MixtureIndex([mixture.Component("x", 5, 1.0), mixture.Component("x", 3, 1.0)], seed=0)
    with pytest.raises(ValueError, match="at least one"):
        mixture.MixtureIndex([], seed=0)


def test_grain_shard_slicing_keeps_the_endless_length():
    shard = mixture.MixtureIndex(COMPONENTS, seed=0)[1::4]
    assert isinstance(shard, grain.MapDataset) and len(shard) > 10**15
