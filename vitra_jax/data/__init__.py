"""Data: hand_vla RLDS episodes turned into policy training samples."""
