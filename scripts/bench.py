"""`make bench`: throughput per method and batch size on one model and device, and the projected cost of the full
EasyInv Table 1 and Table 2 there. Writes results/bench/<device-slug>.md and .csv. A benchmark, never a test.

    python scripts/bench.py                                             # tiny-sd, 64 px, CPU, B = 1 2 4 8
    python scripts/bench.py model=tiny-sd model.resolution=512 --batch-sizes 1 --images 2
    python scripts/bench.py model=sd14-random precision=fp16 device=cuda --batch-sizes 1 8   # SD-1.4's cost, no weights
    python scripts/bench.py model=sd14-random precision=fp16 device=cuda model.compile=max-autotune --batch-sizes 1 8
    python scripts/bench.py model=tiny-flux device=cpu      # a flow model: VAE only, Euler, DDIM, fixed-point, EasyInv
    python scripts/bench.py model=sd3-random precision=bf16 device=cuda --batch-sizes 1 4  # SD3-medium's cost

Each (method, B) job runs the real runner over copies of the bundled images: one warm-up batch, then ``--images``
timed images (rounded up to whole batches). Methods run at their Table-1 settings (the config defaults); on a flow
model the rows are VAE only, Euler, DDIM, fixed-point and EasyInv (ReNoise does not apply there).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from easyinv.bench import default_methods, device_slug, markdown, run_bench, summarize_bench, write_bench

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=sd14-random precision=fp16")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="rows (default: Table 1's on SD, VAE only/Euler/DDIM/fixed-point/EasyInv on a flow model)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--images", type=int, default=8, help="timed images per (method, B), after a warm-up batch")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="where <slug>.md/.csv go")
    parser.add_argument("--no-table2", action="store_true", help="skip EasyInv in the other Table-2 precision")
    parser.add_argument("--no-renoise-split", action="store_true",
                        help="skip ReNoise without regularisation (used to report the regularisation's share)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' records here (default: temp dir)")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options (scripts/gpu_check.sh)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = args.overrides or ["model=tiny-sd", "device=cpu"]
    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/bench.py " + " ".join(shlex.quote(a) for a in given)

    methods = args.methods or list(default_methods(overrides))

    def go(workdir: Path) -> int:
        records, facts = run_bench(overrides, methods, args.batch_sizes, args.images, workdir,
                                   table2=not args.no_table2, renoise_split=not args.no_renoise_split)
        summary = summarize_bench(records)
        files = write_bench(summary, facts, args.out, command)
        print(markdown(summary, facts, command))
        print(f"written: {files['md']} and {files['csv']} ({device_slug(facts)})")
        return 0

    if args.keep is not None:
        return go(args.keep)
    with tempfile.TemporaryDirectory() as tmp:
        return go(Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
