"""The policy server: concurrent clients get their own answers, requests are batched, malformed requests get
a naming error without poisoning a batch, inference failures are answered, shutdown is graceful."""

import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from vitra_jax.deploy import wire
from vitra_jax.deploy.client import PolicyClient, PolicyServerError
from vitra_jax.deploy.serve import serve

N, A, S = 16, 102, 102
REPO = pathlib.Path(__file__).resolve().parents[2]


def expected_actions(obs: dict) -> np.ndarray:
    """Written-out value the fake policy must return for this observation: (samples, N, A)."""
    samples = obs.get("num_samples", 1)
    out = np.empty((samples, N, A))
    for s in range(samples):
        for k in range(N):
            for d in range(A):
                out[s, k, d] = (float(obs["action_mask"][k, d]) * float(obs["state"][d]) + obs["fov"][0] * k
                                + float(obs["image"].mean()) + len(obs["instruction"]) + 1000 * s)
    return out


class ArithmeticPolicy:
    """Deterministic numpy policy: vectorized over the whole batch, records every batch size; an instruction
    'fail' makes the batch raise, 'slow' makes it sleep."""

    def __init__(self, delay_s: float = 0.01):
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.started = threading.Event()

    def metadata(self) -> dict:
        return {"state_dim": S, "action_dim": A, "chunk_len": N, "num_train_steps": 100, "image_size": 32,
                "device": "cpu"}

    def predict_batch(self, observations: list[dict]) -> list[dict]:
        self.batch_sizes.append(len(observations))
        self.started.set()
        instr = [o["instruction"] for o in observations]
        if "fail" in instr:
            raise RuntimeError("the model broke")
        time.sleep(self.delay_s + (1.0 if "slow" in instr else 0.0))
        masks = np.stack([o["action_mask"] for o in observations]).astype(np.float64)
        states = np.stack([o["state"] for o in observations]).astype(np.float64)
        shift = np.array([o["image"].mean() + len(o["instruction"]) for o in observations])
        fov0 = np.array([o["fov"][0] for o in observations], np.float64)
        base = masks * states[:, None, :] + fov0[:, None, None] * np.arange(N)[None, :, None] + shift[:, None, None]
        return [{"actions": np.stack([b + 1000 * s for s in range(o.get("num_samples", 1))])}
                for b, o in zip(base, observations)]


class RunningServer:
    def __init__(self, policy, **kw):
        self.ready = threading.Event()
        self.thread = threading.Thread(target=serve, args=(policy, "127.0.0.1", 0),
                                       kwargs={**kw, "on_ready": self._on_ready}, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "server did not start"

    def _on_ready(self, server):
        self.server = server
        self.ready.set()

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self):
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "server did not stop"


@pytest.fixture
def policy():
    return ArithmeticPolicy()


@pytest.fixture
def running(policy):
    srv = RunningServer(policy, max_batch=8, batch_wait_ms=10)
    yield srv
    if srv.thread.is_alive():
        srv.stop()


def make_obs(rng: np.random.Generator, **overrides) -> dict:
    obs = {"image": rng.integers(0, 256, (int(rng.integers(8, 40)), int(rng.integers(8, 40)), 3), dtype=np.uint8),
           "instruction": "Left hand: None. Right hand: " + "x" * int(rng.integers(0, 30)),
           "state": rng.normal(size=S).astype(np.float32),
           "state_mask": (rng.random(S) > 0.3).astype(np.float32),
           "action_mask": rng.random((N, A)) > 0.5,
           "fov": rng.uniform(0.5, 1.5, 2)}
    obs.update(overrides)
    return obs


# the malformed kinds mixed into the traffic, with the words their error must contain
def _wrong_shape(rng):
    return wire.encode(make_obs(rng, state=np.zeros(S - 1, np.float32))), ["state", "(102,)", "(101,)"]


def _missing_key(rng):
    obs = make_obs(rng)
    del obs["fov"]
    return wire.encode(obs), ["missing", "fov"]


def _garbage(rng):
    return b"\xc1\x00garbage", ["msgpack"]


