"""Training-data throughput: the grain pipeline per CPU core against tf.data, and host memory over time.

    python -m vitra_jax.benchmarks.data [--samples=1024] [--batch=32] [--episodes=32]
        [--rss_samples=20000] [--workers=2] [--out=/tmp/vitra_data_bench]

Data: the procedural demo episodes re-encoded as 398x224 JPEGs (the stored size of VITRA-1M frames,
intrinsics scaled to match) in a frame store of `--episodes` episodes. Rates are samples per CPU-second of
the process tree (wall-clock rates shown too; on a shared machine they are the noisier figure):
1. grain, one core (no worker processes, one reading thread, OpenCV single-threaded): the full training
   transform at 224x224 with full augmentation (frame read + JPEG decode, 16-step chunk, virtual-camera
   warp with Lanczos, flip, colour jitter, bicubic squash, normalization, tokenizing, batching);
2. grain, one core, only the work of (3) on the same frames and views, in OpenCV;
3. tf.data, one core (private thread pool of 1, one op thread): JPEG decode, the perspective warp of the
   view the augmentation draws for that sample (`ImageProjectiveTransformV3`, bilinear), bicubic resize;
4. grain with `--workers` worker processes: rate, and the resident memory of the main process plus its
   workers after warm-up and after `--rss_samples` more samples (0 skips this part).
Prints one table.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# one core for TensorFlow's op thread pools, set before TF starts (the demo build imports it)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import cv2  # noqa: E402
import grain  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vitra_jax.data import augment, frames, loader, mixture, transforms  # noqa: E402
from vitra_jax.data.config import component, data_config  # noqa: E402

_SAMPLES = flags.DEFINE_integer("samples", 1024, "Timed samples per single-core measurement.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")
_EPISODES = flags.DEFINE_integer("episodes", 32, "Episodes in the benchmark frame store.")
_RSS_SAMPLES = flags.DEFINE_integer("rss_samples", 20000, "Samples for the memory measurement (0: skip).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes for the memory measurement.")
_OUT = flags.DEFINE_string("out", "/tmp/vitra_data_bench", "Working folder (demo build, store, tokenizer).")

SIZE = 224
SOURCE_WH = (398, 224)
TEXT_LEN = 48


def build_store(out: pathlib.Path, episodes: int) -> pathlib.Path:
    """A frame store of demo episodes re-encoded at SOURCE_WH with per-copy noise (intrinsics scaled)."""
    root = out / "frames" / "bench"
    if (root / "train" / frames.STORE_FILE).is_file():
        return root
    demo_root = loader.build_demo(out)
    src = frames.open_store(demo_root, "train")
    key = src.image_keys[0]
    rng = np.random.default_rng(0)

    def items():
        for i in range(episodes):
            e = i % src.num_episodes
            ep = src.episode(e)
            h, w = src.image(e, 0).shape[:2]
            scale = np.diag([SOURCE_WH[0] / w, SOURCE_WH[1] / h, 1.0]).astype(np.float32)
            ep["camera"]["intrinsics"] = scale @ ep["camera"]["intrinsics"]
            jpegs = []
            for t in range(int(src.episode_lengths[e])):
                img = cv2.resize(src.image(e, t), SOURCE_WH, interpolation=cv2.INTER_CUBIC).astype(np.int16)
                img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
                jpegs.append(cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
            yield ep, {key: jpegs}

    split_dir = root / "train"
    frames.write_shard(split_dir, 0, 1, [key], items())
    info = {k: v for k, v in src.info.items() if k not in ("fingerprint", "num_shards", "num_episodes",
                                                            "num_frames", "shard_episode_starts")}
    frames.finalize_split(split_dir, 1, dict(info, source="benchmark: demo episodes at 398x224"),
                          identity={"name": "benchmark", "episodes": episodes, "size": list(SOURCE_WH)})
    return root


def _proc_rss_and_cpu(pid: int) -> tuple[int, float]:
    """(resident bytes, user+system CPU seconds) of one process, from /proc."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def tree_usage() -> tuple[int, float]:
    """RSS and CPU seconds of this process plus its live child processes (grain workers)."""
    pids = [os.getpid()] + [p.pid for p in multiprocessing.active_children()]
    rss = cpu = 0.0
    for pid in pids:
        try:
            r, c = _proc_rss_and_cpu(pid)
        except FileNotFoundError:  # a worker that just exited
            continue
        rss, cpu = rss + r, cpu + c
    return int(rss), cpu


