"""Latency of one `predict_action` call: the JAX policy next to the torch deploy policy with the same weights.

    python -m vitra_jax.benchmarks.deploy [--repeats=20] [--warmup=2] [--steps=10] [--cfg_scale=5.0]
        [--torch_threads=1]
    python -m vitra_jax.benchmarks.deploy --full [--repeats=20] [--modes=eager,cuda_graphs,compile,compile_cuda_graphs]
    python -m vitra_jax.benchmarks.deploy --count_ops [--variant=3b]  # no GPU needed
    python -m vitra_jax.benchmarks.deploy --host                     # host-side work of one call

Default (CPU, fp32): the `tiny` policy with random weights shared by the JAX policy and `TorchVitraPolicy`
(through the official state-dict layout) wrapped in `DeployedPolicy`; one observation (224 x 298 image,
both hands); the same initial noise on both sides (the max |diff| of the normalized chunks is printed as a
check); and the torch policy once more behind the websocket server (`vitra_jax.deploy.serve`, one client).
`--full`: the 3B policy (PaliGemma-2 3B-224 + DiT-B, the release's q/k norm) with random weights in bf16,
nothing downloaded, 10 DDIM steps and CFG 5 by default, in the `--modes` given (eager, CUDA graphs,
torch.compile and both); prints median / p95 latency and peak GPU memory (`torch.cuda.max_memory_allocated`),
each row as soon as it is measured. `--count_ops`: the torch ops one
`predict_action` dispatches (VLM prefix, denoising loop), counted with the model on the meta device (no
memory, no GPU); eager GPU inference launches each non-view op from Python, which is what CUDA graphs remove.
`--host`: the CPU work around the model, whatever the device: resizing a 480 x 640 camera frame (both
preprocess modes; one frame, and 4 frames in a row next to 4 in the image threads `DeployedPolicy` uses) and
turning one sampled chunk into actions and a trajectory (`action_outputs`). Prints one table.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from absl import app, flags
import numpy as np

_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per row.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first (compilation, caches).")
_STEPS = flags.DEFINE_integer("steps", 10, "DDIM steps.")
_CFG = flags.DEFINE_float("cfg_scale", 5.0, "Classifier-free guidance scale.")
_FULL = flags.DEFINE_bool("full", False, "Full-size 3B policy in bf16 on a CUDA GPU instead of the tiny one.")
_FULL_DEVICE = flags.DEFINE_string("full_device", "cuda", "Device of --full; 'cpu' skips the CUDA-graph modes (a "
                                   "check that the 3B path works, slow: tens of seconds per call).")
_MODES = flags.DEFINE_list("modes", ["eager", "cuda_graphs", "compile", "compile_cuda_graphs"],
                           "--full: the modes to time, in this order (compiling changes the model in "
                           "place, so compiled modes come after the others).")
_COUNT = flags.DEFINE_bool("count_ops", False, "Count the ops of one predict_action on the meta device instead.")
_HOST = flags.DEFINE_bool("host", False, "Time the host-side work of one call instead.")
_VARIANT = flags.DEFINE_enum("variant", "3b", ["tiny", "3b"], "Policy size for --full and --count_ops.")
_THREADS = flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads for the tiny CPU rows (0: torch's "
                                "default). Ops this small gain nothing from threads, and OpenMP spin-waiting on "
                                "a loaded machine can make them 50x slower.")

INSTRUCTION = "Left hand: None. Right hand: Pick up the red cup and put it on the plate."


def latency_ms(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, float]:
    """(median, p95) milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def observation(chunk_len: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (224, 298, 3), dtype=np.uint8), "instruction": INSTRUCTION,
            "state": rng.normal(size=102), "state_mask": np.ones(102), "action_mask": np.ones((chunk_len, 102)),
            "fov": np.deg2rad([60.0, 50.0])}


def _tokenizer(tmp: str):
    from vitra_jax.tokenizer import Tokenizer, train_sentencepiece

    return Tokenizer(train_sentencepiece([INSTRUCTION] * 20, tmp, vocab_size=300))


