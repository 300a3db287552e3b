"""Instruction labeling: segment frames with the future palm path drawn, sent to a vision-language model."""
