"""TFDS dataset builders of this project (one folder per dataset)."""
