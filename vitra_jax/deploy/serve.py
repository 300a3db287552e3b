"""Websocket policy server: msgpack observations in, action chunks out, requests of all clients batched.

    python -m vitra_jax.deploy.serve --bundle BUNDLE --port 8765 [--host 127.0.0.1] [--max-batch 8]
        [--batch-wait-ms 5] [--device cpu|cuda] [--dtype float32|bfloat16] [--compile] [--cuda-graphs]
        [--threads N]

Protocol (`vitra_jax.deploy.wire` messages over one websocket per client):
- on connect the server sends `{"metadata": policy.metadata(), "server": {...}}`;
- a request is a dict with the observation keys of `DeployedPolicy.predict_batch` (image uint8 (H, W, 3),
  instruction str, state (S,), state_mask (S,), action_mask (N, A), fov (2,); optionally num_samples,
  cfg_scale, num_ddim_steps, use_ddim, seed) plus an optional `request_id` echoed in the reply;
- the reply holds the result arrays, `request_id` and `timing` {queue_ms, infer_ms, batch_size}, or
  `{"error": "...", "request_id": ...}` for a request that failed validation or inference.
`GET /healthz` answers 200 with JSON counters (503 while shutting down).

Every request is validated on arrival, so a bad one is answered alone and never reaches a batch. Valid
requests wait in one asyncio queue; a single worker takes up to `max_batch` of them, waiting at most
`batch_wait_ms` after the first, and runs ONE `predict_batch` call in a worker thread so the event loop keeps
accepting meanwhile. Torch enters only through the policy object.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import http
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vitra_jax.deploy import checks, wire
from vitra_jax.deploy.sampling import ddim_timesteps

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
REQUIRED_KEYS = ("image", "instruction", "state", "state_mask", "action_mask", "fov")
# optional sampling options of predict_batch: name -> (python types accepted, check, description)
_INT = (int, np.integer)
_NUM = (int, float, np.integer, np.floating)
OPTIONAL_KEYS: dict[str, tuple[tuple[type, ...], Callable[[Any], bool], str]] = {
    "num_samples": (_INT, lambda v: 1 <= v <= 64, "an integer in [1, 64]"),
    "cfg_scale": (_NUM, lambda v: np.isfinite(v) and v >= 0, "a finite number >= 0"),
    "num_ddim_steps": (_INT, lambda v: 1 <= v <= 1000, "an integer in [1, 1000]"),
    "use_ddim": ((bool, np.bool_), lambda v: True, "a boolean"),
    "seed": (_INT, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)"),
}
MAX_IMAGE_SIDE = 4096


class RequestError(ValueError):
    """A request that cannot be served (the message names the problem)."""


@dataclasses.dataclass(frozen=True)
class RequestSpec:
    """Array shapes a request must have, read from `policy.metadata()`."""

    state_dim: int
    action_dim: int
    chunk_len: int
    num_train_steps: int
    default_ddim_steps: int = 10

    @classmethod
    def from_metadata(cls, meta: dict) -> RequestSpec:
        keys = ["state_dim", "action_dim", "chunk_len", "num_train_steps"]
        missing = [k for k in keys if k not in meta]
        if missing:
            raise ValueError(f"policy metadata lacks {missing}; it must give {keys}")
        default = meta.get("defaults", {}).get("num_ddim_steps", cls.default_ddim_steps)
        return cls(*(int(meta[k]) for k in keys), default_ddim_steps=int(default))

    def ddim_steps_ok(self, n: int) -> bool:
        """Whether IDDPM's respacing of num_train_steps has a stride giving exactly n DDIM steps."""
        try:
            ddim_timesteps(self.num_train_steps, n)
        except ValueError:
            return False
        return True


def _array(msg: dict, key: str, shape: tuple[int, ...], kinds: str, kind_desc: str) -> np.ndarray:
    v = msg[key]
    if not isinstance(v, np.ndarray):
        raise RequestError(f"{key} must be a numpy array of shape {shape}, got {type(v).__name__}")
    if v.shape != shape:
        raise RequestError(f"{key} must have shape {shape}, got {v.shape}")
    if v.dtype.kind not in kinds:
        raise RequestError(f"{key} must be {kind_desc}, got dtype {v.dtype}")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise RequestError(f"{key} contains non-finite values")
    return v


