"""VITRA policy: PaliGemma-2 prefix with FoV and cognition tokens feeding a causal DiT diffusion head.

`VitraPolicy(config)` holds pure functions over a param tree
`{'vlm': PaliGemma tree, 'fov_encoder': ..., 'cognition_token': (W,), 'action_model': DiT tree}`:
`init`, `cognition` (one VLM pass), `loss` (R noise draws per VLM pass, §2.5), `denoise` (DDIM/DDPM with
classifier-free guidance inside one `lax.fori_loop`) and `sample` (both). Batches are dicts of arrays;
`fake_batch` makes one of the right shapes. Host-side inference on raw observations is `vitra_jax.inference`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.handspace import layout
from vitra_jax.models import diffusion
from vitra_jax.models.dit import DiT, DiTConfig
from vitra_jax.models.paligemma import PaliGemma, PaliGemmaConfig, paligemma_config

COGNITION_TOKEN_ID = 10  # an unused Gemma id; the release initialises the cognition token from its row


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    vlm: PaliGemmaConfig = PaliGemmaConfig()
    dit: DiTConfig = DiTConfig()
    max_text_len: int = 64
    num_train_steps: int = 100
    repeats: int = 8  # noise draws per VLM pass: 8 pretraining, 2 robot fine-tuning
    cond_dropout: float = 0.1
    wrist_weight: float = layout.HUMAN_LOSS_WEIGHTS["wrist"]
    finger_weight: float = layout.HUMAN_LOSS_WEIGHTS["fingers"]
    freeze_vision: bool = True

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"wrist": self.wrist_weight, "fingers": self.finger_weight}


def policy_config(name: str, **overrides: Any) -> PolicyConfig:
    """'tiny' (tests: tiny PaliGemma + 2-layer width-64 DiT), 'demo' (the README demo: the same with a width-256
    DiT, wide enough to learn the 90 finger angles) or '3b' (PaliGemma-2 3B-224 + DiT-B)."""
    if name in ("tiny", "demo"):
        vlm = paligemma_config("tiny")
        width = 64 if name == "tiny" else 256
        dit = DiTConfig(depth=2, width=width, num_heads=4, token_size=vlm.llm.width, state_hidden=2 * width,
                        freq_dim=32)
        cfg = PolicyConfig(vlm=vlm, dit=dit, max_text_len=48, repeats=2)
    elif name == "3b":
        vlm = paligemma_config("3b-224")
        cfg = PolicyConfig(vlm=vlm, dit=DiTConfig(token_size=vlm.llm.width))
    else:
        raise ValueError(f"unknown policy config {name!r}; choose 'tiny', 'demo' or '3b'")
    return dataclasses.replace(cfg, **overrides)


class FovEncoder(nn.Module):
    """(fov_x, fov_y) in radians -> one VLM-width token: Linear, GELU, Linear; weights N(0, 0.02)."""

    width: int

    @nn.compact
    def __call__(self, fov: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        h = nn.Dense(self.width, kernel_init=init, bias_init=init, name="fc1")(fov.astype(jnp.float32))
        return nn.Dense(self.width, kernel_init=init, bias_init=init, name="fc2")(nn.gelu(h, approximate=False))


class VitraModel(nn.Module):
    """The param-holding module; `VitraPolicy` calls its parts through `apply(..., method=...)`."""

    cfg: PolicyConfig

    def setup(self):
        self.vlm = PaliGemma(self.cfg.vlm)
        self.fov_encoder = FovEncoder(self.cfg.vlm.llm.width)
        self.cognition_token = self.param("cognition_token", nn.initializers.normal(0.02),
                                          (self.cfg.vlm.llm.width,))
        self.action_model = DiT(self.cfg.dit)

    def cognition(self, images, tokens, input_mask, fov) -> jax.Array:
        """Final hidden state (B, W) at the cognition token, the last position of the prefix
        [image, text, FoV, cognition] under full bidirectional attention."""
        b = tokens.shape[0]
        cog = jnp.broadcast_to(self.cognition_token, (b, 1, self.cognition_token.shape[0]))
        extra = jnp.concatenate([self.fov_encoder(fov)[:, None], cog.astype(jnp.float32)], axis=1)
        out = self.vlm(images, tokens, input_mask, mask_ar=None, extra_embeds=extra, return_logits=False)
        return out.hidden[:, -1].astype(jnp.float32)

    def __call__(self, images, tokens, input_mask, fov, t, x, action_mask, state, state_mask):
        z = self.cognition(images, tokens, input_mask, fov)
        return self.action_model(z, t, x, action_mask, state, state_mask)


def fake_batch(cfg: PolicyConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs with the shapes and dtypes `loss` and `sample` expect (all-valid masks, 2 padded tokens)."""
    rng = np.random.default_rng(seed)
    n, a, s, length = cfg.dit.chunk_len, cfg.dit.action_dim, cfg.dit.state_dim, cfg.max_text_len
    mask = np.ones((batch_size, length), bool)
    mask[:, length - 2:] = False
    size = cfg.vlm.image_size
    return {
        "images": rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32),
        "tokens": rng.integers(1, cfg.vlm.llm.vocab_size, (batch_size, length)).astype(np.int32) * mask,
        "input_mask": mask,
        "fov": np.full((batch_size, 2), np.deg2rad(60.0), np.float32),
        "state": rng.normal(size=(batch_size, s)).astype(np.float32),
        "state_mask": np.ones((batch_size, s), np.float32),
        "actions": rng.normal(size=(batch_size, n, a)).astype(np.float32),
        "action_mask": np.ones((batch_size, n, a), np.float32),
    }


