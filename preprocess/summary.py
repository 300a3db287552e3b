"""The run summary, counted from the run store (so a resumed run reports each unit once, in its final state).

videos / clips: total, finished, failed by reason; segments: kept and dropped by reason (segmentation
drops and captions answered N/A); captions: finished, cache hits, failed by reason; episodes written; API
tokens and their cost (every caption stored in the run folder, including earlier runs into it).
"""

from __future__ import annotations

import collections
import json

from preprocess import graph, store


def _counts(counter: collections.Counter) -> dict[str, int]:
    return dict(sorted(counter.items()))


def summarize(run: graph.Run, videos: list[str]) -> dict:
    s, cfg = run.store, run.config
    failed = {k: collections.Counter() for k in ("videos", "clips", "captions")}
    dropped: collections.Counter = collections.Counter()
    n_clips = clips_done = n_segments = episodes = videos_done = captions_done = cached = 0
    tokens_in = tokens_out = 0
    for path in videos:
        vid = graph.video_id_of(path)
        plan = s.failure(graph.plan_key(vid))
        if plan is not None or not s.done(graph.plan_key(vid)):
            failed["videos"][plan["reason"] if plan else "not_run"] += 1
            continue
        for clip in s.load(graph.plan_key(vid))["clips"]:
            n_clips += 1
            stages = [graph.clip_key(clip, st) for st in graph.CLIP_STAGES]
            failure = next((f for f in map(s.failure, stages) if f), None)
            if failure:
                failed["clips"][failure["reason"]] += 1
            clips_done += all(s.done(k) for k in stages)
        video = s.failure(graph.video_key(vid))
        if video is not None:
            failed["videos"][video["reason"]] += 1
            continue
        if not s.done(graph.video_key(vid)):
            failed["videos"]["not_run"] += 1
            continue
        v = s.load(graph.video_key(vid))
        n_segments += len(v["segments"])
        dropped.update(d.reason for d in v["dropped"])
        caption_failures = []
        for seg in v["segments"]:
            key = graph.caption_key(vid, seg)
            if s.done(key):
                cap = s.load(key)
                captions_done += 1
                cached += cap.cached
                tokens_in, tokens_out = tokens_in + cap.tokens_in, tokens_out + cap.tokens_out
            elif (f := s.failure(key)) is not None:
                failed["captions"][f["reason"]] += 1
                caption_failures.append(f["reason"])
        if s.done(graph.written_key(vid)):
            written = s.load(graph.written_key(vid))
            episodes += len(written["written"])
            dropped.update(d.reason for d in written["dropped"])
            videos_done += 1
        elif (f := s.failure(graph.written_key(vid))) is not None:
            failed["videos"][f["reason"]] += 1
        else:  # a caption failed (counted by its reason) or was not run
            failed["videos"][caption_failures[0] if caption_failures else "not_run"] += 1
    c = cfg.caption
    cost = tokens_in / 1e6 * c.usd_per_mtok_in + tokens_out / 1e6 * c.usd_per_mtok_out
    return {
        "videos": {"total": len(videos), "done": videos_done, "failed": _counts(failed["videos"])},
        "clips": {"total": n_clips, "done": clips_done, "failed": _counts(failed["clips"])},
        "segments": {"total": n_segments, "dropped": _counts(dropped)},
        "captions": {"done": captions_done, "cached": cached, "failed": _counts(failed["captions"])},
        "episodes": episodes,
        "api": {"model": c.model if c.backend != "none" else "none", "tokens_in": tokens_in,
                "tokens_out": tokens_out, "cost_usd": round(cost, 6)},
    }


def save(run: graph.Run, summary: dict) -> None:
    store.atomic_write(run.store.root / "summary.json", json.dumps(summary, indent=1).encode())


def format_summary(summary: dict) -> str:
    def reasons(d):
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "none"
    v, c, s, cap, api = (summary[k] for k in ("videos", "clips", "segments", "captions", "api"))
    return "\n".join([
        f"videos    {v['done']}/{v['total']} done; failed: {reasons(v['failed'])}",
        f"clips     {c['done']}/{c['total']} done; failed: {reasons(c['failed'])}",
        f"segments  {s['total']}; dropped: {reasons(s['dropped'])}",
        f"captions  {cap['done']} done ({cap['cached']} from cache); failed: {reasons(cap['failed'])}",
        f"episodes  {summary['episodes']}",
        f"API       {api['model']}: {api['tokens_in']} tokens in, {api['tokens_out']} out, ${api['cost_usd']:.4f}",
    ])