def served_latency_ms(policy, obs: dict, steps: int, cfg_scale: float, warmup: int,
                      repeats: int) -> tuple[float, float]:
    """(median, p95) ms of one `PolicyClient.infer` round trip to an in-process server of `policy`: the same
    inference plus msgpack and websocket costs."""
    from vitra_jax.deploy.client import PolicyClient
    from vitra_jax.deploy.serve import serve

    started, holder = threading.Event(), {}
    thread = threading.Thread(target=serve, args=(policy, "127.0.0.1", 0), daemon=True,
                              kwargs={"max_batch": 1, "batch_wait_ms": 0,
                                      "on_ready": lambda srv: (holder.update(server=srv), started.set())})
    thread.start()
    if not started.wait(60):
        raise RuntimeError("the policy server did not start within 60 s")
    try:
        with PolicyClient("127.0.0.1", holder["server"].port) as client:
            request = {**obs, "num_ddim_steps": steps, "cfg_scale": cfg_scale, "seed": 0}
            return latency_ms(lambda: client.infer(request), warmup, repeats)
    finally:
        holder["server"].stop()
        thread.join(60)


def tiny_rows(repeats: int, warmup: int, steps: int, cfg_scale: float, threads: int = 1) -> tuple[list[tuple], str]:
    """Rows (name, median ms, p95 ms) for JAX and torch on CPU, and a header line."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    from vitra_jax import inference
    from vitra_jax.deploy.policy import TorchVitraPolicy
    from vitra_jax.deploy.runner import DeployedPolicy
    from vitra_jax.export import deploy_config_from_policy_config
    from vitra_jax.handspace.normalize import GaussianNormalizer
    from vitra_jax.models.policy import VitraPolicy, policy_config
    from vitra_jax.weights import hf, official

    if threads:
        torch.set_num_threads(threads)
    cfg = policy_config("tiny")
    jax_policy = VitraPolicy(cfg)
    torch.manual_seed(0)
    model = TorchVitraPolicy(deploy_config_from_policy_config(cfg, hf.hf_config_dict(cfg.vlm)))
    with torch.no_grad():  # the DiT's AdaLN and output layers start at zero: draw everything past the VLM
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.copy_(0.08 * torch.randn_like(p))
    # one set of weights for both: torch -> JAX tree (drops the 192/212 padding) -> torch (zeros there)
    params = official.official_to_params({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
    model.load_official_state_dict(official.params_to_official(params, cfg))
    with tempfile.TemporaryDirectory() as tmp:
        tok = _tokenizer(tmp)
    norm = GaussianNormalizer.identity()
    torch_policy = DeployedPolicy(model, tok, norm, model.config, device="cpu", dtype="float32")

    obs = observation(cfg.dit.chunk_len)
    args = (obs["image"], obs["instruction"], obs["state"], obs["state_mask"], obs["action_mask"], obs["fov"])
    noise = np.random.default_rng(1).normal(size=(1, cfg.dit.chunk_len, cfg.dit.action_dim)).astype(np.float32)
    kw = dict(num_samples=1, cfg_scale=cfg_scale, num_ddim_steps=steps, noise=noise)
    run_jax = lambda: inference.predict_action(jax_policy, params, *args, tok, norm, **kw)
    run_torch = lambda: torch_policy.predict_action(*args, **kw)
    diff = float(np.abs(run_jax()["normalized"] - run_torch()["normalized"]).max())
    rows = [("jax predict_action", *latency_ms(run_jax, warmup, repeats)),
            ("torch predict_action", *latency_ms(run_torch, warmup, repeats)),
            ("torch served (1 client)", *served_latency_ms(torch_policy, obs, steps, cfg_scale, warmup, repeats))]
    n_params = sum(p.numel() for p in model.parameters())
    header = (f"device=cpu variant=tiny dtype=float32 params={n_params / 1e6:.2f}M ddim_steps={steps} "
              f"cfg_scale={cfg_scale} torch_threads={torch.get_num_threads()} "
              f"max|normalized jax - torch|={diff:.2e}")
    return rows, header


# mode -> (torch.compile, CUDA graphs), in the order they run: compiling changes the model in place
FULL_MODES = {"eager": (False, False), "cuda_graphs": (False, True), "compile": (True, False),
              "compile_cuda_graphs": (True, True)}


def check_modes(modes: Iterable[str]) -> set[str]:
    """`modes` as a set; ValueError when empty or naming a mode not in FULL_MODES."""
    modes, known = set(modes), list(FULL_MODES)
    if not modes:
        raise ValueError(f"none given; use some of {known}")
    if modes - set(known):
        raise ValueError(f"unknown {sorted(modes - set(known))}; use some of {known}")
    return modes


def full_rows(repeats: int, warmup: int, steps: int, cfg_scale: float, device: str = "cuda",
              modes: Iterable[str] = tuple(FULL_MODES), variant: str = "3b") -> Iterator[str | tuple]:
    """The header line, then one row (name, median ms, p95 ms, peak GiB) per mode as it is measured, of the
    `variant` torch policy in bf16 on `device` (`modes`, run in FULL_MODES order; on a CPU without the CUDA-graph
    ones, inductor compiling C++ kernels, and peak memory not measured)."""
    modes = check_modes(modes)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # only config dataclasses come from the JAX side
    import torch

    from vitra_jax.deploy.policy import TorchVitraPolicy, build_backbone
    from vitra_jax.deploy.runner import DeployedPolicy
    from vitra_jax.export import deploy_config_from_policy_config
    from vitra_jax.handspace.normalize import GaussianNormalizer
    from vitra_jax.models.policy import policy_config
    from vitra_jax.weights import hf

    cfg = policy_config(variant)
    cfg = dataclasses.replace(cfg, dit=dataclasses.replace(cfg.dit, qk_norm="timm_0_9_10"))
    config = deploy_config_from_policy_config(cfg, hf.hf_config_dict(cfg.vlm))
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # the VLM drawn straight in bf16 on the GPU: no 12 GB fp32 copy
    try:
        with torch.device(device):
            backbone = build_backbone(config).to(torch.bfloat16)
    finally:
        torch.set_default_dtype(default)
    with torch.device(device):
        model = TorchVitraPolicy(config, backbone=backbone)  # DiT, FoV encoder, cognition token in fp32
    with tempfile.TemporaryDirectory() as tmp:
        tok = _tokenizer(tmp)
    norm = GaussianNormalizer.identity()
    obs = observation(config.chunk_len)
    args = (obs["image"], obs["instruction"], obs["state"], obs["state_mask"], obs["action_mask"], obs["fov"])
    kw = dict(num_samples=1, cfg_scale=cfg_scale, num_ddim_steps=steps, seed=0)
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n_params = sum(p.numel() for p in model.parameters())
    size = f"{n_params / 1e9:.2f}B" if n_params >= 1e8 else f"{n_params / 1e6:.2f}M"
    yield (f"device={torch.cuda.get_device_name() if cuda else device} variant={variant} dtype=bfloat16 "
           f"params={size} ddim_steps={steps} cfg_scale={cfg_scale} random weights")
    for name, (compile_, graphs) in FULL_MODES.items():
        if name not in modes or (not cuda and graphs):
            continue
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            policy = DeployedPolicy(model, tok, norm, config, device=device, dtype="bfloat16", compile=compile_,
                                    cuda_graphs=graphs)
            run = lambda p=policy: (p.predict_action(*args, **kw), sync())
            med, p95 = latency_ms(run, max(warmup, 3 if compile_ or graphs else 1), repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            yield name, med, p95, peak
        except Exception as e:  # one failing mode still leaves the others' figures
            yield name, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"


def op_count_rows(variant: str, steps: int, cfg_scale: float) -> tuple[list[tuple], str]:
    """Rows (stage, dispatched ops, non-view ops) of one observation through the `variant` policy, built and
    run on the meta device: the release's q/k norm, `steps` DDIM steps at `cfg_scale`."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import collections

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from vitra_jax.deploy.policy import TorchVitraPolicy
    from vitra_jax.export import deploy_config_from_policy_config
    from vitra_jax.models.policy import policy_config
    from vitra_jax.weights import hf

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count["view" if func.is_view else "other"] += 1
            return func(*args, **(kwargs or {}))

    cfg = policy_config(variant)
    cfg = dataclasses.replace(cfg, dit=dataclasses.replace(cfg.dit, qk_norm="timm_0_9_10"))
    config = deploy_config_from_policy_config(cfg, hf.hf_config_dict(cfg.vlm))
    with torch.device("meta"):
        model = TorchVitraPolicy(config)
        n_params = sum(p.numel() for p in model.parameters())
        size, text = config.image_size, config.max_text_len
        rows = []
        with Ops() as ops:
            z = model.cognition(torch.zeros(1, size, size, 3), torch.zeros(1, text, dtype=torch.long),
                                torch.ones(1, text, dtype=torch.bool), torch.zeros(1, 2))
        rows.append(("VLM prefix", ops.count.total(), ops.count["other"]))
        with Ops() as ops:
            model.denoise(z, torch.zeros(1, 102), torch.ones(1, 102), torch.ones(1, config.chunk_len, 102),
                          noise=torch.zeros(1, 1, config.chunk_len, 102), cfg_scale=cfg_scale, num_ddim_steps=steps)
        rows.append((f"denoise ({steps} DDIM)", ops.count.total(), ops.count["other"]))
    rows.append(("total", rows[0][1] + rows[1][1], rows[0][2] + rows[1][2]))
    header = (f"ops of one predict_action on the meta device: variant={variant} params={n_params / 1e9:.2f}B "
              f"ddim_steps={steps} cfg_scale={cfg_scale} text_len={text}")
    return rows, header