def init_cognition_from_embedding(params: dict) -> dict:
    """Copy of `params` whose cognition token is embedding row 10, as the release initialises it."""
    row = params["vlm"]["llm"]["embedder"]["input_embedding"][COGNITION_TOKEN_ID]
    return {**params, "cognition_token": jnp.asarray(row, jnp.float32)}


class VitraPolicy:
    """Pure functions of (params, inputs); all usable under `jax.jit`."""

    def __init__(self, cfg: PolicyConfig):
        self.cfg = cfg
        self.model = VitraModel(cfg)
        self.dit = DiT(cfg.dit)
        self.schedule = diffusion.cosine_schedule(cfg.num_train_steps)

    def init(self, rng: jax.Array, batch_size: int = 1) -> dict:
        b = fake_batch(self.cfg, batch_size)
        t = jnp.zeros((batch_size,), jnp.int32)
        return self.model.init(rng, b["images"], b["tokens"], b["input_mask"], b["fov"], t, b["actions"],
                               b["action_mask"], b["state"], b["state_mask"])["params"]

    def cognition(self, params: dict, images, tokens, input_mask, fov) -> jax.Array:
        """One VLM pass -> cognition features (B, W)."""
        return self.model.apply({"params": params}, images, tokens, input_mask, fov,
                                method=VitraModel.cognition)

    def _eps(self, params, z, t, x, action_mask, state, state_mask, drop):
        return self.dit.apply({"params": params["action_model"]}, z, t, x, action_mask, state, state_mask, drop)

    def loss_counts(self, batch: dict) -> jax.Array:
        """`diffusion.component_counts` of the loss over `batch` (R noise draws each)."""
        return diffusion.component_counts(jnp.asarray(batch["action_mask"])) * self.cfg.repeats

    def loss(self, params: dict, batch: dict, rng: jax.Array,
             counts: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Total diffusion loss and per-component losses; R noise draws reuse one VLM pass.

        `counts`: `loss_counts` of a larger batch `batch` is a micro-batch of (gradient accumulation); the
        losses of the micro-batches then add up to the larger batch's loss (`diffusion.masked_component_loss`).
        """
        cfg, r = self.cfg, self.cfg.repeats
        z = self.cognition(params, batch["images"], batch["tokens"], batch["input_mask"], batch["fov"])
        rep = lambda v: jnp.repeat(jnp.asarray(v), r, axis=0)  # noqa: E731
        z, state, state_mask = rep(z), rep(batch["state"]), rep(batch["state_mask"])
        mask = rep(batch["action_mask"]).astype(jnp.float32)
        x0 = rep(batch["actions"]) * mask
        k_t, k_eps, k_drop = jax.random.split(rng, 3)
        t = jax.random.randint(k_t, (z.shape[0],), 0, cfg.num_train_steps)
        eps = jax.random.normal(k_eps, x0.shape)
        x_t = diffusion.q_sample(self.schedule, x0, t, eps) * mask
        drop = jax.random.bernoulli(k_drop, cfg.cond_dropout, (z.shape[0],))
        eps_pred = self._eps(params, z, t, x_t, mask, state, state_mask, drop)
        return diffusion.masked_component_loss(eps_pred, eps, mask, cfg.loss_weights, counts)

    def denoise(self, params: dict, z: jax.Array, state, state_mask, action_mask, rng: jax.Array,
                noise: jax.Array | None = None, num_samples: int = 1, cfg_scale: float = 5.0,
                num_ddim_steps: int = 10, use_ddim: bool = True) -> jax.Array:
        """Normalized action chunks (B, num_samples, N, A), multiplied by the action mask.

        DDIM (η=0) over IDDPM-respaced timesteps, or ancestral DDPM over all training steps. With
        cfg_scale > 1 the conditional and `uncondition` branches run as one batch and
        ε = ε_u + s·(ε_c − ε_u); otherwise only the conditional branch runs. `noise` (B, S, N, A) fixes x_T.
        """
        b, s = z.shape[0], num_samples
        n, a = self.cfg.dit.chunk_len, self.cfg.dit.action_dim
        rep = lambda v: jnp.repeat(jnp.asarray(v), s, axis=0)  # noqa: E731
        z, state, state_mask, mask = rep(z), rep(state), rep(state_mask), rep(action_mask).astype(jnp.float32)
        rng, k0 = jax.random.split(rng)
        x = jax.random.normal(k0, (b * s, n, a)) if noise is None else jnp.reshape(noise, (b * s, n, a))
        guided = cfg_scale > 1.0
        if guided:
            drop = jnp.concatenate([jnp.zeros(b * s, bool), jnp.ones(b * s, bool)])
            cond_in = (jnp.concatenate([z, z]), jnp.concatenate([mask, mask]), jnp.concatenate([state, state]),
                       jnp.concatenate([state_mask, state_mask]))
        else:
            drop, cond_in = jnp.zeros(b * s, bool), (z, mask, state, state_mask)

        def eps_at(x, t):
            zz, mm, ss, sm = cond_in
            xx = jnp.concatenate([x, x]) if guided else x
            tt = jnp.full((xx.shape[0],), t, jnp.int32)
            e = self._eps(params, zz, tt, xx, mm, ss, sm, drop)
            if guided:
                e_c, e_u = jnp.split(e, 2)
                e = e_u + cfg_scale * (e_c - e_u)
            return e

        if use_ddim:
            ts = jnp.asarray(diffusion.ddim_timesteps(self.cfg.num_train_steps, num_ddim_steps)[::-1], jnp.int32)
            ts_prev = jnp.concatenate([ts[1:], jnp.array([-1], jnp.int32)])

            def body(i, x):
                return diffusion.ddim_step(self.schedule, x, eps_at(x, ts[i]), ts[i], ts_prev[i])
            x = jax.lax.fori_loop(0, num_ddim_steps, body, x)
        else:
            steps = self.cfg.num_train_steps

            def body(i, x):
                t = steps - 1 - i
                z_noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
                return diffusion.ddpm_step(self.schedule, x, eps_at(x, t), t, z_noise)
            x = jax.lax.fori_loop(0, steps, body, x)
        return (x * mask).reshape(b, s, n, a)

    def sample(self, params: dict, batch: dict, rng: jax.Array, **kwargs: Any) -> jax.Array:
        """VLM prefix once, then `denoise` (keyword arguments as there)."""
        z = self.cognition(params, batch["images"], batch["tokens"], batch["input_mask"], batch["fov"])
        return self.denoise(params, z, batch["state"], batch["state_mask"], batch["action_mask"], rng, **kwargs)
