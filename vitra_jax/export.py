"""Export a trained run as a self-contained PyTorch bundle for the robot PC, behind a parity gate.

    python -m vitra_jax.export --workdir out/run --out bundles/run [--step N] [--overwrite] [--tolerance 1e-4]
        [--statistics_group NAME]

The params of step N (default: the newest checkpoint), the run's dataset statistics (with `--statistics_group`,
those of one dataset of a run normalized by embodiment) and tokenizer are written
in the bundle layout `vitra_jax.deploy.bundle` reads (see docs/deploy.md) into a temporary folder beside
`--out`. The bundle is then loaded back by the torch-only `load_bundle` and run next to the JAX policy on fixed
inputs (a deterministic image, instruction, state, masks, FoV and initial noise; CFG 5, DDIM 10): their
normalized actions must agree within `--tolerance` (max abs), or the export fails and leaves nothing behind.
Only then the folder is renamed to `--out`. An existing `--out` is refused unless `--overwrite`, which replaces
it atomically (old folder renamed aside, new one renamed in, old one deleted).

The gate runs the JAX VLM in fp32 (the run may have trained in bf16), as the bundle runs by default.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from vitra_jax.atomic_dirs import staging_dir  # noqa: E402
from vitra_jax.data.statistics import DatasetStatistics  # noqa: E402
from vitra_jax.deploy.bundle import FORMAT_VERSION, file_hashes  # noqa: E402
from vitra_jax.deploy.sampling import SAMPLING_DEFAULTS  # noqa: E402
from vitra_jax.handspace import layout  # noqa: E402
from vitra_jax.models.policy import PolicyConfig  # noqa: E402
from vitra_jax.runs import RunCheckpoint, RunFolderError, read_run, statistics_note  # noqa: E402

GATE_SAMPLES = 2


class ParityError(RuntimeError):
    """The torch bundle and the JAX policy disagree on the gate inputs."""


def deploy_config_from_policy_config(cfg: PolicyConfig, hf_vlm_config: dict, *, preprocess: str = "squash"):
    """The `DeployConfig` of a JAX policy config; `hf_vlm_config` is the HF PaliGemma config.json dict of
    the exported VLM (`weights.hf.hf_config_dict(cfg.vlm)`)."""
    from vitra_jax.deploy.policy import DeployConfig
    from vitra_jax.weights.official import ACTION_PAD, STATE_PAD

    d = cfg.dit
    if d.token_size != cfg.vlm.llm.width:
        raise ValueError(f"dit.token_size {d.token_size} differs from the VLM width {cfg.vlm.llm.width}")
    return DeployConfig(vlm=dict(hf_vlm_config), qk_norm=d.qk_norm, max_text_len=cfg.max_text_len,
                        image_size=cfg.vlm.image_size, dit_depth=d.depth, dit_width=d.width, dit_heads=d.num_heads,
                        mlp_ratio=d.mlp_ratio, freq_dim=d.freq_dim, state_hidden=d.state_hidden,
                        chunk_len=d.chunk_len, action_dim=d.action_dim, state_dim=d.state_dim,
                        action_pad=ACTION_PAD, state_pad=STATE_PAD, num_train_steps=cfg.num_train_steps,
                        preprocess=preprocess)


def write_bundle_files(run: RunCheckpoint, directory: pathlib.Path, preprocess: str = "squash") -> None:
    """The bundle's model files (everything but manifest.json) into the existing folder `directory`."""
    from safetensors.numpy import save_file

    from vitra_jax.weights import hf, official

    hf.save_hf_paligemma(run.cfg.vlm, run.params["vlm"], directory / "paligemma")
    head = official.head_to_official(run.params, run.cfg)
    save_file(head, str(directory / "action_head.safetensors"), metadata={"format": "pt"})
    deploy = deploy_config_from_policy_config(run.cfg, hf.hf_config_dict(run.cfg.vlm), preprocess=preprocess)
    (directory / "config.json").write_text(json.dumps({**deploy.to_dict(), "sampling": SAMPLING_DEFAULTS},
                                                      indent=1))
    run.statistics.save(directory / "dataset_statistics.json")
    shutil.copyfile(run.tokenizer, directory / "tokenizer.model")


