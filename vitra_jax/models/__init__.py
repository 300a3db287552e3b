"""Model definitions in flax.linen with big_vision parameter names: SigLIP, Gemma-2, PaliGemma-2, and the
VITRA policy (FoV + cognition tokens, causal DiT action expert, diffusion)."""

from vitra_jax.models import diffusion
from vitra_jax.models.dit import DiT, DiTConfig
from vitra_jax.models.gemma2 import Gemma2, Gemma2Config
from vitra_jax.models.paligemma import PaliGemma, PaliGemmaConfig, PaliGemmaOutput, paligemma_config
from vitra_jax.models.policy import (PolicyConfig, VitraPolicy, fake_batch, init_cognition_from_embedding,
                                     policy_config)
from vitra_jax.models.siglip import SiglipConfig, SiglipEncoder

__all__ = ["DiT", "DiTConfig", "Gemma2", "Gemma2Config", "PaliGemma", "PaliGemmaConfig", "PaliGemmaOutput",
           "PolicyConfig", "SiglipConfig", "SiglipEncoder", "VitraPolicy", "diffusion", "fake_batch",
           "init_cognition_from_embedding", "paligemma_config", "policy_config"]
