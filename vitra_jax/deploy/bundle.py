"""Load an exported policy bundle (written by `python -m vitra_jax.export`) for torch inference.

Layout of a bundle folder:
    manifest.json            format_version, sha256 of every other file, source run and step, parity figures
    config.json              `DeployConfig.to_dict()` plus `sampling` defaults
    paligemma/               HF `save_pretrained` layout (config.json + model.safetensors)
    action_head.safetensors  `act_model.net.*`, `fov_encoder.projector.*`, `cognition_token` (release names)
    dataset_statistics.json  normalization statistics (`action`/`state` mean and std, 102-d)
    tokenizer.model          sentencepiece model
Every file's hash is checked before anything is loaded, so a corrupted or edited file is named instead of
silently giving other actions. Torch, transformers, safetensors, sentencepiece and numpy only.

    python -m vitra_jax.deploy.bundle BUNDLE    # check a copied bundle's hashes, print what it holds
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

FORMAT_VERSION = 1
BUNDLE_FILES = ("config.json", "action_head.safetensors", "dataset_statistics.json", "tokenizer.model",
                "paligemma/config.json", "paligemma/model.safetensors")


class BundleError(ValueError):
    """A bundle folder that is incomplete, corrupted or of another format (names the file)."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(directory: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under `directory` but its top-level manifest.json, by '/'-joined relative path."""
    directory = pathlib.Path(directory)
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p != directory / "manifest.json"}


def verify_bundle(path: str | os.PathLike) -> dict:
    """The manifest of the bundle at `path` after checking its format, that every required file is listed,
    and every listed file's sha256; BundleError names the first problem found."""
    path = pathlib.Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a policy bundle: {manifest_path} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{manifest_path} is not valid json: {e}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {manifest.get('format_version')!r} is not the supported "
                          f"{FORMAT_VERSION}; export it again with this version")
    files = manifest.get("files", {})
    unlisted = [f for f in BUNDLE_FILES if f not in files]
    if unlisted:
        raise BundleError(f"{path}: the manifest does not list {', '.join(unlisted)}")
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{path}: {rel} is missing")
        if sha256_file(f) != want:
            raise BundleError(f"{path}: {rel} is corrupted or was changed (its sha256 differs from the manifest)")
    return manifest


def read_config(path: str | os.PathLike) -> Any:
    """The DeployConfig of a bundle's config.json (its `sampling` defaults are left out)."""
    from vitra_jax.deploy.policy import DeployConfig

    d = json.loads((pathlib.Path(path) / "config.json").read_text())
    d.pop("sampling", None)
    return DeployConfig.from_dict(d)


def load_model(path: str | os.PathLike, config: Any) -> Any:
    """`TorchVitraPolicy` (CPU, fp32) with the bundle's backbone and action head."""
    import torch
    from safetensors.torch import load_file
    from transformers import PaliGemmaForConditionalGeneration

    from vitra_jax.deploy.policy import TorchVitraPolicy, state_dict_problems

    path = pathlib.Path(path)
    # eager attention: Gemma-2 soft-caps its attention logits, which SDPA kernels do not
    backbone = PaliGemmaForConditionalGeneration.from_pretrained(
        path / "paligemma", dtype=torch.float32, attn_implementation="eager").eval()
    model = TorchVitraPolicy(config, backbone=backbone)
    head = load_file(str(path / "action_head.safetensors"))
    problems = state_dict_problems(model.state_dict(), head, skip_prefix="backbone.")
    if problems:
        raise BundleError(f"{path / 'action_head.safetensors'} does not fit config.json: " + "; ".join(problems))
    model.load_state_dict(head, strict=False)
    return model.eval()


def load_bundle(path: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32", compile: bool = False,
                cuda_graphs: bool = False) -> Any:
    """A ready `DeployedPolicy` from a bundle folder; hashes are verified before anything is loaded.

    `dtype` is the backbone's compute dtype ('float32' or 'bfloat16'; the DiT always runs in fp32);
    `compile` and `cuda_graphs` as `DeployedPolicy`."""
    from vitra_jax.deploy.runner import DTYPES, DeployedPolicy
    from vitra_jax.handspace.normalize import GaussianNormalizer
    from vitra_jax.tokenizer import Tokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = pathlib.Path(path)
    verify_bundle(path)
    config = read_config(path)
    normalizer = GaussianNormalizer.from_dict(json.loads((path / "dataset_statistics.json").read_text()))
    model = load_model(path, config)
    return DeployedPolicy(model, Tokenizer(path / "tokenizer.model"), normalizer, config, device, dtype,
                          compile=compile, cuda_graphs=cuda_graphs)


def describe(path: str | os.PathLike) -> str:
    """One paragraph about a verified bundle: source run and step, weights, model sizes, parity figures."""
    manifest = verify_bundle(path)
    c = json.loads((pathlib.Path(path) / "config.json").read_text())
    src, p = manifest["source"], manifest.get("parity") or {}
    return (f"{path}: OK ({len(manifest['files'])} files match the manifest)\n"
            f"  source {src.get('workdir')} step {src.get('step')} ({src.get('weights', 'params')})\n"
            f"  DiT depth {c['dit_depth']} width {c['dit_width']} heads {c['dit_heads']}, q/k norm {c['qk_norm']}, "
            f"image {c['image_size']} ({c['preprocess']}), chunk {c['chunk_len']}\n"
            f"  parity vs JAX: max |Δ normalized| {p.get('max_abs_normalized', float('nan')):.2e} "
            f"(tolerance {p.get('tolerance', float('nan')):g})")


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m vitra_jax.deploy.bundle", description="Verify a policy bundle.")
    ap.add_argument("bundle")
    args = ap.parse_args(argv)
    try:
        print(describe(args.bundle))
    except BundleError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
