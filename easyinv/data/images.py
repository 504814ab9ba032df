"""One loader for every input image, so all methods (and the metrics' references) see identical pixels.

Pillow decodes; EXIF orientation is applied (OpenCV, used by the released EasyInv code, does so too, Pillow does
not by default); every colour mode becomes 8-bit RGB; the square resize uses a fixed filter. Anything wrong with a
file raises ``SkipItem`` with a one-line reason, so one bad image never stops a run of thousands.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}
RESIZE_MODES = ("stretch", "center_crop")
WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class SkipItem(Exception):  # noqa: N818 - the runner's contract names it; it is a signal, not an error
    """A per-item problem (unreadable, truncated, too small, ...): the runner records ``reason`` and goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Preprocess:
    """How a file becomes a square uint8 RGB array; ``describe()`` is stored with every run.

    ``resize='stretch'`` resizes the whole image to the square (what the released code did with its near-square
    COCO images); ``'center_crop'`` first cuts the central square. ``max_pixels`` defaults to Pillow's own
    decompression-bomb limit; Pillow's global limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies on top.
    """

    resize: str = "stretch"
    resample: str = "bicubic"
    min_size: int = 64
    max_pixels: int = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (~89.5 MP)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"dataset.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"dataset.resample must be one of {tuple(RESAMPLE)}, got {self.resample!r}")
        if self.min_size < 1:
            raise ValueError(f"dataset.min_size must be >= 1, got {self.min_size}")
        if self.max_pixels < 1:
            raise ValueError(f"dataset.max_pixels must be >= 1, got {self.max_pixels}")

    def describe(self) -> dict[str, Any]:
        return {
            "loader": f"Pillow {PIL.__version__}",
            "exif_transpose": True,
            "colour": "RGB; alpha composited on white; 16-bit scaled by 255/65535; CMYK by Pillow (no ICC)",
            "resize": self.resize,
            "resample": self.resample,
            "min_size": self.min_size,
            "max_pixels": self.max_pixels,
            "pillow_load_truncated_images": bool(ImageFile.LOAD_TRUNCATED_IMAGES),
        }


def load_image(source: Path | str | bytes, size: int, preprocess: Preprocess | None = None) -> np.ndarray:
    """Read a file (or its bytes) and return a ``(size, size, 3)`` uint8 RGB array; raises ``SkipItem``."""
    opts = preprocess or Preprocess()
    img = open_rgb(source, opts)
    return np.array(resize_square(img, size, opts), dtype=np.uint8)


def open_rgb(source: Path | str | bytes, preprocess: Preprocess | None = None) -> Image.Image:
    """Decode fully, apply EXIF orientation and convert to 8-bit RGB, at the file's own size; raises ``SkipItem``."""
    opts = preprocess or Preprocess()
    if isinstance(source, bytes):
        if not source:
            raise SkipItem("empty file (0 bytes)")
        return _decode(io.BytesIO(source), opts)
    path = Path(source)
    try:
        if path.stat().st_size == 0:
            raise SkipItem("empty file (0 bytes)")
        with path.open("rb") as fp:
            return _decode(fp, opts)
    except FileNotFoundError as err:
        raise SkipItem(f"file not found: {path}") from err
    except OSError as err:  # permissions, I/O errors
        raise SkipItem(f"cannot read file: {err}") from err


def _decode(fp: BinaryIO, opts: Preprocess) -> Image.Image:
    # Pillow's own bomb check warns (or raises past 2x its limit) while opening: make the warning an error too.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w * h > opts.max_pixels:
                    raise SkipItem(f"decompression bomb: {w}x{h} = {w * h} pixels > max_pixels {opts.max_pixels}")
                if min(w, h) < opts.min_size:
                    raise SkipItem(f"too small: {w}x{h}, min_size is {opts.min_size}")
                img.load()  # force the full decode now, so truncation raises here and not later
                oriented = ImageOps.exif_transpose(img)
                return to_rgb(oriented)
    except SkipItem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise SkipItem(f"decompression bomb: {err}") from err
    except Image.UnidentifiedImageError as err:
        raise SkipItem("not an image Pillow can read") from err
    except Exception as err:  # decoders raise many types on corrupt data; all of them are per-item problems
        text = str(err)
        if "truncated" in text:
            raise SkipItem(f"truncated image: {text}") from err
        raise SkipItem(f"corrupt or unsupported image ({type(err).__name__}: {text})") from err


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB. Transparency is composited on white; high bit depths are scaled, not clipped."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(img)).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode == "RGB":
        return img.copy()
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _scale_to_uint8(img: Image.Image) -> np.ndarray:
    """Single-channel high-bit-depth pixels → uint8 by round(v * 255 / 65535) (Pillow's convert would clip at 255)."""
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        if values.size and (np.nanmin(values) < 0.0 or np.nanmax(values) > 1.0):
            raise SkipItem("unsupported float image: values outside [0, 1]")
        scaled = values * 255.0
    else:
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise SkipItem("unsupported 32-bit integer image: values outside the 16-bit range")
        scaled = values * (255.0 / 65535.0)
    return np.clip(np.round(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def center_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The central square as a ``(left, top, right, bottom)`` box; odd leftovers go to the right/bottom."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def resize_square(img: Image.Image, size: int, preprocess: Preprocess | None = None) -> Image.Image:
    """Resize to ``size`` x ``size`` by stretching the whole image or from its central square."""
    opts = preprocess or Preprocess()
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if opts.resize == "center_crop":
        img = img.crop(center_square(*img.size))  # crop first: resize(box=...) would filter across the box edges
    return img.resize((size, size), RESAMPLE[opts.resample])
