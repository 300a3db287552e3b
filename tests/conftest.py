"""Test-wide setup: 8 fake CPU devices for sharding tests, a shared XLA compilation cache, quiet TF, fixture
paths."""

import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Compiling dominates the suite's time, and many tests (and the trainer processes they start, which inherit this
# environment) compile the same programs: one test session shares JAX's persistent compilation cache, for every
# program however fast it compiles. The pytest process that creates the folder (the one xdist's workers inherit
# it from) deletes it at the end, so every session starts cold. A size limit turns on the cache's file lock,
# which concurrent workers need.
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vitra_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIXTURES = pathlib.Path(os.environ.get("VITRA_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures folder not found at {FIXTURES} (set VITRA_FIXTURES)")
    return FIXTURES


def pytest_unconfigure(config):
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)