def time_batches(it, num_batches: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) for `num_batches` batches after one warm-up batch."""
    next(it)
    wall, (_, cpu) = time.perf_counter(), tree_usage()
    for _ in range(num_batches):
        next(it)
    return time.perf_counter() - wall, tree_usage()[1] - cpu


def warp_records(pipeline: loader.Pipeline, num: int, seed: int) -> list[tuple[bytes, np.ndarray, tuple]]:
    """(JPEG bytes, 3x3 output->source pixel homography, (w, h)) of the first `num` grain samples, each with
    the virtual-camera view the augmentation draws for it."""
    src = pipeline.train_sources[0]
    index = mixture.MixtureIndex(pipeline.components(), seed=seed)
    sampler = transforms.LoadSample(pipeline.train_sources, seed=seed, chunk_len=16)
    cfg = augment.AugmentConfig(height=SIZE)
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # pixel index -> continuous coordinate
    out = []
    for k in range(num):
        r = index[k]
        e, t = (int(v) for v in np.asarray(src.store.locate(np.asarray([r["frame"]]))).reshape(2))
        sample = sampler.load(0, r["frame"], None)
        view = augment.sample_view(sample, np.random.default_rng([seed, k]), cfg)
        h = np.linalg.inv(half) @ np.linalg.inv(view.homography(sample["intrinsics"])) @ half
        out.append((src.store.image_bytes(e, t), h / h[2, 2], view.size))
    return out


class DecodeWarpResize(grain.transforms.Map):
    """The tf.data baseline's work in OpenCV: decode, bilinear perspective warp, bicubic squash, [-1, 1]."""

    def map(self, record):
        jpeg, h, size = record
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        img = cv2.warpPerspective(img, h, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        return cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 127.5 - 1.0


def grain_subset_rate(records, batch: int) -> tuple[float, float]:
    """grain (one thread) doing only the tf.data baseline's work on the same records."""
    ds = grain.MapDataset.source(records).repeat().map(DecodeWarpResize()).batch(batch, drop_remainder=True)
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)))
    return time_batches(it, len(records) // batch - 1)


def tf_data_rate(records, batch: int) -> tuple[float, float]:
    """tf.data (one thread) decode + warp (`ImageProjectiveTransformV3`, bilinear) + bicubic resize."""
    import tensorflow as tf

    def prepare(jpeg, transform, size):
        img = tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32)[None]
        img = tf.raw_ops.ImageProjectiveTransformV3(images=img, transforms=transform[None], output_shape=size,
                                                    fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.image.resize(img[0], (SIZE, SIZE), method="bicubic") / 127.5 - 1.0

    params = np.stack([h.reshape(-1)[:8] for _, h, _ in records]).astype(np.float32)
    sizes = np.array([(hw[1], hw[0]) for _, _, hw in records], np.int32)
    ds = tf.data.Dataset.from_tensor_slices(([r[0] for r in records], params, sizes))
    ds = ds.map(prepare, num_parallel_calls=1).batch(batch, drop_remainder=True).repeat()
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    it = iter(ds.with_options(options).prefetch(1))
    return time_batches(it, len(records) // batch - 1)


def main(argv) -> None:
    del argv
    cv2.setNumThreads(1)
    out = pathlib.Path(_OUT.value)
    t0 = time.perf_counter()
    root = build_store(out, _EPISODES.value)
    base = dict(data_dir=str(out), components=[component("bench", str(root), 1.0)], augment=True,
                tokenizer_vocab=512)
    pipe = loader.make_pipeline(data_config(**base), image_size=SIZE, max_text_len=TEXT_LEN)
    store = pipe.train_sources[0].store
    print(f"data: {store.num_episodes} episodes, {store.num_frames} frames at {SOURCE_WH[0]}x{SOURCE_WH[1]} "
          f"(setup {time.perf_counter() - t0:.1f} s)")
    batch, n = _BATCH.value, _SAMPLES.value // _BATCH.value
    rows = []

    it = pipe.train_iterator(batch, seed=0)
    wall, cpu = time_batches(it, n)
    full_rate = n * batch / cpu
    counts, read = pipe.counters(), dict(store.read_bytes)
    rows.append(("grain, 1 core: full training transform", n * batch / wall, full_rate))
    del it

    records = warp_records(pipe, (n + 1) * batch, mixture.derive_seed(pipe.cfg.shuffle_seed, 0))
    wall, cpu = grain_subset_rate(records, batch)
    subset_rate = n * batch / cpu
    rows.append(("grain, 1 core: decode + warp + resize", n * batch / wall, subset_rate))
    wall, cpu = tf_data_rate(records, batch)
    tf_rate = n * batch / cpu
    rows.append(("tf.data, 1 core: decode + warp + resize", n * batch / wall, tf_rate))

    rss_rows = []
    if _RSS_SAMPLES.value > 0:
        wpipe = loader.make_pipeline(data_config(**base, num_workers=_WORKERS.value), image_size=SIZE,
                                     max_text_len=TEXT_LEN)
        it = wpipe.train_iterator(batch, seed=1)
        for _ in range(max(1, 256 // batch)):  # warm-up: workers started, caches filled
            next(it)
        rss0, cpu0 = tree_usage()
        t = time.perf_counter()
        m = max(1, _RSS_SAMPLES.value // batch)
        for _ in range(m):
            next(it)
        wall = time.perf_counter() - t
        rss1, cpu1 = tree_usage()
        rows.append((f"grain, {_WORKERS.value} worker processes", m * batch / wall, m * batch / (cpu1 - cpu0)))
        rss_rows = [(m * batch, rss0, rss1)]
        del it

    print(f"\n{'pipeline':<44}{'samples/s':>12}{'samples/CPU-s':>15}")
    for name, wall_rate, cpu_rate in rows:
        print(f"{name:<44}{wall_rate:>12.1f}{cpu_rate:>15.1f}")
    print(f"\ngrain / tf.data per CPU-second, same work: {subset_rate / tf_rate:.2f}x; "
          f"full training transform / tf.data subset: {full_rate / tf_rate:.2f}x")
    per = counts["samples"] or 1
    print(f"bytes read per sample: {counts['bytes_per_sample'] / 1024:.1f} KiB (JPEG {read['images'] / per / 1024:.1f}"
          f" + episode records {read['episodes'] / per / 1024:.1f}, {pipe.cfg.episode_cache}-episode cache); "
          f"frame index: {store.episode_offsets.nbytes / store.num_frames:.2f} bytes/frame")
    for samples, rss0, rss1 in rss_rows:
        print(f"host RSS (main + workers) over {samples} samples: {rss0 / 2**20:.0f} MiB -> {rss1 / 2**20:.0f} MiB "
              f"(growth {(rss1 - rss0) / 2**20:+.0f} MiB)")


if __name__ == "__main__":
    app.run(main)
