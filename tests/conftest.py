"""Test-wide setup: 8 fake CPU devices for sharding tests, a shared XLA compilation cache, quiet TF, fixture
paths."""

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Compiling dominates the suite's time and many tests (and the trainer processes they start, which inherit this
# environment) compile the same programs: they share JAX's persistent cache, every program however fast it
# compiles. A size limit turns on its file lock, which the two pytest workers need. `pytest --cache-clear` empties
# it with the rest of pytest's cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIXTURES = pathlib.Path(os.environ.get("VITRA_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures folder not found at {FIXTURES} (set VITRA_FIXTURES)")
    return FIXTURES
