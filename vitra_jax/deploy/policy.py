"""The VITRA policy in torch for deployment: HF PaliGemma prefix, FoV and cognition tokens, the causal DiT.

`TorchVitraPolicy` mirrors `vitra_jax.models.policy` numerically and the release by name: its state dict
holds `backbone.*` (a transformers `PaliGemmaForConditionalGeneration`, in the installed transformers' key
style), `act_model.net.*` (the DiT, padded 192/212-d widths), `fov_encoder.projector.{0,2}.*` and
`cognition_token`, so `load_official_state_dict` takes a release `weights.pt` directly. The backbone is used
for hidden states only (its vocabulary head is never run). The API speaks 102-d actions and states and pads
internally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from vitra_jax.deploy import sampling
from vitra_jax.deploy.dit import QK_NORMS, DiT, Projector

PREPROCESS = ("squash", "official")
# transformers-4.47.1 backbone key prefixes (the release's state dict) -> the installed transformers' names
_BACKBONE_RENAMES = (("vision_tower.vision_model.", "model.vision_tower."),
                     ("multi_modal_projector.", "model.multi_modal_projector."),
                     ("language_model.model.", "model.language_model."),
                     ("language_model.lm_head.", "lm_head."))
_EMBED = "backbone.model.language_model.embed_tokens.weight"
_HEAD = "backbone.lm_head.weight"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeployConfig:
    """Everything that shapes the deployed model and its inputs; JSON-able through `to_dict`/`from_dict`.

    `vlm` is the HF PaliGemma config as a dict (`PaliGemmaConfig.to_dict()` or `weights.hf.hf_config_dict`).
    DiT defaults are DiT-B; `qk_norm` has no default on purpose (the release trained with 'timm_0_9_10',
    runs of this project may use 'rms'). `preprocess`: 'squash' (the training preprocessing: bicubic squash
    to `image_size`) or 'official' (the release's Lanczos resize of the short side to 224 first).
    """

    vlm: dict
    qk_norm: str
    max_text_len: int
    image_size: int
    dit_depth: int = 12
    dit_width: int = 768
    dit_heads: int = 12
    mlp_ratio: int = 4
    freq_dim: int = 256
    state_hidden: int = 3072
    chunk_len: int = 16
    action_dim: int = 102
    state_dim: int = 102
    action_pad: int = 192
    state_pad: int = 212
    num_train_steps: int = 100
    preprocess: str = "squash"

    def __post_init__(self):
        problems = []
        if self.qk_norm not in QK_NORMS:
            problems.append(f"qk_norm must be one of {QK_NORMS}, got {self.qk_norm!r}")
        if self.preprocess not in PREPROCESS:
            problems.append(f"preprocess must be one of {PREPROCESS}, got {self.preprocess!r}")
        if not isinstance(self.vlm, Mapping) or "hidden_size" not in self.vlm.get("text_config", {}):
            problems.append("vlm must be an HF PaliGemma config dict with text_config.hidden_size")
        else:
            vis = self.vlm.get("vision_config", {}).get("image_size")
            if vis is not None and vis != self.image_size:
                problems.append(f"image_size {self.image_size} differs from vlm.vision_config.image_size {vis}")
        if self.action_dim > self.action_pad or self.state_dim > self.state_pad:
            problems.append(f"action_dim/state_dim ({self.action_dim}/{self.state_dim}) exceed the padded widths "
                            f"({self.action_pad}/{self.state_pad})")
        if self.dit_width % self.dit_heads:
            problems.append(f"dit_width {self.dit_width} is not divisible by dit_heads {self.dit_heads}")
        if problems:
            raise ValueError("bad DeployConfig: " + "; ".join(problems))

    @property
    def token_size(self) -> int:
        """Width of the VLM (and of the FoV and cognition tokens)."""
        return int(self.vlm["text_config"]["hidden_size"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeployConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if unknown or missing:
            raise ValueError(f"bad DeployConfig dict: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)


class ActionModel(nn.Module):
    """Holds the DiT as `net`, so its parameters sit under `act_model.net.` as in the release."""

    def __init__(self, net: DiT):
        super().__init__()
        self.net = net


def state_dict_problems(own: Mapping[str, Any], given: Mapping[str, Any], *,
                        skip_prefix: str | None = None) -> list[str]:
    """'missing K', 'unexpected K' and 'K has shape …, expected …' of a state dict `given` for a model whose
    own state dict is `own`; keys starting with `skip_prefix` are not expected in `given` (unexpected there)."""
    def skipped(k: str) -> bool:
        return skip_prefix is not None and k.startswith(skip_prefix)

    problems = [f"missing {k}" for k in own if not skipped(k) and k not in given]
    problems += [f"unexpected {k}" for k in given if k not in own or skipped(k)]
    problems += [f"{k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}" for k, v in given.items()
                 if k in own and v.shape != own[k].shape]
    return problems


def build_backbone(config: DeployConfig) -> nn.Module:
    """A randomly initialised HF PaliGemma of `config.vlm` (eager attention: Gemma-2 soft-caps its logits)."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    hf_cfg = PaliGemmaConfig.from_dict(dict(config.vlm))
    hf_cfg.text_config._attn_implementation = "eager"
    return PaliGemmaForConditionalGeneration(hf_cfg).eval()


class TorchVitraPolicy(nn.Module):
    """Built from a DeployConfig; `backbone` may be passed in (e.g. `from_pretrained`) to skip a random init."""

    def __init__(self, config: DeployConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.config = config
        w = config.token_size
        self.backbone = build_backbone(config) if backbone is None else backbone
        self.act_model = ActionModel(DiT(
            depth=config.dit_depth, width=config.dit_width, heads=config.dit_heads, mlp_ratio=config.mlp_ratio,
            freq_dim=config.freq_dim, state_hidden=config.state_hidden, token_size=w, chunk_len=config.chunk_len,
            action_pad=config.action_pad, state_pad=config.state_pad, qk_norm=config.qk_norm))
        self.fov_encoder = Projector([2, w, w])
        self.cognition_token = nn.Parameter(torch.zeros(w))
        self.eval()

    # ----------------------------------------------------------------------------------------------- weights
    def load_official_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads a release-layout state dict (transformers-4.47.1 or installed backbone key style) strictly.

        A missing tied LM head is filled from the embedding. Raises one ValueError naming every missing,
        unexpected or mis-shaped key.
        """
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            new = key
            if key.startswith("backbone."):
                rest = key[len("backbone."):]
                for old, repl in _BACKBONE_RENAMES:
                    if rest.startswith(old):
                        new = "backbone." + repl + rest[len(old):]
                        break
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                value = value.copy()  # torch refuses to wrap read-only memory
            renamed[new] = torch.as_tensor(value)
        own = self.state_dict()
        if _HEAD in own and _HEAD not in renamed and _EMBED in renamed:
            renamed[_HEAD] = renamed[_EMBED]
        problems = state_dict_problems(own, renamed)
        if problems:
            raise ValueError("state dict does not match the deploy model:\n  " + "\n  ".join(problems))
        self.load_state_dict(renamed, strict=True)

    # ----------------------------------------------------------------------------------------------- prefix
    @torch.no_grad()
    def cognition(self, images: torch.Tensor, tokens: torch.Tensor, input_mask: torch.Tensor,
                  fov: torch.Tensor) -> torch.Tensor:
        """Final hidden state (B, W) fp32 at the cognition token.

        images (B, H, W, 3) in [-1, 1]; tokens (B, L) right padded with input_mask (B, L); fov (B, 2) radians.
        Sequence [image | text | FoV | cognition] with padded text keys masked, positions counting valid
        tokens only (so FoV and cognition sit right after each sample's last real text token) and full
        bidirectional attention, as `vitra_jax.models.policy.VitraModel.cognition`.
        """
        vlm = self.backbone.model
        dtype = next(vlm.parameters()).dtype
        dev = self.cognition_token.device
        b = tokens.shape[0]
        w = self.config.token_size
        scale = w**0.5
        pixels = images.to(dev, dtype).permute(0, 3, 1, 2)
        z_img = vlm.get_image_features(pixels).pooler_output.to(dtype)
        z_txt = vlm.language_model.embed_tokens(tokens.to(dev, torch.long)).to(dtype)  # scaled by sqrt(W)
        fov_tok = self.fov_encoder(fov.to(dev, torch.float32))
        extra = torch.stack([fov_tok, self.cognition_token.float().expand(b, w)], dim=1) * scale
        x = torch.cat([z_img, z_txt, extra.to(dtype)], dim=1)
        n_img, n_extra = z_img.shape[1], extra.shape[1]
        valid = torch.cat([torch.ones(b, n_img, dtype=torch.bool, device=dev), input_mask.to(dev, torch.bool),
                           torch.ones(b, n_extra, dtype=torch.bool, device=dev)], dim=1)
        positions = torch.cumsum(valid.long(), dim=1) - 1
        bias = torch.zeros(valid.shape, dtype=dtype, device=dev).masked_fill(~valid, torch.finfo(dtype).min)
        bias = bias[:, None, None, :].expand(b, 1, x.shape[1], x.shape[1])
        # One mask for both layer kinds: all pairs are in the prefix, so the sliding window never applies.
        out = vlm.language_model(inputs_embeds=x, attention_mask={"full_attention": bias, "sliding_attention": bias},
                                 position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -1].float()

    # ----------------------------------------------------------------------------------------------- head
    def compile_dit(self, enable: bool = True, **kwargs: Any) -> None:
        """Runs the DiT's denoising step (`DiT.step`) through `torch.compile(**kwargs)` in `denoise`
        (enable=False: eager again); parameters and state dict unchanged."""
        if enable:
            self.__dict__["_compiled_step"] = torch.compile(self.act_model.net.step, **kwargs)
        else:
            self.__dict__.pop("_compiled_step", None)

    def _dit_step(self) -> Callable[..., torch.Tensor]:
        return self.__dict__.get("_compiled_step", self.act_model.net.step)

    def _pad(self, a: torch.Tensor, width: int) -> torch.Tensor:
        return nn.functional.pad(a.float(), (0, width - a.shape[-1]))

    @torch.no_grad()
    def denoise(self, z: torch.Tensor, state: torch.Tensor, state_mask: torch.Tensor, action_mask: torch.Tensor, *,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None, num_samples: int = 1,
                cfg_scale: float = 5.0, num_ddim_steps: int = 10, use_ddim: bool = True,
                step_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized action chunks (B, S, N, 102), multiplied by the action mask.

        z (B, W); state, state_mask (B, 102) (state normalized and masked); action_mask (B, N, 102).
        DDIM (η = 0, IDDPM respacing) or ancestral DDPM over all training steps; with cfg_scale > 1 the
        conditional and `uncondition` branches run as one batch, ε = ε_u + s·(ε_c − ε_u). `noise` (B, S, N, 102)
        fixes x_T; `step_noise` (num_train_steps, B·S, N, 102) fixes DDPM's per-step noise (row i for step i,
        t = T−1−i); otherwise both are drawn from `generator`.
        """
        cfg = self.config
        b, s, n, a = z.shape[0], num_samples, cfg.chunk_len, cfg.action_dim
        dev = self.cognition_token.device
        if action_mask.shape[1:] != (n, a) or state.shape[1:] != (cfg.state_dim,):
            raise ValueError(f"action_mask must be (B, {n}, {a}) and state (B, {cfg.state_dim}); "
                             f"got {tuple(action_mask.shape)} and {tuple(state.shape)}")

        def rep(v: torch.Tensor) -> torch.Tensor:  # each row S times in a row (no host sync: CUDA-graph safe)
            return v[:, None].expand(v.shape[0], s, *v.shape[1:]).reshape(v.shape[0] * s, *v.shape[1:])

        z = rep(z.to(dev).float())
        state, state_mask = rep(self._pad(state.to(dev), cfg.state_pad)), rep(self._pad(state_mask.to(dev),
                                                                                      cfg.state_pad))
        mask = rep(self._pad(action_mask.to(dev), cfg.action_pad))
        if noise is None:
            x = torch.randn((b * s, n, a), generator=generator, device=dev)
        else:
            x = noise.to(dev).float().reshape(b * s, n, a)
        x = self._pad(x, cfg.action_pad)
        guided = cfg_scale > 1.0
        if guided:
            drop = torch.cat([torch.zeros(b * s, dtype=torch.bool, device=dev),
                              torch.ones(b * s, dtype=torch.bool, device=dev)])
            zz, mm, ss, sm = (torch.cat([v, v]) for v in (z, mask, state, state_mask))
        else:
            drop, zz, mm, ss, sm = None, z, mask, state, state_mask
        net = self.act_model.net
        prefix, z_emb = net.condition(zz, ss, sm, drop)
        if use_ddim:
            coeffs = sampling.ddim_coefficients(cfg.num_train_steps, num_ddim_steps)
        else:
            coeffs = sampling.ddpm_coefficients(cfg.num_train_steps)
        # all training timesteps' embeddings at once (an arange on the device: no host copy, CUDA-graph safe)
        t_emb = net.t_embedder(torch.arange(cfg.num_train_steps, dtype=torch.float32, device=dev))
        step = self._dit_step()

        def eps_at(x: torch.Tensor, t: int) -> torch.Tensor:
            e = step(prefix, z_emb + t_emb[t], torch.cat([x, x]) if guided else x, mm)
            if guided:
                e_c, e_u = e.chunk(2)
                e = e_u + cfg_scale * (e_c - e_u)
            return e

        if use_ddim:
            x = sampling.ddim_loop(eps_at, x, coeffs)
        else:
            def step_z(i: int) -> torch.Tensor:
                if step_noise is not None:
                    return self._pad(step_noise[i].to(dev).reshape(b * s, n, a), cfg.action_pad)
                return self._pad(torch.randn((b * s, n, a), generator=generator, device=dev), cfg.action_pad)
            x = sampling.ddpm_loop(eps_at, x, coeffs, step_z)
        return (x * mask)[..., :a].reshape(b, s, n, a)
