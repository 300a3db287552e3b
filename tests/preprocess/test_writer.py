"""Episode writer on the official VITRA fixture episode: slicing, intrinsics for the original video size,
caption intervals of both hands, atomic files the hand_vla builder reads (frames included)."""

import json

import numpy as np
import pytest

from preprocess import records, writer
from tests.preprocess import vitra_example
from tfds_builders.hand_vla import examples, sources
from vitra_jax.handspace import episode as E
from vitra_jax.handspace.trajectory import HandTrack


@pytest.fixture(scope="module")
def official(fixtures_dir):
    return vitra_example.arrays(fixtures_dir)


def _tracks(d):
    return {h: HandTrack(wrist=d[f"{h}/transl_worldspace"], orient=d[f"{h}/global_orient_worldspace"],
                         hand_pose=d[f"{h}/hand_pose"], joints=d[f"{h}/joints_worldspace"],
                         kept=d[f"{h}/kept_frames"].astype(bool), beta=d[f"{h}/beta"]) for h in ("left", "right")}


def _episode(fixtures_dir, d, width=240):
    segment = records.Segment("right", 5, 20)
    info = records.VideoInfo(path=str(vitra_example.video_path(fixtures_dir)), video_id="03cc49c3", fps=30.0, width=480,
                             height=368, num_frames=25)
    # The fixture's K for the 480x368 video (README: fx=218.3, fy=223.2, cx=240, cy=184), seen at `width`.
    s = width / 480
    k = np.array([[654.97 / 1440 * 480 * s, 0, 240 * s], [0, 654.97 / 1080 * 368 * s, 184 * s], [0, 0, 1]])
    intr = records.Intrinsics(k=k, width=width, height=round(368 * s), source="given")
    caps = {"right": [records.Caption("right", 5, 20, "Pick up the spray bottle.", "gpt-4.1", "v1")],
            "left": [records.Caption("left", 0, 8, "Hold the table.", "gpt-4.1", "v1"),
                     records.Caption("left", 8, 18, None, "gpt-4.1", "v1"),  # N/A: left out
                     records.Caption("left", 18, 30, "Wave.", "gpt-4.1", "v1"),
                     records.Caption("left", 21, 25, "Outside.", "gpt-4.1", "v1")]}
    versions = {"hands": "precomputed@1", "caption": "gpt-4.1@v1"}
    return writer.build_episode(info=info, segment=segment, tracks=_tracks(d), extrinsics=d["extrinsics"],
                                intrinsics=intr, camera_motion="moving", captions=caps,
                                labeler_versions=versions, source="Ego4D")


def test_episode_fields_are_the_segment_slice(fixtures_dir, official, tmp_path):
    ep = _episode(fixtures_dir, official)
    stem = writer.episode_path(tmp_path, "03cc49c3", "right", 5)
    assert stem == tmp_path / "episodes/03cc49c3/03cc49c3_right_000005"
    writer.write(stem, ep)
    got = E.read_episode(stem)
    assert got.frame_index.tolist() == list(range(5, 20)) and got.main_hand == "right"
    np.testing.assert_array_equal(got.extrinsics, official["extrinsics"][5:20])
    for f, key in (("wrist", "transl_worldspace"), ("orient", "global_orient_worldspace"),
                   ("hand_pose", "hand_pose"), ("joints", "joints_worldspace")):
        np.testing.assert_array_equal(getattr(got.hands["right"], f), official[f"right/{key}"][5:20])
    assert got.hands["right"].kept.all() and not got.hands["left"].kept.any()
    np.testing.assert_array_equal(got.hands["left"].beta, official["left/beta"])
    # Intrinsics of the 480x368 original although the pinhole frames were 240 px wide.
    np.testing.assert_allclose(got.intrinsics, [[654.97 * 480 / 1440, 0, 240], [0, 654.97 * 368 / 1080, 184], [0, 0, 1]],
                               rtol=1e-12)
    assert got.text == {"right": [("Pick up the spray bottle.", (0, 15))],
                        "left": [("Hold the table.", (0, 3)), ("Wave.", (13, 15))]}
    assert got.camera_motion == "moving" and got.source == "Ego4D" and got.fps == 30.0
    assert got.labeler_versions == {"hands": "precomputed@1", "caption": "gpt-4.1@v1"}
    assert got.video == str(vitra_example.video_path(fixtures_dir))
    assert writer.exists(stem)
    assert sorted(p.name for p in stem.parent.iterdir()) == ["03cc49c3_right_000005.json", "03cc49c3_right_000005.npz"]


