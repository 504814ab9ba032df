"""Per-image reconstruction metrics: PSNR, SSIM (torchmetrics' functional API), LPIPS (the ``lpips`` package).

Conventions (ecosystem.md §3.4): metrics compare the reconstruction *as a PNG would hold it* (uint8) with the
preprocessed reference, both mapped to float [0, 1]; every value is per image, and averages are taken later, in the
report (a pooled PSNR over a batch is a different, larger-looking number).

The LPIPS trunk never comes from the network. It is read from the torch hub cache or a configured file, mapped onto
the ``lpips`` module's layout and loaded; without it we fail with a message naming the file, unless the config asks for
a seeded random trunk (tests, demo), whose values are flagged as not comparable with published numbers.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from easyinv.checksums import file_sha256

__all__ = [
    "TRUNK_FILES",
    "ImageMetrics",
    "LpipsTrunkMissingError",
    "latent_mse",
    "load_lpips",
    "psnr",
    "ssim",
    "to_uint8",
]

log = logging.getLogger(__name__)

# torchvision's checkpoint file name per LPIPS trunk; the 8 hex digits are the start of the file's sha256.
TRUNK_FILES: dict[str, str] = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
TRUNK_URL = "https://download.pytorch.org/models/"

# SSIM as torchmetrics and Wang et al. (2004) define it: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
SSIM_DEFAULTS: dict[str, Any] = {"gaussian_kernel": True, "kernel_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03}
KNOWN_METRICS = ("psnr", "ssim", "lpips")


class LpipsTrunkMissingError(FileNotFoundError):
    """The LPIPS trunk checkpoint is not on disk (and downloading is never attempted)."""


# --------------------------------------------------------------------------------------------------------------------
# Functional metrics on float images in [0, 1], (B, 3, H, W)
# --------------------------------------------------------------------------------------------------------------------


def psnr(rec: Tensor, ref: Tensor) -> Tensor:
    """PSNR in dB per image, (B,), for float images in [0, 1] (data_range 1); identical images give +inf."""
    _check_pair(rec, ref)
    return peak_signal_noise_ratio(rec, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(rec: Tensor, ref: Tensor, **params: Any) -> Tensor:
    """SSIM per image, (B,): torchmetrics' reflect-padded map averaged over the whole image, data_range 1.

    ``params`` override :data:`SSIM_DEFAULTS` (``gaussian_kernel``, ``kernel_size``, ``sigma``, ``k1``, ``k2``).
    """
    _check_pair(rec, ref)
    unknown = set(params) - set(SSIM_DEFAULTS)
    if unknown:
        raise ValueError(f"metrics.ssim: unknown keys {sorted(unknown)}; allowed: {sorted(SSIM_DEFAULTS)}")
    kwargs = {**SSIM_DEFAULTS, **params}
    return structural_similarity_index_measure(rec, ref, data_range=1.0, reduction="none", **kwargs)


def latent_mse(z_rec: Tensor, z0: Tensor) -> Tensor:
    """Mean squared error per latent, (B,), in float32: the image-free measure of how well inversion round-trips."""
    if z_rec.shape != z0.shape:
        raise ValueError(f"latent_mse: shapes differ, {tuple(z_rec.shape)} vs {tuple(z0.shape)}")
    return (z_rec.float() - z0.float()).pow(2).flatten(1).mean(dim=1)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] → uint8 of the same shape, what a PNG of the reconstruction holds.

    ``((x.clamp(-1, 1) + 1) * 127.5).round()``, ties to even, as diffusers' ``postprocess`` + ``numpy_to_pil`` do.
    Non-finite pixels raise: the caller records the image as ``nonfinite`` instead of measuring a black image.
    """
    if not torch.isfinite(x).all():
        raise ValueError("to_uint8: the image has non-finite pixels; record status 'nonfinite' instead of measuring")
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_pair(rec: Tensor, ref: Tensor) -> None:
    if rec.shape != ref.shape or rec.ndim != 4:
        shapes = f"{tuple(rec.shape)} and {tuple(ref.shape)}"
        raise ValueError(f"metrics expect two (B, C, H, W) tensors of one shape, got {shapes}")


