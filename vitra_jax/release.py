"""The release's checkpoint files <-> run folders of this project.

    python -m vitra_jax.release import --src weights.pt|RELEASE_DIR --out RUN_DIR [--official_config config.json] \
        [--statistics dataset_statistics.json] [--tokenizer tokenizer.model] [--config NAME] [--max_text_len 64]
    python -m vitra_jax.release export --src RUN_DIR [--step N] --out RELEASE_DIR [--vlm_name NAME] \
        [--statistics_group NAME]

`import` writes RUN_DIR as a run folder with one params-only checkpoint (step 0) that
`vitra_jax.export --workdir RUN_DIR` exports and a training config starts from with
`--config.init.checkpoint=RUN_DIR`. The release's files are looked up beside `weights.pt` and in the release's
HF layout (`checkpoints/*.pt`, `configs/config.json`, `statistics/dataset_statistics.json`); `--config NAME`
replaces the release's VLM by one of our PaliGemma configs (e.g. `tiny`). `export` reads the params, policy
config and statistics of a run folder's step and writes the release's `weights.pt`, `config.json` and
`dataset_statistics.json`. Output folders appear whole or not at all (`atomic_dirs`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

from vitra_jax.atomic_dirs import atomic_output_dir
from vitra_jax.data.statistics import load_official
from vitra_jax.models.paligemma import paligemma_config
from vitra_jax.runs import RunFolderError, read_run, statistics_note, write_run_folder
from vitra_jax.weights import official


def _find(src: pathlib.Path, given: str | None, names: tuple[str, ...]) -> pathlib.Path | None:
    """`given`, else the first of `names` beside `src` (a weights file or its folder) or one level up."""
    if given:
        if not pathlib.Path(given).is_file():
            raise FileNotFoundError(f"{given} not found")
        return pathlib.Path(given)
    base = src if src.is_dir() else src.parent
    for root in (base, base.parent):
        for name in names:
            if (root / name).is_file():
                return root / name
    return None


def import_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, official_config: str | None = None,
                      statistics: str | None = None, tokenizer: str | None = None, vlm: str | None = None,
                      max_text_len: int | None = None) -> None:
    """Release checkpoint (+ its config.json and dataset_statistics.json) -> run folder `out` (module docstring)."""
    src = pathlib.Path(src)
    state = official.load_official_checkpoint(src)
    config_path = _find(src, official_config, ("config.json", "configs/config.json"))
    if config_path is None:
        raise FileNotFoundError(f"no release config.json beside {src}; pass --official_config")
    release = json.loads(config_path.read_text())
    if "action_model" not in release:
        raise official.OfficialFormatError(f"{config_path} is not a release config.json (it has no action_model "
                                           "section)")
    overrides = ({"vlm": paligemma_config(vlm)} if vlm else {}) | (
        {"max_text_len": max_text_len} if max_text_len else {})
    cfg = official.policy_config_from_official(release, **overrides)
    params = official.official_to_params(state, cfg)
    stats_path = _find(src, statistics, ("dataset_statistics.json", "statistics/dataset_statistics.json"))
    stats = load_official(stats_path) if stats_path else None
    run_config = {"data": {"tokenizer": str(pathlib.Path(tokenizer).absolute()) if tokenizer else ""},
                  "source": {"official_checkpoint": str(src.absolute()), "config": str(config_path.absolute())}}
    write_run_folder(out, params, config=run_config, statistics=stats, policy_config=cfg)
    if stats is None:
        print(f"note: no dataset_statistics.json found beside {src}; {out} has no statistics (export needs them)")


def export_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
                      vlm_name: str | None = None, statistics: str | None = None) -> None:
    """A run folder's step -> the release's `weights.pt`, `config.json`, `dataset_statistics.json` in `out`
    (`statistics`: one named group of a run normalized by embodiment, as `runs.read_run`)."""
    run = read_run(src, step, need_tokenizer=False, statistics=statistics)
    note = statistics_note(run)
    if note:
        print(note)
    release_config = official.official_config(run.cfg, vlm_name)  # refuses what the release cannot express
    with atomic_output_dir(out) as tmp:
        official.save_official_checkpoint(run.params, run.cfg, tmp / "weights.pt")
        (tmp / "config.json").write_text(json.dumps(release_config, indent=4))
        (tmp / "dataset_statistics.json").write_text(json.dumps(run.statistics.to_official(), indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vitra_jax.release", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    way = ap.add_subparsers(dest="way", required=True)
    imp = way.add_parser("import", help="the release's weights.pt (+ config, statistics) -> a run folder")
    imp.add_argument("--src", required=True, help="weights.pt, its folder, or the release's HF layout")
    imp.add_argument("--out", required=True, help="run folder to write")
    imp.add_argument("--official_config", default=None, help="the release's config.json (default: found)")
    imp.add_argument("--statistics", default=None, help="the release's dataset_statistics.json (default: found)")
    imp.add_argument("--tokenizer", default=None, help="tokenizer.model recorded for export")
    imp.add_argument("--config", default=None, help="our PaliGemma config replacing the release's VLM (e.g. tiny)")
    imp.add_argument("--max_text_len", type=int, default=None, help="prompt tokens the policy pads or cuts to "
                     "(the release's files do not record it; default 64)")
    exp = way.add_parser("export", help="a run folder's step -> the release's weights.pt, config, statistics")
    exp.add_argument("--src", required=True, help="run folder")
    exp.add_argument("--out", required=True, help="folder for the release's files")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    exp.add_argument("--vlm_name", default=None, help="the release config's vlm.pretrained_model_name_or_path "
                     "when the VLM is not a PaliGemma-2 3B")
    exp.add_argument("--statistics_group", default=None, help="a run normalized by embodiment: the dataset whose "
                     "statistics to write (default: the run's own)")
    args = ap.parse_args(argv)
    try:
        if args.way == "import":
            import_checkpoint(args.src, args.out, official_config=args.official_config, statistics=args.statistics,
                              tokenizer=args.tokenizer, vlm=args.config, max_text_len=args.max_text_len)
        else:
            export_checkpoint(args.src, args.out, step=args.step, vlm_name=args.vlm_name, statistics=args.statistics_group)
    except (FileNotFoundError, FileExistsError, official.OfficialFormatError, RunFolderError) as e:
        raise SystemExit(f"vitra_jax.release: {e}") from None
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
