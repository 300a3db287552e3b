"""Prepare a training config's data ahead of the run, with progress bars.

    python -m vitra_jax.data.prepare --config=configs/pretrain.py:frames=/data/frames,oxe=/data/oxe_frames

Does what a run does before its first batch (`loader.prepare`), each step skipped when its output exists:
builds the demo set if the config asks for it, converts TFDS components to frame stores under
`data.data_dir/frames`, trains the tokenizer if asked, and computes each component's normalization statistics
into its frame store, where the run finds them (also with `--config.data.compute_statistics=False`). Prints
one line per component. Useful on a CPU machine before a run starts on accelerators.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402


def describe(prepared, cfg) -> list[str]:
    """The lines `main` prints for a `loader.Prepared` of the data config `cfg`."""
    lines = []
    for src in prepared.train:
        st = prepared.statistics.get(src.name)
        line = (f"{src.name} ({src.kind}, weight {prepared.weights[src.name]:g}): {src.store.num_episodes} "
                f"episodes, {src.store.num_frames} frames at {src.store.path}")
        lines.append(line + (f"; statistics over {st.num_frames} frames" if st is not None else ""))
    lines.append(f"validation components: {[s.name for s in prepared.val] or 'none'}")
    lines.append(f"tokenizer: {prepared.tokenizer}")
    if cfg.statistics:
        lines.append(f"statistics: {cfg.statistics} (data.statistics)")
    norm = prepared.normalization
    if len(norm.groups) > 1:
        members = {g: [c for c, cg in norm.group_of.items() if cg == g] for g in norm.groups}
        lines.append(f"normalized by {cfg.normalize_by}: "
                     + "; ".join(f"{g} ({', '.join(m)})" for g, m in members.items())
                     + f"; the run's statistics.json: {norm.default}")
    return lines


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vitra_jax.data import loader

    cfg = flags.FLAGS.config.data
    print("\n".join(describe(loader.prepare(cfg, progress=True), cfg)))


if __name__ == "__main__":
    from ml_collections import config_flags

    # defined only when run as a program: vitra_jax.train defines the same flag
    config_flags.DEFINE_config_file("config", None, "Training recipe (configs/*.py[:variant]).", lock_config=True)
    flags.mark_flags_as_required(["config"])
    app.run(main)
