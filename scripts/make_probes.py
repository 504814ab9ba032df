"""Write the synthetic probe images of the samples dataset (deterministic, seeded).

The probes stress what photographs rarely do: large white areas (where the EasyInv paper reports ReNoise returning
black images), flat colour (no texture at all), and high-frequency content at and above the VAE's 8-px stride.
Each probe gets a one-line ``.txt`` caption for ``prompt: caption``. The committed PNGs are the reference; pixels
are reproducible from this script, PNG bytes may differ with the zlib version.

    python scripts/make_probes.py [--out easyinv/data/samples/probes] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 512


def white(rng: np.random.Generator) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), 255, np.uint8)


def white_dark_object(rng: np.random.Generator) -> np.ndarray:
    """White canvas with one small dark disc off centre: ~97% of the pixels are pure white."""
    img = white(rng)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img[(yy - 300) ** 2 + (xx - 200) ** 2 <= 48**2] = (40, 30, 30)
    return img


def white_document(rng: np.random.Generator) -> np.ndarray:
    """A page-like image: white, with short dark strokes of random length on regular lines."""
    img = white(rng)
    for top in range(64, SIZE - 64, 24):
        left = 48
        while left < SIZE - 64:
            word = int(rng.integers(12, 48))
            img[top : top + 6, left : min(left + word, SIZE - 48)] = 20
            left += word + int(rng.integers(8, 16))
    return img


def flat_colour(rng: np.random.Generator) -> np.ndarray:
    return np.broadcast_to(np.array([70, 130, 180], np.uint8), (SIZE, SIZE, 3)).copy()


def gradient(rng: np.random.Generator) -> np.ndarray:
    """Smooth ramps: red left to right, green top to bottom, blue constant."""
    ramp = np.linspace(0, 255, SIZE)
    img = np.empty((SIZE, SIZE, 3), np.float64)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 128
    return np.round(img).astype(np.uint8)


def checkerboard(rng: np.random.Generator) -> np.ndarray:
    """Black and white 8-px squares: one period per two latent cells of an SD VAE."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cells = ((yy // 8 + xx // 8) % 2).astype(np.uint8) * 255
    return np.repeat(cells[..., None], 3, axis=2)


def noise(rng: np.random.Generator) -> np.ndarray:
    """Grey Gaussian noise (mean 128, std 48), stored as a grayscale PNG to keep it small."""
    return np.clip(np.round(rng.normal(128, 48, (SIZE, SIZE))), 0, 255).astype(np.uint8)


PROBES: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], str]] = {
    "white": (white, "a blank white image"),
    "white_dark_object": (white_dark_object, "a small dark circle on a white background"),
    "white_document": (white_document, "a white page with lines of black text"),
    "flat_colour": (flat_colour, "a plain steel blue image"),
    "gradient": (gradient, "a smooth colour gradient"),
    "checkerboard": (checkerboard, "a black and white checkerboard pattern"),
    "noise": (noise, "grey random noise"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "easyinv/data/samples/probes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (name, (make, caption)) in enumerate(PROBES.items()):
        rng = np.random.default_rng([args.seed, index])  # one stream per probe: adding a probe changes no other
        path = args.out / f"{name}.png"
        Image.fromarray(make(rng)).save(path, optimize=True)
        path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
