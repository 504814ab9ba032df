"""Build the COCO-2017 manifest of EasyInv's Table 1 (the same file `dataset=coco2298` builds on first use).

Prints the number of near-square images per split, then writes FILE (CSV) and FILE with a .json suffix (the
settings, which the dataset checks before reusing the manifest). Same annotation files and seed give identical bytes.

    python scripts/make_coco_manifest.py --coco-root DIR --out FILE --n 2298 --seed 0 --splits val2017 test2017 --hash
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from easyinv.data.coco import build_manifest, manifest_spec, sidecar_path, write_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-root", type=Path, required=True, help="folder holding annotations/ and the splits")
    parser.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    parser.add_argument("--n", type=int, default=2298, help="images to sample (default: 2298, Table 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["val2017", "test2017"])
    parser.add_argument("--hash", action="store_true", help="record the sha256 of every selected file present")
    args = parser.parse_args(argv)

    try:
        rows, eligible = build_manifest(args.coco_root, args.splits, args.n, args.seed, hash_files=args.hash)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, count in eligible.items():
        print(f"{split}: {count} near-square images eligible")
    print(f"eligible in total: {sum(eligible.values())}; sampled {len(rows)} with seed {args.seed}")
    write_manifest(args.out, rows, manifest_spec(args.splits, args.n, args.seed), eligible)
    hashed = sum(1 for r in rows if r.sha256)
    print(f"wrote {args.out} and {sidecar_path(args.out)} ({hashed} of {len(rows)} files hashed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
