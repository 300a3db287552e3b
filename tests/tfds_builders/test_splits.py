"""train/val assignment by source video."""

import numpy as np

from tfds_builders.hand_vla import sources, splits


def test_assignment_is_by_group_stable_and_close_to_the_fraction():
    groups = [f"Ego4D/video_{i:05d}" for i in range(20_000)]
    got = splits.assign(groups, 0.02)
    assert sorted(got["train"] + got["val"]) == list(range(20_000))
    assert 0.017 < len(got["val"]) / len(groups) < 0.023
    # Growing the dataset never moves an existing video to the other split.
    more = splits.assign(groups + [f"epic/P{i:03d}" for i in range(5_000)], 0.02)
    assert set(got["val"]) == {i for i in more["val"] if i < len(groups)}
    # Every episode of a video falls in the same split; a split with no episode is left out.
    episodes = [g for g in groups[:50] for _ in range(3)]
    assign = splits.assign(episodes, 0.3)
    side = {}
    for name, rows in assign.items():
        for r in rows:
            assert side.setdefault(episodes[r], name) == name
    assert splits.assign(groups[:10], 0.0).keys() == {"train"}
    assert splits.assign(groups[:10], 1.0).keys() == {"val"}
    u = np.array([splits.unit_hash(g) for g in groups])
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_vitra1m_group_is_dataset_and_video_name():
    assert sources.vitra1m_group("/raw/Ego4D/episodic_annotations/Ego4D_3a1b-c2_ep_000012.npy") == "Ego4D/3a1b-c2"
    assert sources.vitra1m_group("/raw/epic/episodic_annotations/epic_P01_01_ep_000003.npy") == "epic/P01_01"
    assert sources.vitra1m_group("/raw/ssv2/episodic_annotations/ssv2_1234_ep_7.npy") == "ssv2/1234"


def test_vitra1m_inputs_are_listed_from_the_root_or_one_sub_dataset(tmp_path):
    for name in ("epic/episodic_annotations/epic_P01_01_ep_000003.npy",
                 "epic/episodic_annotations/epic_P01_01_ep_000001.npy",
                 "ssv2/episodic_annotations/ssv2_1234_ep_7.npy", "ssv2/videos/1234.webm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    root = [str(tmp_path / n) for n in ("epic/episodic_annotations/epic_P01_01_ep_000001.npy",
                                        "epic/episodic_annotations/epic_P01_01_ep_000003.npy",
                                        "ssv2/episodic_annotations/ssv2_1234_ep_7.npy")]
    assert sources.list_vitra1m(tmp_path) == root
    assert sources.list_vitra1m(tmp_path / "epic") == root[:2]  # one build per sub-dataset
