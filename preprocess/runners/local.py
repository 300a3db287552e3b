"""Local runner: `--workers N` processes over videos, clips and videos again; threads for captioning.

Phases run one after another (plan videos → clips → videos → captions → episodes), each as an ordered map
over its units with a tqdm bar. With N > 1 the units of a phase run in N spawned processes (each builds
its own hand model once; spawned, not forked, so no lock held by a thread of this process is inherited);
with N = 1 everything runs in this process. Captioning is I/O bound: it uses
`caption.concurrency` threads sharing one captioner (and its rate limit) in this process.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
from collections.abc import Callable, Iterable, Sequence

from tqdm import tqdm

from preprocess import backends, graph


def _map(fn: Callable, items: Sequence, desc: str, pool=None) -> list:
    bar = functools.partial(tqdm, total=len(items), desc=desc, unit="", dynamic_ncols=True, leave=True)
    if pool is None or len(items) <= 1:
        return [fn(x) for x in bar(items)]
    return list(bar(pool.imap(fn, items, chunksize=1)))


def execute(run: graph.Run, videos: Iterable[str], workers: int = 1) -> None:
    videos = list(videos)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        plans = _map(functools.partial(graph.plan_video, run), videos, "probe videos", pool)
        clips = [c for p in plans for c in p]
        _map(functools.partial(graph.run_clip, run), clips, "clips", pool)
        ids = [graph.video_id_of(v) for v, p in zip(videos, plans) if p]
        _map(functools.partial(graph.run_video, run), ids, "stitch + segment", pool)
    except BaseException:
        if pool is not None:
            pool.terminate()  # stop the workers at once (Ctrl-C, a bug): finished results are already stored
        raise
    if pool is not None:
        pool.close()
        pool.join()
    segments = [(vid, seg) for vid in ids for seg in graph.segments_of(run, vid)]
    if run.config.caption.backend != "none" and segments:
        captioner = backends.captioner(run.config.caption, run.output)
        with concurrent.futures.ThreadPoolExecutor(max(1, run.config.caption.concurrency)) as threads:
            done = threads.map(lambda item: graph.run_caption(run, *item, captioner), segments)
            list(tqdm(done, total=len(segments), desc="captions", dynamic_ncols=True))
    for vid in tqdm(ids, desc="episodes", dynamic_ncols=True):
        graph.write_video(run, vid)