def _u8_to_unit(images: Tensor | np.ndarray, device: torch.device) -> Tensor:
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W) in [0, 1] on ``device``."""
    t = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"measure expects uint8 (B, H, W, 3) images, got {t.dtype} {tuple(t.shape)}")
    return t.to(device).permute(0, 3, 1, 2).float().div(255.0)


# --------------------------------------------------------------------------------------------------------------------
# LPIPS with an offline trunk
# --------------------------------------------------------------------------------------------------------------------


def default_trunk_path(net: str) -> Path:
    """Where torchvision would cache the trunk: ``torch.hub.get_dir()/checkpoints/<file>`` (follows $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net]


def load_lpips(
    net: str = "vgg", trunk_path: str | Path | None = None, random_trunk: bool = False, seed: int = 0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build ``lpips.LPIPS(net)`` without any download and say where its trunk came from.

    The module is always constructed with ``pnet_rand=True`` (so torchvision never reaches for the hub); the real
    trunk is then loaded from ``trunk_path`` or the hub cache, its ``features.N.*`` keys mapped onto lpips'
    ``sliceK.N.*``. With no file and ``random_trunk=True`` the random trunk stays, drawn from ``seed``.
    Returns the module (eval mode, no grad) and a description for the run manifest.
    """
    import lpips  # imported here: it pulls in torchvision, which only LPIPS needs

    if net not in TRUNK_FILES:
        raise ValueError(f"metrics.lpips.net: expected one of {sorted(TRUNK_FILES)}, got {net!r}")
    path = Path(trunk_path).expanduser() if trunk_path else default_trunk_path(net)
    if trunk_path and not path.is_file():
        raise LpipsTrunkMissingError(f"metrics.lpips.trunk_path: no file at {path}")
    if not path.is_file() and not random_trunk:
        raise LpipsTrunkMissingError(
            f"LPIPS-{net} needs the torchvision trunk {path.name}, not found at {path}. Download "
            f"{TRUNK_URL}{path.name} on a machine with network and copy it there (or set $TORCH_HOME, or "
            f"metrics.lpips.trunk_path=/path/{path.name}); metrics.lpips.random_trunk=true gives non-comparable values "
            f"for tests only."
        )

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)  # the random trunk (and nothing else: the linear heads come from the wheel)
        warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)

    info: dict[str, Any] = {
        "package": "lpips",
        "version": importlib.metadata.version("lpips"),
        "net": net,
        "input_range": "[-1, 1]",
    }
    if path.is_file():
        digest = file_sha256(path)
        model.net.load_state_dict(_trunk_state_dict(path, model.net.state_dict().keys()), strict=True)
        expected = TRUNK_FILES[net].rsplit("-", 1)[1].split(".")[0]
        info.update(trunk=str(path), trunk_sha256=digest, lpips_comparable=digest.startswith(expected))
        if not info["lpips_comparable"]:
            log.warning("LPIPS trunk %s has sha256 %s…, not torchvision's %s…: values marked not comparable",
                        path, digest[:8], expected)
    else:
        log.warning("LPIPS-%s uses a RANDOM trunk (seed %d): values are not comparable with published LPIPS", net, seed)
        info.update(trunk=f"random (seed {seed})", trunk_sha256=None, lpips_comparable=False)
    model.eval().requires_grad_(False)
    return model, info


def _trunk_state_dict(path: Path, lpips_keys: Any) -> dict[str, Tensor]:
    """torchvision ``features.N.param`` → lpips ``sliceK.N.param`` (lpips keeps torchvision's layer indices)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    remapped = {}
    for key in lpips_keys:
        match = re.fullmatch(r"slice\d+\.(\d+\..+)", key)
        source = f"features.{match.group(1)}" if match else key
        if source not in state:
            raise ValueError(f"metrics.lpips.trunk_path: {path} lacks {source!r}; expected a torchvision checkpoint")
        remapped[key] = state[source]
    return remapped


# --------------------------------------------------------------------------------------------------------------------
# The runner's entry point
# --------------------------------------------------------------------------------------------------------------------


class ImageMetrics:
    """The configured metrics, applied to uint8 reconstruction/reference pairs, one dict of floats per image.

    Built from the ``metrics`` config group (``configs/metrics/default.yaml``); ``describe()`` goes into ``run.json``.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | None = None,
        *,
        enabled: Sequence[str] | None = None,
        lpips: Mapping[str, Any] | None = None,
        ssim: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """``ImageMetrics(cfg.metrics)``, ``instantiate(cfg.metrics)`` or keywords; keywords win over ``cfg``."""
        cfg = dict(cfg or {})
        cfg.pop("_target_", None)
        stray = sorted(set(cfg) - {"enabled", "lpips", "ssim"})
        if stray:
            raise ValueError(f"metrics: unknown keys {stray}; allowed: enabled, lpips, ssim")
        enabled = enabled if enabled is not None else cfg.get("enabled", KNOWN_METRICS)
        lpips = lpips if lpips is not None else cfg.get("lpips")
        ssim = ssim if ssim is not None else cfg.get("ssim")

        self.enabled = tuple(str(m) for m in enabled)
        unknown = [m for m in self.enabled if m not in KNOWN_METRICS]
        if unknown:
            raise ValueError(f"metrics.enabled: unknown {unknown}; allowed: {list(KNOWN_METRICS)}")
        self.device = torch.device(device)
        self.ssim_params = {**SSIM_DEFAULTS, **dict(ssim or {})}
        unknown = sorted(set(self.ssim_params) - set(SSIM_DEFAULTS))
        if unknown:
            raise ValueError(f"metrics.ssim: unknown keys {unknown}; allowed: {sorted(SSIM_DEFAULTS)}")
        lp = {"net": "vgg", "random_trunk": False, "trunk_path": None, "seed": 0}
        unknown = sorted(set(lpips or {}) - set(lp))
        if unknown:
            raise ValueError(f"metrics.lpips: unknown keys {unknown}; allowed: {sorted(lp)}")
        lp.update(dict(lpips or {}))
        self.lpips_model: torch.nn.Module | None = None
        self.lpips_info: dict[str, Any] = {}
        if "lpips" in self.enabled:
            self.lpips_model, self.lpips_info = load_lpips(
                net=str(lp["net"]), trunk_path=lp["trunk_path"], random_trunk=bool(lp["random_trunk"]),
                seed=int(lp["seed"]),
            )
            self.lpips_model.to(self.device)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> ImageMetrics:
        """Same as ``ImageMetrics(cfg, device=device)``."""
        return cls(cfg, device=device)

    @property
    def lpips_comparable(self) -> bool:
        """False when LPIPS is off or its trunk is not torchvision's pretrained VGG/Alex/Squeeze checkpoint."""
        return bool(self.lpips_info.get("lpips_comparable", False))

    @torch.no_grad()
    def measure(self, rec_u8: Tensor | np.ndarray, ref_u8: Tensor | np.ndarray) -> list[dict[str, float]]:
        """uint8 (B, H, W, 3) reconstruction and reference → one ``{metric: value}`` per image."""
        rec, ref = _u8_to_unit(rec_u8, self.device), _u8_to_unit(ref_u8, self.device)
        _check_pair(rec, ref)
        values: dict[str, Tensor] = {}
        if "psnr" in self.enabled:
            values["psnr"] = psnr(rec, ref)
        if "ssim" in self.enabled:
            values["ssim"] = ssim(rec, ref, **self.ssim_params)
        if "lpips" in self.enabled:
            assert self.lpips_model is not None
            values["lpips"] = self.lpips_model(rec * 2 - 1, ref * 2 - 1).flatten()
        as_lists = {name: v.double().cpu().tolist() for name, v in values.items()}
        return [{name: float(vals[i]) for name, vals in as_lists.items()} for i in range(rec.shape[0])]

    def describe(self) -> dict[str, Any]:
        """Implementations, versions and parameters of every metric, for the run manifest."""
        return {
            "enabled": list(self.enabled),
            "input": "uint8 RGB (as a PNG holds it) → float32 [0, 1]; to_uint8 rounds half to even",
            "torchmetrics_version": importlib.metadata.version("torchmetrics"),
            "psnr": {"impl": "torchmetrics.functional.peak_signal_noise_ratio", "data_range": 1.0, "per": "image"},
            "ssim": {"impl": "torchmetrics.functional.structural_similarity_index_measure", "data_range": 1.0,
                     "border": "reflect-padded, full map averaged", "per": "image", **self.ssim_params},
            "lpips": dict(self.lpips_info) if self.lpips_model is not None else None,
            "lpips_comparable": self.lpips_comparable,
        }
