"""The numpy-only contracts must import without JAX, TensorFlow or torch (the robot PC and the labeling
pipeline load them in their own environments)."""

import pkgutil
import subprocess
import sys

import vitra_jax.handspace

HEAVY = ("jax", "tensorflow", "torch", "flax")


def heavy_after_importing(modules: list[str]) -> str:
    """The heavy frameworks a fresh interpreter has loaded after importing `modules`, as a printed list."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_handspace_imports_no_heavy_framework():
    modules = [m.name for m in pkgutil.walk_packages(vitra_jax.handspace.__path__, "vitra_jax.handspace.")]
    assert "vitra_jax.handspace.layout" in modules
    assert heavy_after_importing(modules) == "[]"


def test_package_root_is_light():
    code = f"import sys, vitra_jax; print(sorted(h for h in {HEAVY!r} if h in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_labeling_pipeline_loads_torch_only_for_a_hand_model():
    """The stage graph, runners, store and writer run in processes that may never load a hand model (Ray
    workers for the model-free stages): they must not pull torch, JAX or TensorFlow in."""
    modules = ["preprocess.run", "preprocess.graph", "preprocess.backends", "preprocess.runners.local",
               "preprocess.store", "preprocess.writer", "preprocess.errors", "preprocess.caption.captioner"]
    assert heavy_after_importing(modules) == "[]"


def test_library_modules_import_together():
    """absl flags are global: a library module defining a flag another one defines breaks every process that
    imports both (e.g. a test session). Command-line flags belong under `if __name__ == "__main__"`."""
    import preprocess
    import vitra_jax

    skip = ("vitra_jax.benchmarks", "preprocess.benchmarks", "preprocess.hands.mediapipe_worker")
    modules = [m.name for pkg, prefix in ((vitra_jax, "vitra_jax."), (preprocess, "preprocess."))
               for m in pkgutil.walk_packages(pkg.__path__, prefix) if not m.name.startswith(skip)]
    assert "vitra_jax.train" in modules and "preprocess.run" in modules
    code = "import importlib\n" f"for m in {modules!r}: importlib.import_module(m)\n" "print('ok')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