def validate_request(msg: Any, spec: RequestSpec) -> tuple[dict, Any]:
    """(observation dict for predict_batch, request_id) of one decoded request; raises RequestError."""
    if not isinstance(msg, dict):
        raise RequestError(f"a request must be a map of observation keys, got {type(msg).__name__}")
    request_id = msg.get("request_id")
    if request_id is not None and not isinstance(request_id, (str, int)):
        raise RequestError(f"request_id must be a string or an integer, got {type(request_id).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in msg]
    if missing:
        raise RequestError(f"missing observation key(s) {missing}; a request needs {list(REQUIRED_KEYS)}")
    unknown = sorted(set(msg) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS) - {"request_id"})
    if unknown:
        raise RequestError(f"unknown key(s) {unknown}; allowed: {list(REQUIRED_KEYS) + list(OPTIONAL_KEYS)} "
                           "and request_id")
    image = msg["image"]
    problem = checks.image_problem(image, MAX_IMAGE_SIDE)
    if problem:
        raise RequestError(problem)
    if not isinstance(msg["instruction"], str):
        raise RequestError(f"instruction must be a string, got {type(msg['instruction']).__name__}")
    obs = {"image": image, "instruction": msg["instruction"],
           "state": _array(msg, "state", (spec.state_dim,), "f", "floating point"),
           "state_mask": _array(msg, "state_mask", (spec.state_dim,), "biuf", "bool or numeric"),
           "action_mask": _array(msg, "action_mask", (spec.chunk_len, spec.action_dim), "biuf", "bool or numeric"),
           "fov": _array(msg, "fov", (2,), "f", "floating point (radians)")}
    problem = checks.fov_problem(obs["fov"])
    if problem:
        raise RequestError(problem)
    for key, (types, ok, desc) in OPTIONAL_KEYS.items():
        if key not in msg:
            continue
        v = msg[key]
        is_bool = isinstance(v, (bool, np.bool_))
        if not isinstance(v, types) or (is_bool and key != "use_ddim") or not ok(v):
            raise RequestError(f"{key} must be {desc}, got {v!r}")
        obs[key] = v.item() if isinstance(v, np.generic) else v
    # checked here so such a request cannot fail the whole batch it would join
    steps = obs.get("num_ddim_steps", spec.default_ddim_steps)
    if obs.get("use_ddim", True) and not spec.ddim_steps_ok(steps):
        raise RequestError(f"num_ddim_steps {steps} is not reachable by respacing {spec.num_train_steps} "
                           "training steps (no stride gives exactly that many)")
    return obs, request_id


@dataclasses.dataclass
class _Pending:
    obs: dict
    request_id: Any
    future: asyncio.Future
    arrived: float


