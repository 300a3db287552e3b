"""Shared by the trainer tests: the demo dataset, tokenizer and statistics built once per test process."""

import pytest


@pytest.fixture(scope="session")
def debug_data_dir(tmp_path_factory):
    from configs import debug
    from vitra_jax.data import loader

    config = debug.get_config()
    data_dir = tmp_path_factory.mktemp("debug_data")
    with config.unlocked():
        config.data.data_dir = str(data_dir)
    loader.make_pipeline(config.data, image_size=32, max_text_len=48)
    return data_dir


def debug_config(data_dir, **overrides):
    """configs/debug.py with the shared data folder and dotted-name overrides ('checkpoint.every': 3)."""
    from configs import debug

    config = debug.get_config()
    with config.unlocked():
        config.data.data_dir = str(data_dir)
        for key, value in overrides.items():
            node, *path = key.split(".")
            target = config
            for name in [node, *path][:-1]:
                target = target[name]
            target[[node, *path][-1]] = value
    return config
