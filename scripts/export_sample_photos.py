"""Export the bundled demo photographs from scikit-image's and matplotlib's package data (run once; offline).

Each photo is reduced so its long side is at most 512 px (Lanczos) and saved as PNG, so no further JPEG
generation is added. Sources and licences are listed in easyinv/data/samples/ATTRIBUTION.md.

    python scripts/export_sample_photos.py [--out easyinv/data/samples/photos]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

LONG_SIDE = 512
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def load_sources() -> dict[str, np.ndarray]:
    """The photos as uint8 RGB arrays, keyed by the file stem they are saved under."""
    import matplotlib.cbook
    import skimage.data

    photos = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS}
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        photos["grace_hopper"] = np.asarray(img.convert("RGB"))
    return photos


def shrink(pixels: np.ndarray, long_side: int = LONG_SIDE) -> Image.Image:
    img = Image.fromarray(pixels).convert("RGB")
    scale = long_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "easyinv/data/samples/photos")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, pixels in load_sources().items():
        path = args.out / f"{name}.png"
        img = shrink(pixels)
        img.save(path, optimize=True)
        print(f"{path}  {img.width}x{img.height}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