class PolicyServer:
    """Serves one policy object (`metadata()`, `predict_batch(list[dict]) -> list[dict]`) over websockets."""

    def __init__(self, policy: Any, *, max_batch: int = 8, batch_wait_ms: float = 5.0, max_queue: int = 256,
                 max_message_bytes: int = 64 * 2**20, server_info: dict | None = None):
        if max_batch < 1 or batch_wait_ms < 0 or max_queue < 1:
            raise ValueError(f"need max_batch >= 1, batch_wait_ms >= 0, max_queue >= 1; got {max_batch}, "
                             f"{batch_wait_ms}, {max_queue}")
        self.policy = policy
        self.metadata = policy.metadata()
        self.spec = RequestSpec.from_metadata(self.metadata)
        self.max_batch, self.batch_wait_s, self.max_queue = max_batch, batch_wait_ms / 1e3, max_queue
        self.max_message_bytes = max_message_bytes
        self.server_info = {"protocol": PROTOCOL_VERSION, "max_batch": max_batch, "batch_wait_ms": batch_wait_ms,
                            "required_keys": list(REQUIRED_KEYS), "optional_keys": list(OPTIONAL_KEYS),
                            **(server_info or {})}
        self.counters = {"connections_open": 0, "connections_total": 0, "requests": 0, "replies": 0,
                         "invalid_requests": 0, "inference_errors": 0, "batches": 0, "max_batch_seen": 0}
        self.port: int | None = None
        self._started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closing = False
        self._queue: asyncio.Queue[_Pending] | None = None
        self._inflight: list[_Pending] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="policy-inference")

    # --- health ---------------------------------------------------------------------------------------------

    def health(self) -> dict:
        return {"status": "shutting down" if self._closing else "ok",
                "uptime_s": round(time.monotonic() - self._started, 3),
                "queue_depth": self._queue.qsize() if self._queue else 0, **self.counters}

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/healthz":
            return None
        status = http.HTTPStatus.SERVICE_UNAVAILABLE if self._closing else http.HTTPStatus.OK
        response = connection.respond(status, json.dumps(self.health()) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # --- connections ----------------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.counters["connections_open"] += 1
        self.counters["connections_total"] += 1
        tasks: set[asyncio.Task] = set()
        try:
            await ws.send(wire.encode({"metadata": self.metadata, "server": self.server_info}))
            async for message in ws:
                task = asyncio.create_task(self._answer(ws, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.counters["connections_open"] -= 1

    async def _answer(self, ws: ServerConnection, message: str | bytes) -> None:
        self.counters["requests"] += 1
        reply = await self._reply_for(message)
        if "error" in reply:
            log.info("request %r answered with an error: %s", reply.get("request_id"), reply["error"])
        try:
            await ws.send(wire.encode(reply))
        except ConnectionClosed:
            log.info("client left before its reply to request %r", reply.get("request_id"))

    async def _reply_for(self, message: str | bytes) -> dict:
        request_id = None
        try:
            if isinstance(message, str):
                raise RequestError("expected a binary msgpack message, got a text frame")
            try:
                msg = wire.decode(message)
            except wire.WireError as e:
                raise RequestError(str(e)) from None
            if isinstance(msg, dict) and isinstance(msg.get("request_id"), (str, int)):
                request_id = msg["request_id"]
            obs, request_id = validate_request(msg, self.spec)
            if self._closing:
                raise RequestError("server is shutting down")
            if self._queue.qsize() >= self.max_queue:
                raise RequestError(f"server overloaded: {self.max_queue} requests already waiting")
        except RequestError as e:
            self.counters["invalid_requests"] += 1
            return {"error": str(e), "request_id": request_id}
        pending = _Pending(obs, request_id, asyncio.get_running_loop().create_future(), time.perf_counter())
        await self._queue.put(pending)
        return await pending.future

    # --- batching ---------------------------------------------------------------------------------------------

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.batch_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._inflight = await self._next_batch()
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.policy.predict_batch,
                                                     [p.obs for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"predict_batch returned {len(results)} results for {len(batch)} requests")
                error = None
            except Exception as e:  # any failure of the model answers this batch, the server stays up
                log.exception("inference failed for a batch of %d requests", len(batch))
                self.counters["inference_errors"] += len(batch)
                error = f"inference failed: {type(e).__name__}: {e}"
            infer_ms = (time.perf_counter() - t0) * 1e3
            self.counters["batches"] += 1
            self.counters["max_batch_seen"] = max(self.counters["max_batch_seen"], len(batch))
            for i, p in enumerate(batch):
                if error is not None:
                    reply = {"error": error, "request_id": p.request_id}
                else:
                    timing = {"queue_ms": (t0 - p.arrived) * 1e3, "infer_ms": infer_ms, "batch_size": len(batch)}
                    reply = {**results[i], "request_id": p.request_id, "timing": timing}
                    self.counters["replies"] += 1
                if not p.future.done():
                    p.future.set_result(reply)
                self._queue.task_done()
            self._inflight = []

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def run(self, host: str, port: int, on_ready: Callable[[PolicyServer], None] | None = None,
                  drain_timeout_s: float = 30.0) -> None:
        """Serve until `stop()`; then refuse new requests, answer the waiting ones, close connections."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._queue = asyncio.Queue()
        worker = asyncio.create_task(self._worker())
        try:
            async with ws_serve(self._handle, host, port, process_request=self._process_request,
                                max_size=self.max_message_bytes, compression=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.info("policy server listening on ws://%s:%d (max_batch=%d, batch_wait_ms=%g)", host,
                         self.port, self.max_batch, self.batch_wait_s * 1e3)
                if on_ready is not None:
                    on_ready(self)
                await self._stop.wait()
                self._closing = True
                await self._drain(worker, drain_timeout_s)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info("policy server stopped")

    async def _drain(self, worker: asyncio.Task, timeout_s: float) -> None:
        """Answer every request already accepted (new ones are refused meanwhile); after `timeout_s`, answer
        the rest with an error so no client waits forever."""
        log.info("shutting down: answering %d waiting requests", self._queue.qsize())
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
            return
        except TimeoutError:
            log.warning("gave up on %d requests after %gs", self._queue.qsize(), timeout_s)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        left = list(self._inflight)
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for p in left:
            if not p.future.done():
                p.future.set_result({"error": "server shut down before answering", "request_id": p.request_id})

    def stop(self) -> None:
        """Ask a running server to shut down gracefully; callable from any thread and idempotent."""
        if self._loop is None or self._stop is None:
            raise RuntimeError("the server is not running")
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._stop.set)


def serve(policy: Any, host: str = "127.0.0.1", port: int = 8765, *, max_batch: int = 8,
          batch_wait_ms: float = 5.0, server_info: dict | None = None,
          on_ready: Callable[[PolicyServer], None] | None = None) -> None:
    """Run a policy server until SIGINT/SIGTERM (main thread) or `server.stop()` (the server is handed to
    `on_ready` once listening; port 0 picks a free port, then in `server.port`)."""
    server = PolicyServer(policy, max_batch=max_batch, batch_wait_ms=batch_wait_ms, server_info=server_info)

    async def main() -> None:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, server.stop)
        await server.run(host, port, on_ready)

    asyncio.run(main())


def _port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (None if it can), found by binding a probe socket."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            s.bind((host, port))
        except OSError as e:
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vitra_jax.deploy.serve", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported policy bundle directory")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-batch", type=int, default=8, help="most requests per predict_batch call")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest wait for more requests")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT step")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the VLM prefix and the denoising loop as CUDA graphs (cuda only)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="run every batch size up to --max-batch once before listening (compilation, graph capture)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op CPU threads (0: torch's default; 1 is often fastest for small models on a "
                        "busy CPU)")
    args = p.parse_args(argv)
    if args.max_batch < 1 or args.batch_wait_ms < 0 or args.threads < 0:
        p.error("--max-batch must be >= 1, --batch-wait-ms and --threads >= 0")
    if args.cuda_graphs and args.device != "cuda":
        p.error("--cuda-graphs needs --device cuda")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from vitra_jax.deploy.bundle import BundleError, load_bundle

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")
    problem = _port_problem(args.host, args.port)  # before loading and warming up, which take minutes for 3B
    if problem:
        p.error(problem)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        policy = load_bundle(args.bundle, device=args.device, dtype=args.dtype, compile=args.compile,
                             cuda_graphs=args.cuda_graphs)
    except BundleError as e:
        p.error(str(e))
    if args.warmup:
        seconds = policy.warmup(range(1, args.max_batch + 1))
        log.info("warmed up batch sizes 1..%d in %.1f s", args.max_batch, sum(seconds.values()))
    info = {"bundle": str(args.bundle), "device": args.device, "dtype": args.dtype, "compile": args.compile,
            "cuda_graphs": args.cuda_graphs, "threads": torch.get_num_threads()}
    serve(policy, args.host, args.port, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
          server_info=info)


if __name__ == "__main__":
    main()
