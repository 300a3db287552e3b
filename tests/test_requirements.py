"""The robot PC's requirements are a subset of the main pins (same versions), and cover what the deploy
package imports."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pkg, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not pinned with =="
            pins[pkg.lower()] = version
    return pins


def test_deploy_requirements_are_a_pinned_subset_of_the_main_file():
    main, deploy = _pins("requirements.txt"), _pins("requirements-deploy.txt")
    assert {k: main.get(k) for k in deploy} == deploy


def test_deploy_package_imports_only_packages_of_the_deploy_subset():
    # top-level modules loaded by importing the whole deploy package, mapped back to distributions
    code = (
        "import importlib, pkgutil, sys, importlib.metadata as md\n"
        "import vitra_jax.deploy as d\n"
        "for m in pkgutil.walk_packages(d.__path__, 'vitra_jax.deploy.'):\n"
        "    importlib.import_module(m.name)\n"
        "dists = md.packages_distributions()\n"
        "tops = {n.split('.')[0] for n in list(sys.modules)}\n"
        "print(' '.join(sorted({x.lower() for t in tops for x in dists.get(t, [])})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    used = set(out.stdout.split())
    deploy = set(_pins("requirements-deploy.txt"))
    main = set(_pins("requirements.txt"))
    # distributions pulled in as dependencies of the pinned ones are not pinned in either file; only a pinned
    # distribution of the main file that the deploy subset lacks is a mistake
    missing = sorted((used & main) - deploy)
    assert not missing, f"vitra_jax.deploy imports {missing}, which requirements-deploy.txt lacks"
