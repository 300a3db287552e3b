"""Every `vitra_jax.deploy` module imports without jax, flax, tensorflow, grain or orbax (the robot PC has
only torch, transformers and the numpy-only parts of the package)."""

import pkgutil
import subprocess
import sys

import vitra_jax.deploy

FORBIDDEN = ("jax", "flax", "tensorflow", "grain", "orbax")


def test_deploy_modules_import_no_training_framework():
    modules = [m.name for m in pkgutil.walk_packages(vitra_jax.deploy.__path__, "vitra_jax.deploy.")]
    assert {"vitra_jax.deploy.policy", "vitra_jax.deploy.runner", "vitra_jax.deploy.preprocess",
            "vitra_jax.deploy.dit", "vitra_jax.deploy.sampling"} <= set(modules)
    code = (
        "import importlib, sys\n"
        "import vitra_jax.deploy as d\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "[getattr(d, name) for name in d.__all__]\n"
        f"print(sorted(h for h in {FORBIDDEN!r} if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
