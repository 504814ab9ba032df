"""The bottom of the report layer: which metrics a table has, how each is named, printed and ranked.

Every table, sweep and figure of a reconstruction run reads its column facts from here: the metric names, their
headers and decimals, whether lower is better, the paper's row order and the precision names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "CEILING",
    "DAGGER_NOTE",
    "DECIMALS",
    "DEFAULT_PAPER_DIR",
    "GROUP_KEYS",
    "HEADERS",
    "LOWER_IS_BETTER",
    "METRICS",
    "PAPER_ORDER",
    "PRECISION_ALIASES",
    "PRECISION_ORDER",
    "QUALITY",
    "norm_precision",
]

DEFAULT_PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"  # published numbers (CSV)
QUALITY = ("lpips", "ssim", "psnr")
METRICS = (*QUALITY, "latent_mse")
LOWER_IS_BETTER = {"lpips": True, "ssim": False, "psnr": False, "latent_mse": True, "time_s": True}
PAPER_ORDER = ("ddim", "renoise", "fixed_point", "easyinv")  # the paper's row order; others follow by name
CEILING = "vae_only"  # encode + decode only: the best any inversion can do, listed last
PRECISION_ORDER = ("fp32", "fp16", "bf16")
PRECISION_ALIASES = {"float32": "fp32", "full": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
GROUP_KEYS = ("dataset", "model", "label", "precision", "device")
DAGGER_NOTE = ("LPIPS from a random or unverified VGG trunk (metrics.lpips.random_trunk): not comparable with "
               "published LPIPS; no difference computed.")
DECIMALS = {"lpips": 3, "ssim": 3, "psnr": 3, "latent_mse": 5, "time_s": 2}
HEADERS = {"lpips": "LPIPS ↓", "ssim": "SSIM ↑", "psnr": "PSNR ↑", "latent_mse": "latent MSE ↓",
           "time_s": "Time/img (s)"}


def norm_precision(value: Any) -> str:
    """``float16`` / ``half`` / ``fp16`` → ``fp16`` (the paper's and the precision group's names agree)."""
    text = str(value).lower()
    return PRECISION_ALIASES.get(text, text)