def write_manifest(directory: pathlib.Path, run: RunCheckpoint, parity: dict | None,
                   files: dict[str, str] | None = None) -> dict:
    """manifest.json of the bundle in `directory`; `files` are its `file_hashes` when already computed."""
    manifest = {"format_version": FORMAT_VERSION, "files": file_hashes(directory) if files is None else files,
                "source": {"workdir": str(run.workdir), "step": run.step, "weights": run.weights,
                           "statistics": run.statistics_group or "run"},
                "qk_norm": run.cfg.dit.qk_norm, "parity": parity,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def gate_inputs(cfg: PolicyConfig, statistics: DatasetStatistics, seed: int = 0) -> dict:
    """Fixed observation and noise of the parity gate: a non-square image (so resizing is exercised), both
    hands' states around the statistics' means with a few masked dims, the left hand idle after step 10."""
    rng = np.random.default_rng(seed)
    size = cfg.vlm.image_size
    yy, xx = np.mgrid[0:size + 8, 0:size + 24]
    image = np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx + yy) * 3 % 256], -1).astype(np.uint8)
    image = np.clip(image.astype(np.int16) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    state = statistics.state_mean + statistics.state_std * rng.normal(size=layout.STATE_DIM)
    state_mask = np.ones(layout.STATE_DIM, np.float32)
    state_mask[[5, 60, 61]] = 0
    n, a = cfg.dit.chunk_len, cfg.dit.action_dim
    action_mask = np.ones((n, a), np.float32)
    action_mask[10:, :layout.HAND_DIM] = 0
    return {"image": image, "instruction": "Left hand: Hold the cup steady. Right hand: Pour the water.",
            "state": state, "state_mask": state_mask, "action_mask": action_mask, "fov": np.array([1.05, 0.8]),
            "noise": rng.normal(size=(GATE_SAMPLES, n, a)).astype(np.float32)}


@functools.lru_cache(maxsize=4)
def _policy(cfg: PolicyConfig) -> Any:
    """One `VitraPolicy` per config, so repeated gates reuse its compiled functions."""
    from vitra_jax.models.policy import VitraPolicy

    return VitraPolicy(cfg)


def jax_predict(run: RunCheckpoint, inputs: dict, preprocess: str = "squash") -> dict:
    """The JAX policy's prediction on the gate inputs (CFG 5, DDIM 10). With the 'official' preprocessing the
    image is first resized as the bundle resizes it (the JAX policy then squashes it as in training)."""
    from vitra_jax import inference
    from vitra_jax.deploy.preprocess import resize_short_side
    from vitra_jax.tokenizer import Tokenizer

    obs = {k: v for k, v in inputs.items() if k != "noise"}
    if preprocess == "official":
        obs["image"] = resize_short_side(obs["image"])
    return inference.predict_action(_policy(run.cfg), run.params, **obs, tokenizer=Tokenizer(run.tokenizer),
                                    normalizer=run.statistics.normalizer(), num_samples=GATE_SAMPLES,
                                    cfg_scale=5.0, num_ddim_steps=10, noise=inputs["noise"][None])


def parity_gate(run: RunCheckpoint, bundle: pathlib.Path, tolerance: float) -> dict:
    """Runs the bundle (torch, loaded back from disk) and the JAX policy on the gate inputs; their figures,
    or ParityError when the normalized actions differ by more than `tolerance` (max abs)."""
    from vitra_jax.deploy.bundle import load_bundle

    inputs = gate_inputs(run.cfg, run.statistics)
    policy = load_bundle(bundle)
    want = jax_predict(run, inputs, policy.config.preprocess)
    obs = {k: v for k, v in inputs.items() if k != "noise"}
    got = policy.predict_action(**obs, num_samples=GATE_SAMPLES, cfg_scale=5.0, num_ddim_steps=10,
                                             noise=inputs["noise"][None])
    diff = float(np.max(np.abs(np.asarray(got["normalized"], np.float64) - want["normalized"])))
    figures = {"max_abs_normalized": diff, "tolerance": tolerance,
               "max_abs_actions": float(np.max(np.abs(np.asarray(got["actions"]) - want["actions"]))),
               "output_scale": float(np.max(np.abs(want["normalized"]))), "samples": GATE_SAMPLES,
               "cfg_scale": 5.0, "num_ddim_steps": 10}
    if not diff <= tolerance:
        raise ParityError(f"the torch bundle disagrees with the JAX policy: max |Δ normalized action| = {diff:.3g} "
                          f"> tolerance {tolerance:g} (outputs up to {figures['output_scale']:.3g})")
    return figures


def export(workdir: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None, overwrite: bool = False,
           tolerance: float = 1e-4, tokenizer: str | os.PathLike | None = None, preprocess: str = "squash",
           ema: bool = False, statistics: str | None = None, run: RunCheckpoint | None = None) -> dict:
    """Writes the bundle of `workdir`'s step `step` to `out` (see module docstring); returns its manifest.

    `run` skips reading the workdir (already read with `read_run`)."""
    out = pathlib.Path(out).absolute()
    _check_replaceable(out, overwrite)
    run = run or read_run(workdir, step, tokenizer, ema=ema, statistics=statistics)
    note = statistics_note(run)
    if note:
        print(note)
    with staging_dir(out) as tmp:
        write_bundle_files(run, tmp, preprocess)
        files = file_hashes(tmp)
        write_manifest(tmp, run, parity=None, files=files)
        parity = parity_gate(run, tmp, tolerance)
        manifest = write_manifest(tmp, run, parity, files=files)
        _move_into_place(tmp, out, overwrite)
    return manifest


def _check_replaceable(out: pathlib.Path, overwrite: bool) -> None:
    """Refuses an existing `out` unless `overwrite`, and never replaces a folder that is not a bundle."""
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not (out / "manifest.json").is_file():
        raise FileExistsError(f"{out} exists and is not a policy bundle (no manifest.json); not replacing it")


def _move_into_place(tmp: pathlib.Path, out: pathlib.Path, overwrite: bool) -> None:
    """Renames `tmp` to `out`; an existing `out` (only with `overwrite`) is renamed aside first and deleted last."""
    if not out.exists():
        os.rename(tmp, out)
        return
    _check_replaceable(out, overwrite)
    old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "bundle")
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old / "bundle", out)  # put the old bundle back
        raise
    finally:
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="run folder written by vitra_jax.train")
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="parity gate: max abs normalized-action difference")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.model (default: the run's data.tokenizer)")
    ap.add_argument("--ema", action="store_true", help="export the run's moving average of the params "
                    "(optim.ema_decay > 0) instead of the params")
    ap.add_argument("--preprocess", choices=["squash", "official"], default="squash",
                    help="image preprocessing the bundle applies: 'squash' as in training, 'official' as the release")
    ap.add_argument("--statistics_group", default=None, help="a run normalized by embodiment: the dataset whose "
                    "statistics the bundle unnormalizes with (an OXE name, or hand_vla; default: the run's own)")
    args = ap.parse_args(argv)
    try:
        manifest = export(args.workdir, args.out, step=args.step, overwrite=args.overwrite,
                          tolerance=args.tolerance, tokenizer=args.tokenizer, preprocess=args.preprocess, ema=args.ema,
                          statistics=args.statistics_group)
    except (FileNotFoundError, FileExistsError, RunFolderError, ParityError) as e:
        raise SystemExit(f"vitra_jax.export: {e}") from None
    p = manifest["parity"]
    print(f"wrote {args.out} (step {manifest['source']['step']}, q/k norm {manifest['qk_norm']}); parity: max |Δ| "
          f"{p['max_abs_normalized']:.2e} <= {p['tolerance']:g} on outputs up to {p['output_scale']:.3g}")


if __name__ == "__main__":
    main()
