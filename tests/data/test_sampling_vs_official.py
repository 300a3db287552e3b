"""`frame_sample` vs. the release's `get_item_frame`, written out below from its definitions (release §2.6,
§3.2, §3.3, §9.3) with plain loops and scipy, independently of `vitra_jax.handspace`.

The reference is the release as it behaves, including its chunk-end quirk (the extra "next" frame t+16 is
clipped to the window but not flagged out of range, so when t+15 is the window's last frame step 15 is
valid with zero motion). We mask that step on purpose; the tests check that this is the only difference.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tests.data.two_hand_episode import raw_episode, rlds_steps
from vitra_jax.data import chunks

N = 16
PALM = [0, 2, 5, 9, 13, 17]


def _euler(m):
    return Rotation.from_matrix(np.asarray(m).reshape(-1, 3, 3)).as_euler("xyz").reshape(-1)


def _clean(text):
    text = text.strip()
    return text if text.endswith(".") else text + "."


def release_hand(raw, hand, t):
    """One hand of the release's sample at frame t: caption, rephrasings, window end, state, actions, masks."""
    num = len(raw["extrinsics"])
    caps, alts = raw["text"].get(hand, []), raw["text_rephrase"].get(hand, [])
    if hand == raw["anno_type"]:  # main hand: whole episode, first caption
        i, end = (0 if caps else None), num
    else:  # other hand: the caption interval covering t (t >= its start), else "None." and the whole episode
        i, end = None, num
        for j, (_, (s, e)) in enumerate(caps):
            if s <= t < e:
                i, end = j, e
                break
    caption = None if i is None else caps[i][0]
    rephrasings = [] if i is None else list(alts[i][0])
    r, tau = raw["extrinsics"][t, :3, :3], raw["extrinsics"][t, :3, 3]
    h = raw[hand]
    kept = h["kept_frames"].astype(bool)
    frames = [min(t + j, end - 1) for j in range(N + 1)]
    out_of_range = [t + j > end - 1 for j in range(N)] + [False]  # the extra frame is never flagged
    ok = [kept[frames[j]] and not out_of_range[j] for j in range(N + 1)]

    def pose(f):
        if not kept[f]:
            return np.zeros(3), np.eye(3), np.tile(np.eye(3), (15, 1, 1))
        return r @ h["transl_worldspace"][f] + tau, r @ h["global_orient_worldspace"][f], h["hand_pose"][f]

    state, state_ok = np.zeros(51), bool(kept[t])
    if state_ok:
        p, o, fingers = pose(t)
        state = np.concatenate([p, _euler(o), _euler(fingers)])
    actions, action_ok = np.zeros((N, 51)), np.zeros(N, bool)
    for k in range(N):
        if ok[k] and ok[k + 1]:
            p0, o0, _ = pose(frames[k])
            p1, o1, f1 = pose(frames[k + 1])
            actions[k] = np.concatenate([p1 - p0, _euler(o1 @ o0.T), _euler(f1)])
            action_ok[k] = True
    quirk = np.array([action_ok[k] and t + k + 1 > end - 1 for k in range(N)])
    return {"caption": caption, "rephrasings": rephrasings, "state": state, "state_ok": state_ok,
            "actions": actions, "action_ok": action_ok, "quirk": quirk}


def release_palm_path(raw, t):
    """Main-hand palm (mean of OpenPose joints 0, 2, 5, 9, 13, 17), tracked frames t..end, camera of t."""
    h = raw[raw["anno_type"]]
    r, tau = raw["extrinsics"][t, :3, :3], raw["extrinsics"][t, :3, 3]
    path = [r @ h["joints_worldspace"][f][PALM].mean(0) + tau
            for f in range(t, len(raw["extrinsics"])) if h["kept_frames"][f]]
    return np.array(path).reshape(-1, 3)


LEFT_TEXT = {"left": [("hold the jar ", (5, 15)), ("hold the jar ", (15, 22))],
             "right": [("Twist the lid off", (0, 18)), ("Put the lid down.", (18, 30))]}
LEFT_ALTS = {"left": [(["Grip the jar.", "Keep the jar steady"], (5, 15)), (["Steady the jar"], (15, 22))],
             "right": [(["Unscrew the lid", "Open the jar."], (0, 18)), (["Set the lid down"], (18, 30))]}
UNTRACKED = {"left": [3, 10, 11, 26], "right": [7, 25]}


