"""Ray runner: the stage functions of `preprocess.graph` as Ray Data pipelines over videos, clips and segments.

    ray start --head                                   # on the head node; `ray start --address=HEAD:6379` on others
    python -m preprocess.run --input V --output gs://bucket/run --runner ray --address HEAD:6379

Clips flow through three map stages: model-free geometry tasks (intrinsics), an actor pool holding the
hand model (`hands.num_cpus` / `hands.num_gpus` per actor, loaded once per actor), and tasks for camera
motion and poses. Captioning is an I/O-bound actor pool of `caption.concurrency` actors sharing the
`caption.rate_limit_rpm` budget. Rows carry only keys: results travel through the run store, so every
node needs the input videos at the same path and the output folder (a shared file system or an
`etils.epath` URI), and the project importable (PYTHONPATH).
"""

from __future__ import annotations

import os

import ray

from preprocess import backends, graph, records

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _ClipStages:
    """Runs some clip stages for a batch of clip rows; as an actor it keeps its backend between batches."""

    def __init__(self, run: graph.Run, stages: tuple[str, ...]):
        self.run, self.stages = run, stages
        if "hands" in stages and run.config.hands.backend == "mediapipe":
            backends.hand_model(run.config.hands)  # load the model once per actor

    def __call__(self, batch: dict) -> dict:
        ok = []
        for vid, index, start, stop in zip(batch["video_id"], batch["index"], batch["start"], batch["stop"]):
            clip = records.Clip(str(vid), int(index), int(start), int(stop))
            ok.append(graph.run_clip(self.run, clip, self.stages))
        return {**batch, "ok": ok}


class _Captioner:
    def __init__(self, run: graph.Run, pool_size: int):
        cfg = run.config.caption
        self.run = run
        self.captioner = backends.make_captioner(_with(cfg, rate_limit_rpm=cfg.rate_limit_rpm / pool_size,
                                                       cache_dir=backends.caption_cache_dir(cfg, run.output)))

    def __call__(self, batch: dict) -> dict:
        ok = []
        for vid, hand, start, stop in zip(batch["video_id"], batch["hand"], batch["start"], batch["stop"]):
            seg = records.Segment(str(hand), int(start), int(stop))
            ok.append(graph.run_caption(self.run, str(vid), seg, self.captioner))
        return {**batch, "ok": ok}


def _with(cfg, **changes):
    out = cfg.copy_and_resolve_references()
    out.unlock()
    out.update(changes)
    return out


def _rows(ds) -> list[dict]:
    return ds.take_all()


def execute(run: graph.Run, videos: list[str], address: str | None = None, num_cpus: int | None = None) -> None:
    started = False
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)}}
        ray.init(address=address, num_cpus=num_cpus if not address else None, include_dashboard=False,
                 runtime_env=env, log_to_driver=False)
        started = True
    try:
        _execute(run, videos)
    finally:
        if started:
            ray.shutdown()


def _execute(run: graph.Run, videos: list[str]) -> None:
    cfg = run.config
    data = ray.data
    plans = _rows(data.from_items([{"path": v} for v in videos]).map(
        lambda row: {"path": row["path"], "clips": [vars(c) for c in graph.plan_video(run, row["path"])]}))
    clips = [c for p in sorted(plans, key=lambda r: r["path"]) for c in p["clips"]]
    ids = sorted(graph.video_id_of(p["path"]) for p in plans if len(p["clips"]))
    if clips:
        ds = data.from_items(clips)
        ds = ds.map_batches(_geometry_batch(("intrinsics",), run), batch_size=1, num_cpus=1)
        ds = ds.map_batches(_ClipStages, fn_constructor_kwargs={"run": run, "stages": ("hands",)}, batch_size=1,
                            compute=data.ActorPoolStrategy(size=max(1, int(cfg.hands.actors))),
                            num_cpus=cfg.hands.num_cpus, num_gpus=cfg.hands.num_gpus)
        ds = ds.map_batches(_geometry_batch(("camera_motion", "camera_poses"), run), batch_size=1, num_cpus=1)
        _rows(ds)
    if ids:
        _rows(data.from_items([{"video_id": v} for v in ids]).map(
            lambda row: {"video_id": row["video_id"], "ok": graph.run_video(run, row["video_id"])}))
    segments = [{"video_id": v, "hand": s.hand, "start": s.start, "stop": s.stop}
                for v in ids for s in graph.segments_of(run, v)]
    if segments and cfg.caption.backend != "none":
        size = max(1, int(cfg.caption.concurrency))
        _rows(data.from_items(segments).map_batches(
            _Captioner, fn_constructor_kwargs={"run": run, "pool_size": size}, batch_size=1,
            compute=data.ActorPoolStrategy(size=size), num_cpus=0.25))
    if ids:
        _rows(data.from_items([{"video_id": v} for v in ids]).map(
            lambda row: {"video_id": row["video_id"], "ok": graph.write_video(run, row["video_id"])}))


def _geometry_batch(stages: tuple[str, ...], run: graph.Run):
    def fn(batch: dict) -> dict:
        return _ClipStages(run, stages)(batch)
    return fn
