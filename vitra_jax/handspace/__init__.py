"""Shared hand-space contracts (numpy only): the 102-d layout, rotations, MANO conventions, episodes."""