@pytest.fixture(scope="module", params=["right", "left"])
def episode(request):
    raw = raw_episode(30, request.param, UNTRACKED, LEFT_TEXT, LEFT_ALTS, seed=1)
    return raw, rlds_steps(raw)


def test_every_frame_matches_the_release_except_the_chunk_end_step(episode):
    raw, steps = episode
    tracks = chunks.episode_tracks(steps)
    quirks = 0
    for t in range(len(raw["extrinsics"])):
        got = chunks.frame_sample(steps, t, main_hand=raw["anno_type"], tracks=tracks)
        texts = {}
        for i, hand in enumerate(("left", "right")):
            ref = release_hand(raw, hand, t)
            part = slice(51 * i, 51 * (i + 1))
            ours_ok = ref["action_ok"] & ~ref["quirk"]
            np.testing.assert_array_equal(got["action_mask"][:, part], np.repeat(ours_ok[:, None], 51, 1))
            np.testing.assert_allclose(got["actions"][:, part], ref["actions"] * ours_ok[:, None], atol=2e-5)
            assert got["state_mask"][part].tolist() == [float(ref["state_ok"])] * 51
            np.testing.assert_allclose(got["state"][part], ref["state"], atol=2e-5)
            # Where the release keeps step 15 (zero motion, the last frame's fingers), we mask it.
            for k in np.flatnonzero(ref["quirk"]):
                assert k == N - 1 and not ref["actions"][k, :6].any() and ref["actions"][k, 6:].any()
                quirks += 1
            texts[hand] = "None." if ref["caption"] is None else _clean(ref["caption"])
            assert got[f"text_{hand}"] == texts[hand]
        assert got["instruction"] == f"Left hand: {texts['left']} Right hand: {texts['right']}"
        np.testing.assert_allclose(got["palm_path"], release_palm_path(raw, t), atol=2e-5)
    # t = 14 reaches the episode's last frame; with the right hand secondary, t = 2 reaches the end of (0, 18).
    assert quirks == (1 if raw["anno_type"] == "right" else 2)


def test_adjacent_captions_with_the_same_text_keep_their_own_windows_and_rephrasings():
    raw = raw_episode(30, "right", UNTRACKED, LEFT_TEXT, LEFT_ALTS, seed=1)
    steps = rlds_steps(raw)
    got = chunks.frame_sample(steps, 12, main_hand="right")
    # (5, 15) ends before (15, 22) starts although both read "hold the jar": steps 12->13, 13->14 only.
    assert got["action_mask"][:, 0].tolist() == [1.0, 1.0] + [0.0] * 14
    rng = np.random.default_rng(3)
    drawn = {chunks.frame_sample(steps, 17, main_hand="right", rng=rng)["text_left"] for _ in range(60)}
    assert drawn == {"hold the jar.", "Steady the jar."}


def test_release_worked_example():
    """Executed with the official code: main hand right, left untracked on 3, 10, 11, left caption on frames
    5-14, t = 8 -> left action mask 1000110000000000."""
    text = {"right": [("Open the jar.", (0, 25))], "left": [("Hold the jar.", (5, 15))]}
    alts = {"right": [([], (0, 25))], "left": [([], (5, 15))]}
    raw = raw_episode(25, "right", {"left": [3, 10, 11]}, text, alts, seed=2)
    ref = release_hand(raw, "left", 8)
    assert "".join(str(int(v)) for v in ref["action_ok"]) == "1000110000000000"
    got = chunks.frame_sample(rlds_steps(raw), 8, main_hand="right")
    assert "".join(str(int(v)) for v in got["action_mask"][:, 0]) == "1000110000000000"
    assert got["instruction"] == "Left hand: Hold the jar. Right hand: Open the jar."


def test_text_is_drawn_among_caption_and_rephrasings(episode):
    raw, steps = episode
    rng = np.random.default_rng(0)
    t = 9
    draws = [chunks.frame_sample(steps, t, main_hand=raw["anno_type"], rng=rng) for _ in range(400)]
    for hand in ("left", "right"):
        ref = release_hand(raw, hand, t)
        options = [_clean(x) for x in [ref["caption"], *ref["rephrasings"]]]
        got = [d[f"text_{hand}"] for d in draws]
        assert set(got) == set(options)  # every wording appears, each stripped and ending in one '.'
        counts = np.array([got.count(o) for o in options])
        assert counts.min() > 0.6 * len(got) / len(options), counts  # uniform over the wordings
    for d in draws:
        assert d["instruction"] == f"Left hand: {d['text_left']} Right hand: {d['text_right']}"