def test_builder_reads_the_written_episode(fixtures_dir, official, tmp_path):
    stem = writer.episode_path(tmp_path, "03cc49c3", "right", 5)
    writer.write(stem, _episode(fixtures_dir, official))
    assert sources.list_episode_files(tmp_path) == [str(stem)]
    ep, frames = sources.load_episode_file(str(stem), short_side=184)
    assert frames.shape == (15, 184, 240, 3)
    import cv2

    raw = vitra_example.decode_rgb(vitra_example.video_path(fixtures_dir))[5:20]
    ref = np.stack([cv2.resize(f, (240, 184), interpolation=cv2.INTER_AREA) for f in raw])
    assert np.abs(frames.astype(int) - ref).mean() < 2.0  # the builder's frames are video frames 5..19
    ex = examples.episode_example(ep, frames, str(stem), 0)
    assert ex["steps"][0]["language_instruction"] == "Left hand: Hold the table. Right hand: Pick up the spray bottle."
    assert ex["steps"][14]["language_instruction"] == "Left hand: Wave. Right hand: Pick up the spray bottle."


def test_invalid_episode_writes_nothing_and_copy_write_matches(fixtures_dir, official, tmp_path):
    bad = dict(official)
    bad["extrinsics"] = official["extrinsics"].copy()
    bad["extrinsics"][7, 0, 0] = np.nan
    stem = writer.episode_path(tmp_path, "v", "right", 5)
    with pytest.raises(E.EpisodeError, match="non_finite"):
        writer.write(stem, _episode(fixtures_dir, bad))
    assert not list(tmp_path.rglob("*.*"))
    good = _episode(fixtures_dir, official)
    writer.write(tmp_path / "a/x", good)
    writer.copy_write(writer.epath.Path(tmp_path / "b/x"), good)  # the path used for remote outputs
    for suffix in (".npz", ".json"):
        assert (tmp_path / f"a/x{suffix}").read_bytes() == (tmp_path / f"b/x{suffix}").read_bytes()
    assert json.loads((tmp_path / "b/x.json").read_text())["main_hand"] == "right"
    assert writer.is_local(tmp_path) and not writer.is_local("gs://bucket/run")


def test_episode_text_matches_a_plain_scan_of_all_captions():
    """Bisection over sorted, disjoint captions finds exactly the captions a scan of every caption finds."""
    rng = np.random.default_rng(0)

    def disjoint(hand, n):
        cuts = np.sort(rng.choice(np.arange(1, 400), 2 * n, replace=False))
        return [records.Caption(hand, int(a), int(b), None if rng.random() < 0.2 else f"{hand} {a}", "m", "v1")
                for a, b in cuts.reshape(-1, 2)]

    captions = {"left": disjoint("left", 30), "right": disjoint("right", 30)}
    for main in ("left", "right"):
        for cap in captions[main]:
            seg = records.Segment(main, cap.start, cap.stop)
            want = {}
            if cap.text:
                want[main] = [(cap.text, (0, seg.stop - seg.start))]
            other = "right" if main == "left" else "left"
            spans = [(c.text, (max(c.start, seg.start) - seg.start, min(c.stop, seg.stop) - seg.start))
                     for c in captions[other] if c.text and c.start < seg.stop and c.stop > seg.start]
            if spans:
                want[other] = spans
            assert writer.episode_text(seg, captions) == want
