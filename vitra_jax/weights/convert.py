"""PaliGemma checkpoint conversion CLI.

    python -m vitra_jax.weights.convert --from hf --src HF_DIR --out DIR
    python -m vitra_jax.weights.convert --from bigvision --src pt_3b_224.bf16.npz --config 3b-224 --out DIR
    python -m vitra_jax.weights.convert --to hf --src DIR --out HF_DIR

DIR is our PaliGemma format (`params.npz` + `config.json`, see weights/npz.py); it holds a PaliGemma only.
Whole VITRA policies move between the release's files and run folders with `python -m vitra_jax.release`.
Output directories appear whole or not at all, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse

from vitra_jax.models.paligemma import paligemma_config
from vitra_jax.weights import hf, npz


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    way = ap.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="src_kind", choices=["hf", "bigvision"], help="import")
    way.add_argument("--to", dest="dst_kind", choices=["hf"], help="export")
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=None, help="our PaliGemma config name for --from bigvision (default "
                    "3b-224; npz has none)")
    args = ap.parse_args(argv)
    try:
        if args.dst_kind == "hf":
            cfg, params = npz.load_checkpoint(args.src)
            hf.save_hf_paligemma(cfg, params, args.out)
        elif args.src_kind == "hf":
            npz.save_checkpoint(*hf.load_hf_paligemma(args.src), args.out)
        else:
            cfg = paligemma_config(args.config or "3b-224")
            npz.save_checkpoint(cfg, npz.load_bigvision_npz(args.src, cfg), args.out)
    except (FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"vitra_jax.weights.convert: {e}") from None
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