def _wrong_dtype(rng):
    return wire.encode(make_obs(rng, image=np.zeros((8, 8, 3), np.float32))), ["image", "uint8", "float32"]


def _bad_instruction(rng):
    return wire.encode(make_obs(rng, instruction=["not", "a", "string"])), ["instruction", "string"]


def _fov_in_degrees(rng):
    return wire.encode(make_obs(rng, fov=np.array([60.0, 50.0]))), ["fov", "radians", "60.0"]


MALFORMED = [_wrong_shape, _missing_key, _garbage, _wrong_dtype, _bad_instruction, _fov_in_degrees]


def test_concurrent_clients_get_their_own_answers_in_batches(running, policy):
    n_clients, per_client = 4, 25
    outcomes: dict[int, list] = {}
    errors: list[BaseException] = []

    def client_loop(c: int):
        rng = np.random.default_rng(c)
        out = outcomes.setdefault(c, [])
        try:
            with PolicyClient("127.0.0.1", running.port, timeout=20) as cl, \
                    connect(f"ws://127.0.0.1:{running.port}", proxy=None) as raw:
                wire.decode(raw.recv(10))  # metadata on connect
                for i in range(per_client):
                    if (i + c) % 4 == 3:  # 1 in 4 malformed, every kind sent by some client
                        data, words = MALFORMED[(i // 4 + c) % len(MALFORMED)](rng)
                        raw.send(data)
                        out.append(("bad", words, wire.decode(raw.recv(10))))
                    else:
                        opts = {"num_samples": int(rng.integers(1, 3))} if i % 2 else {}
                        obs = make_obs(rng, **opts)
                        out.append(("ok", obs, cl.infer(obs)))
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    results = [r for c in range(n_clients) for r in outcomes[c]]
    assert len(results) == n_clients * per_client

    n_ok = n_bad = 0
    kinds_seen = set()
    for kind, payload, reply in results:
        if kind == "ok":
            n_ok += 1
            assert "error" not in reply
            np.testing.assert_allclose(reply["actions"], expected_actions(payload), rtol=1e-12, atol=1e-9)
            t = reply["timing"]
            assert t["queue_ms"] >= 0 and t["infer_ms"] > 0 and 1 <= t["batch_size"] <= 8
        else:
            n_bad += 1
            assert set(reply) == {"error", "request_id"}, reply
            for word in payload:
                assert word in reply["error"], (word, reply["error"])
            kinds_seen.add(tuple(payload))
    assert n_bad == 25 and len(kinds_seen) == len(MALFORMED)
    # every valid request went through predict_batch exactly once, no malformed one did, and they were batched
    assert sum(policy.batch_sizes) == n_ok
    assert max(policy.batch_sizes) > 1, policy.batch_sizes

    with PolicyClient("127.0.0.1", running.port) as cl:
        health = cl.health()
    assert health["status"] == "ok"
    assert (health["requests"], health["replies"], health["invalid_requests"]) == (100, n_ok, n_bad)
    assert health["batches"] == len(policy.batch_sizes) and health["max_batch_seen"] == max(policy.batch_sizes)
    assert health["inference_errors"] == 0


def test_client_sees_metadata_and_request_errors(running):
    rng = np.random.default_rng(5)
    with PolicyClient("127.0.0.1", running.port) as cl:
        assert cl.metadata["chunk_len"] == N and cl.server_info["max_batch"] == 8
        with pytest.raises(PolicyServerError, match=r"action_mask must have shape \(16, 102\), got \(16, 51\)"):
            cl.infer(make_obs(rng, action_mask=np.ones((N, 51), bool)))
        with pytest.raises(PolicyServerError, match="state contains non-finite values"):
            cl.infer(make_obs(rng, state=np.full(S, np.nan, np.float32)))
        with pytest.raises(PolicyServerError, match=r"num_samples must be an integer in \[1, 64\], got 0"):
            cl.infer(make_obs(rng, num_samples=0))
        # 100 training steps: strides 2 and 3 give 50 and 34 steps, none gives 45
        with pytest.raises(PolicyServerError, match="num_ddim_steps 45 is not reachable"):
            cl.infer(make_obs(rng, num_ddim_steps=45))
        with pytest.raises(PolicyServerError, match=r"unknown key\(s\) \['instrucion'\]"):
            cl.infer({**make_obs(rng), "instrucion": "typo"})
        obs = make_obs(rng)
        np.testing.assert_allclose(cl.infer(obs)["actions"], expected_actions(obs), rtol=1e-12, atol=1e-9)


def test_text_frame_is_answered_with_an_error(running):
    with connect(f"ws://127.0.0.1:{running.port}", proxy=None) as raw:
        hello = wire.decode(raw.recv(10))
        assert hello["metadata"]["state_dim"] == S and hello["server"]["protocol"] == 1
        raw.send("{\"image\": 1}")
        assert "binary msgpack" in wire.decode(raw.recv(10))["error"]


def test_inference_failure_is_answered_and_server_stays_up(running, policy):
    rng = np.random.default_rng(1)
    with PolicyClient("127.0.0.1", running.port) as cl:
        with pytest.raises(PolicyServerError, match="inference failed: RuntimeError: the model broke"):
            cl.infer(make_obs(rng, instruction="fail"))
        obs = make_obs(rng)
        np.testing.assert_allclose(cl.infer(obs)["actions"], expected_actions(obs), rtol=1e-12, atol=1e-9)
        health = cl.health()
    assert health["inference_errors"] == 1 and health["replies"] == 1


def test_overload_and_vanishing_clients_leave_the_server_serving(policy):
    srv = RunningServer(policy, max_batch=1, batch_wait_ms=0)
    srv.server.max_queue = 2
    rng = np.random.default_rng(4)
    try:
        with connect(f"ws://127.0.0.1:{srv.port}", proxy=None) as raw:
            wire.decode(raw.recv(10))
            raw.send(wire.encode(make_obs(rng, instruction="slow", request_id="busy")))
            assert policy.started.wait(10)  # the worker is busy for 1 s: the next ones wait in the queue
            for i in range(3):  # pipelined without waiting for replies
                raw.send(wire.encode(make_obs(rng, request_id=i)))
            replies = {r["request_id"]: r for r in (wire.decode(raw.recv(10)) for _ in range(4))}
        assert "server overloaded: 2 requests already waiting" in replies[2]["error"]
        assert "error" not in replies["busy"] and "error" not in replies[0] and "error" not in replies[1]
        with connect(f"ws://127.0.0.1:{srv.port}", proxy=None) as raw:  # a client leaving before its reply
            wire.decode(raw.recv(10))
            raw.send(wire.encode(make_obs(rng, request_id="gone")))
        with PolicyClient("127.0.0.1", srv.port) as cl:
            obs = make_obs(rng)
            np.testing.assert_allclose(cl.infer(obs)["actions"], expected_actions(obs), rtol=1e-12, atol=1e-9)
            health = cl.health()
        assert health["connections_open"] == 1 and health["invalid_requests"] == 1
    finally:
        srv.stop()


def test_stop_answers_the_request_in_flight_then_closes(running, policy):
    rng = np.random.default_rng(2)
    obs = make_obs(rng, instruction="slow")
    replies = []
    with PolicyClient("127.0.0.1", running.port) as cl:
        t = threading.Thread(target=lambda: replies.append(cl.infer(obs)))
        t.start()
        assert policy.started.wait(10)
        running.stop()  # returns once the server has answered, closed connections and exited
        t.join(10)
    np.testing.assert_allclose(replies[0]["actions"], expected_actions(obs), rtol=1e-12, atol=1e-9)
    with pytest.raises(OSError):
        PolicyClient("127.0.0.1", running.port, timeout=2)


def test_shutdown_gives_up_after_the_drain_timeout_with_an_error_reply():
    import asyncio

    from vitra_jax.deploy.serve import PolicyServer

    policy = ArithmeticPolicy(delay_s=1.0)  # a 'slow' batch takes 2 s
    server, ready = PolicyServer(policy, max_batch=1, batch_wait_ms=0), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(server.run("127.0.0.1", 0, lambda _: ready.set(),
                                                                    drain_timeout_s=0.2)))
    thread.start()
    assert ready.wait(10)
    rng = np.random.default_rng(6)
    with connect(f"ws://127.0.0.1:{server.port}", proxy=None) as raw:
        wire.decode(raw.recv(10))
        raw.send(wire.encode(make_obs(rng, instruction="slow", request_id="running")))
        assert policy.started.wait(10)
        raw.send(wire.encode(make_obs(rng, request_id="queued")))
        time.sleep(0.1)
        t0 = time.perf_counter()
        server.stop()
        replies = {r["request_id"]: r for r in (wire.decode(raw.recv(10)) for _ in range(2))}
    thread.join(10)
    assert not thread.is_alive() and time.perf_counter() - t0 < 1.5  # did not wait for the 2 s batch
    for rid in ("running", "queued"):
        assert replies[rid] == {"error": "server shut down before answering", "request_id": rid}


def test_sigterm_shuts_the_server_down_cleanly():
    code = ("import sys; sys.path.insert(0, 'tests/deploy'); from test_serve import ArithmeticPolicy;"
            "from vitra_jax.deploy.serve import serve;"
            "serve(ArithmeticPolicy(), '127.0.0.1', 0, on_ready=lambda s: print(s.port, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        with PolicyClient("127.0.0.1", port) as cl:
            obs = make_obs(np.random.default_rng(3))
            np.testing.assert_allclose(cl.infer(obs)["actions"], expected_actions(obs), rtol=1e-12, atol=1e-9)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def tiny_deployed_policy(tmp_path):
    """A tiny random DeployedPolicy (fp32, CPU) with a fresh sentencepiece and non-trivial statistics."""
    import torch
    from transformers import Gemma2Config, PaliGemmaConfig, SiglipVisionConfig

    from vitra_jax.deploy.policy import DeployConfig, TorchVitraPolicy
    from vitra_jax.deploy.runner import DeployedPolicy
    from vitra_jax.handspace.normalize import GaussianNormalizer
    from vitra_jax.tokenizer import Tokenizer, train_sentencepiece

    vocab = 384
    vlm = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=32, patch_size=8, vision_use_head=False),
        text_config=Gemma2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64),
        image_token_index=vocab - 1, vocab_size=vocab, projection_dim=64, hidden_size=64).to_dict()
    config = DeployConfig(vlm=vlm, qk_norm="rms", max_text_len=24, image_size=32, dit_depth=2, dit_width=32,
                          dit_heads=4, freq_dim=32, state_hidden=64)
    torch.manual_seed(0)
    model = TorchVitraPolicy(config)
    with torch.no_grad():  # AdaLN and output layers start at zero: draw every weight
        for p in model.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    texts = [f"Left hand: None. Right hand: pick up the {c} cup." for c in ("red", "blue", "green", "big")]
    tok = Tokenizer(train_sentencepiece(texts * 10, tmp_path, vocab_size=300))
    rng = np.random.default_rng(0)
    norm = GaussianNormalizer(rng.normal(size=A), rng.uniform(0.5, 2, A), rng.normal(size=S), rng.uniform(0.5, 2, S))
    return DeployedPolicy(model, tok, norm, config, device="cpu", dtype="float32")


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP spin-waits on a busy CPU cost a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_served_replies_equal_direct_predict_action(tmp_path, one_torch_thread):
    policy = tiny_deployed_policy(tmp_path)
    srv = RunningServer(policy, max_batch=4, batch_wait_ms=200)
    barrier = threading.Barrier(3)
    requests = [make_obs(np.random.default_rng(10 + i), seed=i, num_ddim_steps=2 + i % 2, num_samples=1 + i % 2,
                         cfg_scale=[5.0, 1.0, 3.0][i]) for i in range(3)]
    replies = [None] * 3

    def send(i):
        with PolicyClient("127.0.0.1", srv.port, timeout=60) as cl:
            barrier.wait(10)
            replies[i] = cl.infer(requests[i])

    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        srv.stop()
    assert max(r["timing"]["batch_size"] for r in replies) > 1  # batched replies are checked below
    for obs, reply in zip(requests, replies):
        direct = policy.predict_action(obs["image"], obs["instruction"], obs["state"], obs["state_mask"],
                                       obs["action_mask"], obs["fov"], num_samples=obs["num_samples"],
                                       cfg_scale=obs["cfg_scale"], num_ddim_steps=obs["num_ddim_steps"],
                                       seed=obs["seed"])
        assert direct["actions"].shape == (obs["num_samples"], N, A)
        assert np.abs(direct["normalized"]).max() > 0.1  # the tiny model computes something non-trivial
        for key in ("normalized", "actions", "trajectory"):
            np.testing.assert_allclose(reply[key], direct[key], rtol=1e-4, atol=1e-4, err_msg=key)


