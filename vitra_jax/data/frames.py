"""Frame store: an RLDS split laid out so one training sample reads one frame, not one episode.

A source RLDS record holds a whole episode (every JPEG of it), so sampling frame t of a 26-frame episode
reads 26 images. The frame store keeps, per split, in `<root>/<split>/`:

    store.json                                  counts, source, feature spec, fingerprint (written last)
    episode_offsets.npy                         int64 (E + 1,): global id of each episode's first frame
    episodes/NNNNN-of-MMMMM.array_record        one record per episode: every non-image step field
                                                stacked over T plus `episode_metadata` (msgpack + numpy)
    images/<key>/NNNNN-of-MMMMM.array_record    one record per step: the image bytes exactly as stored
    shards/NNNNN-of-MMMMM.json                  per-shard done marker (episode lengths, content digest)

Frame id f -> (episode, t) is a searchsorted over `episode_offsets` (8 bytes per episode, nothing decoded).
Every image key of the source is its own file set (cameras chosen at conversion time), so reading one
camera never reads the others. A reader opens files lazily in the process that reads, so a `FrameStore`
pickles into grain worker processes.

Episode records: nested dicts as in `vitra_jax.data.chunks.stack_steps` (text as numpy bytes arrays `S`;
binary strings ending in NUL, which `S` arrays would cut, as object arrays of bytes);
a step field whose shape changes between steps (e.g. a variable-length list of rephrasings) is stored as a
list of per-step arrays and read back as an object array of them, as `stack_steps` makes it.
`vitra_jax.data.convert` writes stores; this module defines the format and reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from collections.abc import Iterable, Iterator

import cv2
import msgpack
import numpy as np

FORMAT_VERSION = 1
STORE_FILE = "store.json"
OFFSETS_FILE = "episode_offsets.npy"
# group_size 1: every record is its own chunk, so a random read touches only that record.
IMAGE_OPTIONS = "group_size:1,uncompressed,max_parallelism:1"  # JPEG/PNG does not compress further
EPISODE_OPTIONS = "group_size:1,max_parallelism:1"  # default zstd: float arrays and text shrink well
READ_OPTIONS = "readahead_buffer_size:0"  # random access: no read-ahead into neighbouring records

_EXT_ARRAY = 1
_EXT_BYTES = 2  # object array of bytes: binary values whose trailing NULs a numpy 'S' array would drop


class StoreError(ValueError):
    """A frame store is missing, incomplete or inconsistent."""


# --- episode record (de)serialization: msgpack with numpy arrays as an extension type -------------------

def _default(obj):
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            flat = obj.ravel().tolist()
            if not all(isinstance(x, bytes) for x in flat):
                raise TypeError("cannot store an object array of non-bytes values in a frame store")
            return msgpack.ExtType(_EXT_BYTES, msgpack.packb([list(obj.shape), [bytes(x) for x in flat]]))
        header = msgpack.packb([obj.dtype.str, list(obj.shape)])
        return msgpack.ExtType(_EXT_ARRAY, header + np.ascontiguousarray(obj).tobytes())
    raise TypeError(f"cannot store a {type(obj).__name__} in a frame store")


def _ext_hook(code: int, data: bytes):
    if code == _EXT_BYTES:
        shape, flat = msgpack.unpackb(data)
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    if code != _EXT_ARRAY:
        raise StoreError(f"unknown msgpack extension type {code} in an episode record")
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    dtype, shape = next(unpacker)
    buf = data[unpacker.tell():]
    return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape).copy()


def pack_episode(tree: dict) -> bytes:
    """Nested dict of numpy arrays / lists / bytes / str / numbers -> one record (no pickle)."""
    return msgpack.packb(tree, default=_default, use_bin_type=True)


def unpack_episode(record: bytes) -> dict:
    """Inverse of `pack_episode`; 0-d arrays stay 0-d arrays and lists (ragged step fields) come back as
    object arrays of per-step arrays, as `chunks.stack_steps` returns them."""
    return _ragged_to_objects(msgpack.unpackb(record, ext_hook=_ext_hook, raw=False, strict_map_key=False))


def _ragged_to_objects(node):
    if isinstance(node, dict):
        return {k: _ragged_to_objects(v) for k, v in node.items()}
    if isinstance(node, list):
        out = np.empty(len(node), dtype=object)
        for i, v in enumerate(node):  # one by one: a slice assignment would broadcast equal-shape arrays
            out[i] = v
        return out
    return node


# --- layout ---------------------------------------------------------------------------------------------

def shard_name(index: int, count: int) -> str:
    return f"{index:05d}-of-{count:05d}"


def episodes_path(split_dir: Path, index: int, count: int) -> Path:
    return split_dir / "episodes" / f"{shard_name(index, count)}.array_record"


def images_path(split_dir: Path, key: str, index: int, count: int) -> Path:
    return split_dir / "images" / key / f"{shard_name(index, count)}.array_record"


def marker_path(split_dir: Path, index: int, count: int) -> Path:
    return split_dir / "shards" / f"{shard_name(index, count)}.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so `path` is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_shard(split_dir: Path, index: int, count: int, image_keys: Iterable[str],
                episodes: Iterator[tuple[dict, dict[str, list[bytes]]]]) -> dict:
    """Write output shard `index` of `count` from (non-image tree, {key: per-step bytes}) pairs.

    Files go to temporary names, are renamed when complete, and the done marker is written last; a shard
    is finished exactly when its marker exists. Returns the marker's content."""
    from array_record.python.array_record_module import ArrayRecordWriter

    image_keys = list(image_keys)
    finals = {"": episodes_path(split_dir, index, count)}
    finals.update({k: images_path(split_dir, k, index, count) for k in image_keys})
    tmps = {k: p.with_name(p.name + f".tmp-{os.getpid()}") for k, p in finals.items()}
    for p in tmps.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    writers = {k: ArrayRecordWriter(str(p), EPISODE_OPTIONS if k == "" else IMAGE_OPTIONS)
               for k, p in tmps.items()}
    digest = hashlib.sha256()
    lengths = []
    try:
        for tree, images in episodes:
            lengths_here = {len(images[k]) for k in image_keys}
            if len(lengths_here) != 1:
                raise StoreError(f"image keys of one episode have different step counts: {lengths_here}")
            record = pack_episode(tree)
            writers[""].write(record)
            digest.update(hashlib.sha256(record).digest())
            for k in image_keys:
                for b in images[k]:
                    writers[k].write(b)
                    digest.update(hashlib.sha256(b).digest())
            lengths.append(lengths_here.pop())
    finally:
        for w in writers.values():
            w.close()
    for k, p in tmps.items():
        os.replace(p, finals[k])
    marker = {"episodes": len(lengths), "frames": int(sum(lengths)), "lengths": lengths,
              "sha256": digest.hexdigest()}
    atomic_write_bytes(marker_path(split_dir, index, count), json.dumps(marker).encode())
    return marker


