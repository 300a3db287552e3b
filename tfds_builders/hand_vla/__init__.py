"""TFDS builder of the hand_vla RLDS dataset (`tfds build tfds_builders/hand_vla`)."""