def host_rows(repeats: int, warmup: int) -> tuple[list[tuple], str]:
    """Rows (name, median ms, p95 ms) of the host-side steps of `DeployedPolicy.predict_batch`."""
    from concurrent.futures import ThreadPoolExecutor

    from vitra_jax.data.observation import action_outputs
    from vitra_jax.deploy.preprocess import prepare_image, prepare_images
    from vitra_jax.deploy.runner import IMAGE_THREADS
    from vitra_jax.handspace.normalize import GaussianNormalizer

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    rows = []
    with ThreadPoolExecutor(IMAGE_THREADS) as pool:
        for mode in ("squash", "official"):
            rows += [(f"image {mode}, 1 frame", *latency_ms(lambda m=mode: prepare_image(frames[0], 224, m),
                                                             warmup, repeats)),
                     (f"image {mode}, 4 in a row", *latency_ms(lambda m=mode: prepare_images(frames, 224, m),
                                                               warmup, repeats)),
                     (f"image {mode}, 4 in threads", *latency_ms(
                         lambda m=mode: prepare_images(frames, 224, m, pool), warmup, repeats))]
    chunk, norm = rng.normal(size=(1, 16, 102)), GaussianNormalizer.identity()
    mask, state = np.ones((16, 102)), np.zeros(102)
    rows.append(("actions + trajectory", *latency_ms(lambda: action_outputs(norm, chunk, mask, state), warmup,
                                                      repeats)))
    return rows, f"host-side work of one predict_batch: 480 x 640 frames -> 224, {IMAGE_THREADS} image threads"


