"""Speed benchmark: per method, NFE and UNet calls per image, time per image, ms per NFE, share outside the UNet.

Runs the real runner (same code path as the benchmark) on a few images into a scratch directory, skipping the
first image as warm-up, and prints one row per method. Timing lives here, never in the tests.

    python scripts/bench.py                                  # tiny-sd, 64 px, CPU
    python scripts/bench.py model=tiny-sd model.resolution=512 --images 3
    python scripts/bench.py model=sd14-random precision=fp16 device=cuda --images 5   # GPU: full-size SD-1.4 cost
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from easyinv.records import read_records
from easyinv.runner import Job
from easyinv.validation import CONFIG_DIR

METHODS = ("vae_only", "ddim", "easyinv", "renoise", "fixed_point")


def bench(overrides: list[str], methods: list[str], images: int, out: Path) -> pd.DataFrame:
    """Run each method on ``images`` images (+1 warm-up) and summarise the records."""
    rows = []
    root = Path(__file__).resolve().parent.parent
    for name in methods:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=[
                "experiment=none", "metrics.lpips.random_trunk=true", f"paths.root={root}",
                f"method={name}", f"dataset.limit={images + 1}", *overrides,
            ])
        run_dir = out / name
        start = time.perf_counter()
        Job(cfg, run_dir).run()
        wall = time.perf_counter() - start
        df = read_records([run_dir])
        timed = df[(df.status == "ok") & (~df.warmup.astype(bool))]
        if timed.empty:
            timed = df[df.status == "ok"]
        unet = timed.unet_seconds.mean()
        total = timed.t_total.mean()
        rows.append({
            "method": name,
            "images": len(timed),
            "nfe/img": timed.nfe.mean(),
            "UNet calls/img": timed.unet_calls.mean() if "unet_calls" in timed else float("nan"),
            "s/img": total,
            "s/img invert": timed.t_invert.mean(),
            "ms/NFE": timed.ms_per_nfe.mean(),
            "UNet s/img": unet,
            "outside UNet": 1 - unet / total if total else float("nan"),
            "job wall s": wall,
        })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny-sd device=cuda")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--images", type=int, default=2, help="timed images per method (one more runs as warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="keep the records here (default: a temp dir)")
    args = parser.parse_args()
    overrides = args.overrides or ["model=tiny-sd", "device=cpu"]
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            table = bench(overrides, args.methods, args.images, Path(tmp))
    else:
        table = bench(overrides, args.methods, args.images, args.out)
    print(f"overrides: {' '.join(overrides)}")
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.round(3).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
