"""PaliGemma-2 forward: JAX vs HF torch latency on a small config, and full-size compile time.

    python -m vitra_jax.benchmarks.paligemma [--threads=1] [--rounds=7] [--repeats=10] [--skip_full]

Small config: SigLIP 128 wide x 4 layers on 64 px images (64 image tokens), Gemma-2 256 wide x 4 layers,
vocab 1024, batch 2 x 32 text tokens, fp32, identical weights in both frameworks (logit max |diff| is
printed as a check). Full size: `3b-224` forward lowered and compiled from ShapeDtypeStructs (no weights
allocated), scan over layers, batch 1 x 64 text tokens, fp32 and bf16 compute.

Both frameworks get the same number of CPU threads (`--threads`; XLA through its intra-op flags, set
before JAX starts) and are timed in alternating rounds, so a change in machine load hits both alike. The
torch/JAX ratio is printed per round (min, median, max): on a shared machine single figures are noise.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

from absl import app, flags

_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed forward passes per framework (after one warm-up).")
_SKIP_FULL = flags.DEFINE_bool("skip_full", False, "Skip compiling the full-size 3b-224 forward.")
_THREADS = flags.DEFINE_integer("threads", 1, "CPU threads for each framework (0: each framework's default).")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Alternating timing rounds; each times `repeats` calls per framework.")


def small_config():
    from vitra_jax.models.gemma2 import Gemma2Config
    from vitra_jax.models.paligemma import PaliGemmaConfig
    from vitra_jax.models.siglip import SiglipConfig

    return PaliGemmaConfig(
        vision=SiglipConfig(width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=8, image_size=64),
        llm=Gemma2Config(width=256, depth=4, mlp_dim=1024, num_heads=4, num_kv_heads=2, head_dim=64,
                         vocab_size=1024, query_pre_attn_scalar=64, sliding_window=64))


def time_calls(fn, repeats: int) -> tuple[float, float]:
    """(median, min) seconds of `repeats` calls of `fn()`; the min is the least disturbed by other load."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def set_threads(threads: int) -> None:
    """Give XLA and torch the same thread budget; must run before JAX initialises its CPU backend."""
    if threads <= 0:
        return
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=" + ("true" if threads > 1 else "false"),
        f"intra_op_parallelism_threads={threads}"]))
    import torch

    torch.set_num_threads(threads)


def small_forward(repeats: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from transformers import PaliGemmaConfig as HFConfig, PaliGemmaForConditionalGeneration

    from vitra_jax.models.paligemma import PaliGemma
    from vitra_jax.weights import hf

    cfg = small_config()
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(HFConfig.from_dict(hf.hf_config_dict(cfg))).eval()
    tok_id = model.config.image_token_index
    params = hf.params_from_hf_tensors(cfg, {k: v.numpy() for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    b, n_txt, n_img = 2, 32, cfg.num_image_tokens
    images = rng.uniform(-1, 1, (b, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    tokens = rng.integers(1, cfg.llm.vocab_size, (b, n_txt)).astype(np.int32)
    mask = np.ones((b, n_txt), bool)

    fwd = jax.jit(lambda p, i, t, m: PaliGemma(cfg).apply({"params": p}, i, t, m).logits)
    p_dev = jax.device_put(params)
    args = [jnp.asarray(a) for a in (images, tokens, mask)]
    ours = lambda: fwd(p_dev, *args).block_until_ready()
    ids = torch.tensor(np.concatenate([np.full((b, n_img), tok_id), tokens], 1), dtype=torch.long)
    inputs = dict(input_ids=ids, pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
                  attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))

    def theirs():
        with torch.no_grad():
            return model(**inputs).logits

    diff = float(np.abs(np.asarray(ours()) - theirs().numpy()[..., : cfg.llm.vocab_size]).max())
    ours(), theirs()  # warm-up
    jax_s, torch_s = [], []
    for r in range(rounds):  # alternate which framework goes first
        pair = [(ours, jax_s), (theirs, torch_s)]
        for fn, out in pair if r % 2 == 0 else pair[::-1]:
            out.append(time_calls(fn, repeats))
    ratios = sorted(t[0] / j[0] for t, j in zip(torch_s, jax_s))
    return {"jax_s": statistics.median(m for m, _ in jax_s), "torch_s": statistics.median(m for m, _ in torch_s),
            "jax_min_s": min(b for _, b in jax_s), "torch_min_s": min(b for _, b in torch_s), "ratios": ratios,
            "max_abs_diff": diff, "threads": torch.get_num_threads()}


def full_compile(dtype: str) -> float:
    """Seconds to lower + compile the 3b-224 forward from abstract inputs."""
    import jax
    import jax.numpy as jnp

    from vitra_jax.models.paligemma import PaliGemma, paligemma_config

    cfg = dataclasses.replace(paligemma_config("3b-224"), dtype=dtype)
    s = cfg.image_size
    inputs = (jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32), jax.ShapeDtypeStruct((1, 64), jnp.int32),
              jax.ShapeDtypeStruct((1, 64), jnp.bool_))
    params = jax.eval_shape(lambda: PaliGemma(cfg).init(jax.random.key(0), *[jnp.zeros(x.shape, x.dtype)
                                                                             for x in inputs])["params"])
    fwd = jax.jit(lambda p, i, t, m: PaliGemma(cfg).apply({"params": p}, i, t, m).logits)
    t0 = time.perf_counter()
    fwd.lower(params, *inputs).compile()
    return time.perf_counter() - t0


def main(_) -> None:
    set_threads(_THREADS.value)
    small = small_forward(_REPEATS.value, _ROUNDS.value)
    r = small["ratios"]
    rows = [("small fwd, JAX jit (ms, median of rounds)", f"{small['jax_s'] * 1e3:.2f}"),
            (f"small fwd, HF torch eager, {small['threads']} threads (ms)", f"{small['torch_s'] * 1e3:.2f}"),
            ("small fwd, fastest call JAX / torch (ms)",
             f"{small['jax_min_s'] * 1e3:.2f} / {small['torch_min_s'] * 1e3:.2f}"),
            ("torch / JAX ratio of fastest calls", f"{small['torch_min_s'] / small['jax_min_s']:.2f}"),
            (f"torch / JAX ratio per round (min / median / max of {len(r)})",
             f"{r[0]:.2f} / {statistics.median(r):.2f} / {r[-1]:.2f}"),
            ("small logits max |JAX - torch|", f"{small['max_abs_diff']:.2e}")]
    if not _SKIP_FULL.value:
        for dtype in ("float32", "bfloat16"):
            rows.append((f"3b-224 fwd lower+compile, {dtype} (s)", f"{full_compile(dtype):.1f}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    app.run(main)