def main(_):
    if _HOST.value:
        rows, header = host_rows(_REPEATS.value, _WARMUP.value)
        print(header)
        print(f"{'':<28}{'median ms':>12}{'p95 ms':>12}")
        for name, med, p95 in rows:
            print(f"{name:<28}{med:>12.2f}{p95:>12.2f}")
        return
    if _COUNT.value:
        rows, header = op_count_rows(_VARIANT.value, _STEPS.value, _CFG.value)
        print(header)
        print(f"{'':<24}{'dispatched':>12}{'non-view':>12}")
        for name, total, other in rows:
            print(f"{name:<24}{total:>12}{other:>12}")
        return
    if _FULL.value:
        import torch

        try:
            check_modes(_MODES.value)
        except ValueError as e:
            raise app.UsageError(f"--modes: {e}") from None
        if _FULL_DEVICE.value.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("--full needs a CUDA GPU (it runs the 3B policy in bf16); this machine has none. "
                             "Run without --full for the tiny CPU comparison.")
        rows = full_rows(_REPEATS.value, _WARMUP.value, _STEPS.value, _CFG.value, _FULL_DEVICE.value,
                         _MODES.value, _VARIANT.value)
        header = next(rows)
    else:
        rows, header = tiny_rows(_REPEATS.value, _WARMUP.value, _STEPS.value, _CFG.value, _THREADS.value)
    print(header)
    cols = ["median ms", "p95 ms"] + (["peak GiB"] if _FULL.value else [])
    print(f"{'':<24}" + "".join(f"{c:>12}" for c in cols), flush=True)
    for name, *figures in rows:  # --full: each row as soon as it is measured (a killed run keeps them)
        print(f"{name:<24}" + "".join(f"{x:>12.2f}" if isinstance(x, float) else f"  {x}" for x in figures),
              flush=True)


if __name__ == "__main__":
    app.run(main)
