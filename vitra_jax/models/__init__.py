"""Model definitions: SigLIP, Gemma-2 and PaliGemma-2 in flax.linen with big_vision parameter names."""

from vitra_jax.models.gemma2 import Gemma2, Gemma2Config
from vitra_jax.models.paligemma import PaliGemma, PaliGemmaConfig, PaliGemmaOutput, paligemma_config
from vitra_jax.models.siglip import SiglipConfig, SiglipEncoder

__all__ = ["Gemma2", "Gemma2Config", "PaliGemma", "PaliGemmaConfig", "PaliGemmaOutput", "SiglipConfig",
           "SiglipEncoder", "paligemma_config"]
