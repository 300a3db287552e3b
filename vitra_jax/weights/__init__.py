"""PaliGemma-2 weights: HF safetensors and big_vision npz import, HF export, our npz checkpoint format."""
