"""Build the tiny random SD-1.x / SD-XL checkpoints (the ones `model=tiny-sd` / `model=tiny-sdxl` build on first use).

Writes <out>/tiny-models/<name>/ as a diffusers folder; an existing complete folder is reused unless --force.
Offline, about a second each on a CPU. The weights are never committed.

    python scripts/make_tiny_models.py                        # both, into $EASYINV_CACHE or ./.cache
    python scripts/make_tiny_models.py --out /tmp/cache --which tiny-sdxl --seed 1 --force
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from easyinv.models.tiny import TINY_MODELS, ensure_tiny_model, tiny_model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("EASYINV_CACHE", ".cache")),
                        help="cache dir, i.e. paths.cache (default: $EASYINV_CACHE or ./.cache)")
    parser.add_argument("--which", choices=[*TINY_MODELS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (the model YAMLs use 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete folder exists")
    args = parser.parse_args(argv)
    names = TINY_MODELS if args.which == "all" else (args.which,)
    for name in names:
        if args.force:
            shutil.rmtree(tiny_model_dir(name, args.out), ignore_errors=True)
        folder = ensure_tiny_model(name, args.out, seed=args.seed)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{name}: {folder} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