def finalize_split(split_dir: Path, count: int, info: dict, identity: dict) -> dict:
    """After all `count` shards are done: write the index and `store.json` (last). Returns the store info.

    The fingerprint hashes `identity` (what the data is, e.g. dataset name, version, split, image keys; not
    where it came from) and every record's digest, so equal content gives an equal fingerprint."""
    markers = [json.loads(marker_path(split_dir, i, count).read_text()) for i in range(count)]
    lengths = np.asarray([n for m in markers for n in m["lengths"]], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tmp = split_dir / f"{OFFSETS_FILE}.tmp-{os.getpid()}.npy"
    np.save(tmp, offsets)
    os.replace(tmp, split_dir / OFFSETS_FILE)
    fp = hashlib.sha256(json.dumps({"format_version": FORMAT_VERSION, **identity}, sort_keys=True).encode())
    for m in markers:
        fp.update(m["sha256"].encode())
    info = dict(info, format_version=FORMAT_VERSION, num_shards=count, num_episodes=int(len(lengths)),
                num_frames=int(offsets[-1]),
                shard_episode_starts=np.cumsum([0] + [m["episodes"] for m in markers]).tolist(),
                fingerprint=fp.hexdigest())
    atomic_write_bytes(split_dir / STORE_FILE, json.dumps(info, indent=1).encode())
    return info


# --- reading --------------------------------------------------------------------------------------------

class FrameStore:
    """Random access to the frames of one converted split (see the module docstring for the layout).

    `read_bytes` counts the record bytes returned so far, per kind ("episodes", "images"); these are the
    uncompressed record sizes (episode files are zstd-compressed on disk, image files are not)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        store_file = self.path / STORE_FILE
        if not store_file.is_file():
            raise StoreError(f"{self.path} is not a complete frame store (no {STORE_FILE}); the conversion "
                             "did not finish: rerun `python -m vitra_jax.data.convert` to complete it")
        self.info: dict = json.loads(store_file.read_text())
        if self.info.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{self.path}: frame store format {self.info.get('format_version')}, this code "
                             f"reads format {FORMAT_VERSION}; convert again")
        self.episode_offsets: np.ndarray = np.load(self.path / OFFSETS_FILE).astype(np.int64)
        self.episode_lengths: np.ndarray = np.diff(self.episode_offsets).astype(np.int32)
        self.num_episodes = len(self.episode_lengths)
        self.num_frames = int(self.episode_offsets[-1])
        if self.num_episodes != self.info["num_episodes"] or self.num_frames != self.info["num_frames"]:
            raise StoreError(f"{self.path}: {OFFSETS_FILE} does not match {STORE_FILE}")
        self.image_keys: tuple[str, ...] = tuple(self.info["image_keys"])
        self._count = int(self.info["num_shards"])
        self._shard_episodes = np.asarray(self.info["shard_episode_starts"], np.int64)
        self._shard_frames = self.episode_offsets[self._shard_episodes]
        self.read_bytes = {"episodes": 0, "images": 0}
        self._readers: dict = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = {}  # file handles stay in the process that opened them
        return state

    def __repr__(self) -> str:
        return (f"FrameStore({str(self.path)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
                f"image_keys={self.image_keys})")

    def _reader(self, key: str, shard: int):
        r = self._readers.get((key, shard))
        if r is None:
            from array_record.python.array_record_module import ArrayRecordReader

            path = (episodes_path(self.path, shard, self._count) if key == "" else
                    images_path(self.path, key, shard, self._count))
            r = self._readers[(key, shard)] = ArrayRecordReader(str(path), READ_OPTIONS)
        return r

    def _check_episode(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: the store has {self.num_episodes} episodes")
        return i

    def resolve_key(self, key: str | None) -> str:
        """A stored image key; None = the first configured one; 'image_0' also finds 'observation/image_0'."""
        if key is None:
            return self.image_keys[0]
        if key in self.image_keys:
            return key
        if f"observation/{key}" in self.image_keys:
            return f"observation/{key}"
        raise KeyError(f"image key {key!r} is not in this frame store; stored keys: {list(self.image_keys)}")

    def locate(self, frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global frame ids -> (episode index, step t), both int64 arrays of the ids' shape."""
        ids = np.asarray(frame_ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_frames):
            raise IndexError(f"frame ids must lie in [0, {self.num_frames}); got [{ids.min()}, {ids.max()}]")
        ep = np.searchsorted(self.episode_offsets, ids, side="right") - 1
        return ep, ids - self.episode_offsets[ep]

    def episode(self, i: int) -> dict:
        """Episode i: its non-image step fields stacked over T, plus key "episode_metadata"."""
        i = self._check_episode(i)
        shard = int(np.searchsorted(self._shard_episodes, i, side="right") - 1)
        record = self._reader("", shard).read([i - int(self._shard_episodes[shard])])[0]
        self.read_bytes["episodes"] += len(record)
        return unpack_episode(record)

    def image_bytes(self, i: int, t: int, key: str | None = None) -> bytes:
        """The stored (encoded) image of step t of episode i."""
        i = self._check_episode(i)
        if not 0 <= int(t) < self.episode_lengths[i]:
            raise IndexError(f"step {t} out of range: episode {i} has {self.episode_lengths[i]} steps")
        key = self.resolve_key(key)
        frame = int(self.episode_offsets[i]) + int(t)
        shard = int(np.searchsorted(self._shard_frames, frame, side="right") - 1)
        record = self._reader(key, shard).read([frame - int(self._shard_frames[shard])])[0]
        self.read_bytes["images"] += len(record)
        return record

    def image(self, i: int, t: int, key: str | None = None) -> np.ndarray:
        """Step t of episode i decoded: (H, W, 3) RGB uint8 for colour images (other images as stored)."""
        data = self.image_bytes(i, t, key)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise StoreError(f"episode {i} step {t}: image bytes do not decode")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img


def open_store(root: str | Path, split: str) -> FrameStore:
    """The frame store of `split` under a `convert` output folder `root`."""
    path = Path(root) / split
    if not path.is_dir():
        splits = sorted(p.name for p in Path(root).iterdir() if (p / STORE_FILE).is_file()) \
            if Path(root).is_dir() else []
        raise StoreError(f"no split {split!r} under {root}; converted splits: {splits}")
    return FrameStore(path)