def tiny_bundle(root: pathlib.Path) -> pathlib.Path:
    """A bundle of the tiny policy with random weights, written by the exporter's own file writers."""
    import jax

    from tests.factories import random_policy_params, random_statistics
    from vitra_jax import export, runs
    from vitra_jax.models.policy import VitraPolicy, policy_config
    from vitra_jax.tokenizer import train_sentencepiece

    cfg = policy_config("tiny")
    shapes = jax.eval_shape(VitraPolicy(cfg).init, jax.random.key(0))
    rng = np.random.default_rng(0)
    params = random_policy_params(shapes, rng)
    stats = random_statistics(rng)
    tok = train_sentencepiece(["Left hand: None. Right hand: pick up the cup."] * 20, root / "tok", 300)
    run = runs.RunCheckpoint(root, 0, cfg, params, stats, tok)
    out = root / "bundle"
    out.mkdir()
    export.write_bundle_files(run, out)
    export.write_manifest(out, run, parity=None)
    return out


def test_cli_refuses_bad_flags_before_loading_anything(tmp_path):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    for flags, words in ((["--max-batch", "0"], "--max-batch must be >= 1"),
                         (["--cuda-graphs"], "--cuda-graphs needs --device cuda"),
                         (["--port", port], f"cannot listen on 127.0.0.1:{port}: Address already in use"),
                         (["--port", "0"], f"{tmp_path} is not a policy bundle")):
        out = subprocess.run([sys.executable, "-m", "vitra_jax.deploy.serve", "--bundle", str(tmp_path), *flags],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and words in out.stderr, out.stderr


def test_cli_serves_a_bundle_and_stops_on_sigint(tmp_path, one_torch_thread):
    from vitra_jax.deploy.bundle import load_bundle

    bundle = tiny_bundle(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "vitra_jax.deploy.serve", "--bundle", str(bundle), "--port", "0",
                             "--max-batch", "2", "--threads", "1"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # the log names the port the OS picked
            lines.append(line)
            if m := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line):
                break
        assert m, "".join(lines)
        assert any(re.search(r"warmed up batch sizes 1\.\.2 in [\d.]+ s", line) for line in lines), "".join(lines)
        obs = make_obs(np.random.default_rng(7), seed=11, num_ddim_steps=5)
        with PolicyClient("127.0.0.1", int(m.group(1)), timeout=60) as cl:
            assert cl.server_info["bundle"] == str(bundle) and cl.server_info["max_batch"] == 2
            assert cl.server_info["threads"] == 1
            assert cl.metadata["dtype"] == "float32" and cl.metadata["chunk_len"] == N
            reply = cl.infer(obs)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "policy server stopped" in err
    direct = load_bundle(bundle).predict_action(
        obs["image"], obs["instruction"], obs["state"], obs["state_mask"], obs["action_mask"], obs["fov"],
        num_ddim_steps=5, seed=11)
    assert np.abs(direct["normalized"]).max() > 0.1
    for key in ("normalized", "actions", "trajectory"):
        np.testing.assert_allclose(reply[key], direct[key], rtol=1e-5, atol=1e-5, err_msg=key)
