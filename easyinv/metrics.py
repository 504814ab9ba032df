"""Per-image metrics, each declared once: a :class:`Metric` holds its function and every fact a report needs.

A declaration (:func:`declare`; the built-in ones are at the end of this module) names the record key, the printed
label, header and decimals, the direction (``higher_is_better``, as torchmetrics' metrics say it), whether it is a
Table-1 column, whether it joins the paired comparisons with a baseline, and plot bounds. ``ImageMetrics`` computes
the declared metrics a config enables (``metrics.enabled``), the record reader gives every declared metric a column
(empty in records written before it existed), and every table, figure, plot title, CSV and report.html column of
the report layer is derived from the declarations. Adding a metric (L1, say) is one function, one ``declare(...)``
here and its name in ``configs/metrics/default.yaml``'s ``enabled``.

Conventions (ecosystem.md §3.4): metrics compare the reconstruction *as a PNG would hold it* (uint8) with the
preprocessed reference, both mapped to float [0, 1]; every value is per image, and averages are taken later, in the
report (a pooled PSNR over a batch is a different, larger-looking number).

The LPIPS trunk never comes from the network. It is read from the torch hub cache or a configured file, mapped onto
the ``lpips`` module's layout and loaded; without it we fail with a message naming the file, unless the config asks for
a seeded random trunk (tests, demo), whose values are flagged as not comparable with published numbers.

torch, torchmetrics and lpips are imported where a metric is computed, not with this module: the report layer reads
the declarations without loading them.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from easyinv.checksums import file_sha256

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "EDIT_METRICS",
    "METRICS",
    "TRUNK_FILES",
    "ImageMetrics",
    "LpipsDistance",
    "LpipsTrunkMissingError",
    "Metric",
    "declare",
    "declared",
    "image_metrics",
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
LPIPS_DEFAULTS: dict[str, Any] = {"net": "vgg", "random_trunk": False, "trunk_path": None, "seed": 0}

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


# --------------------------------------------------------------------------------------------------------------------
# The declaration
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric's facts, declared once; the harness and the report read them from here.

    - ``name``: the record key (and the name in ``metrics.enabled``, the CSV's ``<name>_mean`` ... columns);
    - ``label``: its short printed name (``LPIPS``: the ``Paper LPIPS``, ``Δ LPIPS vs ddim`` and Pairs headers);
    - ``higher_is_better``: the direction (torchmetrics' attribute): the header's arrow, the win rate, the best
      configuration of a sweep, the heat maps' colours;
    - ``decimals``: printed decimals (tables, Δ cells, report.html); ``scale``: values are printed times it (the
      editing tables' ×10³), which the header says;
    - ``fn``: the per-image function, ``fn(rec, ref, **params) -> (B,)`` on float (B, 3, H, W) images in [0, 1], or a
      class built once as ``fn(device=..., **params)`` whose instances are that function (a metric with a network:
      LPIPS); None for a metric another part computes (``latent_mse``: the job, on latents; the editing metrics:
      ``easyinv.editing.metrics``). ``params``: the keys of its config section (``metrics.<name>``) and their
      defaults; ``about``: what ``run.json`` says of its implementation;
    - ``table1``: a column of Table 1 (and of a sweep's table); every declared metric is in the CSVs;
    - ``paired``: compared per image with the baseline (``pair_<name>_*`` CSV columns, and a Δ column where it is a
      Table-1 column). Holm's correction runs per metric across the rows compared with one baseline, so a metric
      that joins never changes another's p-values; the default is False, so joining is a choice written here;
    - ``comparable``: a boolean record column saying whether a value is comparable with published numbers (marked †
      where it is not);
    - ``unit``: shown in plot titles (``PSNR (dB) ↑``); ``plot_lower_bound``, ``plot_upper_bound``: axis limits of
      its plots (torchmetrics' names), None: matplotlib's;
    - ``header``: the table header when it is not ``label`` (× scale) and the arrow.
    """

    name: str
    label: str
    higher_is_better: bool
    decimals: int
    fn: Callable[..., Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    about: Mapping[str, Any] = field(default_factory=dict)
    table1: bool = False
    paired: bool = False
    comparable: str | None = None
    unit: str | None = None
    scale: float = 1.0
    plot_lower_bound: float | None = None
    plot_upper_bound: float | None = None
    header: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"Metric name {self.name!r}: lower-case letters, digits and _ (a record key)")
        if not isinstance(self.decimals, int) or self.decimals < 0:
            raise ValueError(f"Metric {self.name}: decimals must be a whole number ≥ 0, got {self.decimals!r}")

    @property
    def lower_is_better(self) -> bool:
        return not self.higher_is_better

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def heading(self) -> str:
        """The table header: ``LPIPS ↓``, ``Structure ×10³ ↓`` (scaled), or the declared ``header``."""
        if self.header is not None:
            return self.header
        power = round(math.log10(self.scale)) if self.scale > 0 else 0
        scaled = f" ×10{str(power).translate(_SUPERSCRIPT)}" if self.scale != 1 and 10.0**power == self.scale else (
            f" ×{self.scale:g}" if self.scale != 1 else "")
        return f"{self.label}{scaled} {self.arrow}"

    @property
    def title(self) -> str:
        """A plot's title or axis label: ``PSNR (dB) ↑``."""
        return f"{self.label} ({self.unit}) {self.arrow}" if self.unit else self.heading

    @property
    def computed(self) -> bool:
        """Whether :class:`ImageMetrics` computes it (it has a function)."""
        return self.fn is not None


METRICS: dict[str, Metric] = {}  # the reconstruction metrics, in the order of every table's columns


def declare(metric: Metric) -> Metric:
    """Add a reconstruction metric to :data:`METRICS` (its place: after those declared before it); a name already
    declared with other facts is an error."""
    known = METRICS.get(metric.name)
    if known is not None and known != metric:
        raise ValueError(f"metric {metric.name!r} is already declared, with other facts: {known}")
    METRICS[metric.name] = metric
    return metric


_PLUGINS: dict[str, str] = {}  # entry-point name → "" (declared) or why a plugin's metric was left out


def _declare_plugins() -> None:
    """Declare, once per process and after the built-in ones, each installed plugin's metric (an entry point of
    ``easyinv.metrics`` whose object is a :class:`Metric` of the same name). A plugin that fails to import, or
    whose name is taken, is one warning line and left out; choosing it later is an error naming it."""
    from easyinv.plugins import GROUPS, describe, entry_points, warn_once

    for ep in entry_points(GROUPS["metrics"]):
        if ep.name in _PLUGINS:
            continue
        if ep.name in METRICS:
            _PLUGINS[ep.name] = f"metric {ep.name}: {describe(ep)} declares a name already declared; ignored"
        else:
            try:
                metric = ep.load()
                if not isinstance(metric, Metric) or metric.name != ep.name:
                    raise TypeError(f"its object is not an easyinv.metrics.Metric named {ep.name!r}")
                declare(metric)
                _PLUGINS[ep.name] = ""
                continue
            except Exception as e:  # noqa: BLE001 - a plugin's failure is one line, never the harness's
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                _PLUGINS[ep.name] = f"metric {ep.name}: {describe(ep)} cannot be declared ({reason})"
        warn_once(f"easyinv: {_PLUGINS[ep.name]}")


def declared(names: Iterable[str] | None = None) -> tuple[Metric, ...]:
    """The declared reconstruction metrics, in declaration order (only ``names`` with them, each known);
    installed plugins' metrics included."""
    _declare_plugins()
    if names is None:
        return tuple(METRICS.values())
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"undeclared metrics {unknown}; declared: {list(METRICS)}{_plugin_reasons(unknown)}")
    return tuple(METRICS[n] for n in names)


def _plugin_reasons(names: Iterable[str]) -> str:
    """Why plugin metrics among ``names`` are not declared (empty when none is a plugin's)."""
    reasons = [_PLUGINS[n] for n in names if _PLUGINS.get(n)]
    return f" ({'; '.join(reasons)})" if reasons else ""


def image_metrics() -> tuple[Metric, ...]:
    """The declared metrics :class:`ImageMetrics` computes (those with a function), plugins' included."""
    _declare_plugins()
    return tuple(m for m in METRICS.values() if m.computed)


class LpipsTrunkMissingError(FileNotFoundError):
    """The LPIPS trunk checkpoint is not on disk (and downloading is never attempted)."""


# --------------------------------------------------------------------------------------------------------------------
# Functional metrics on float images in [0, 1], (B, 3, H, W)
# --------------------------------------------------------------------------------------------------------------------


def psnr(rec: Tensor, ref: Tensor) -> Tensor:
    """PSNR in dB per image, (B,), for float images in [0, 1] (data_range 1); identical images give +inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(rec, ref)
    return peak_signal_noise_ratio(rec, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(rec: Tensor, ref: Tensor, **params: Any) -> Tensor:
    """SSIM per image, (B,): torchmetrics' reflect-padded map averaged over the whole image, data_range 1.

    ``params`` override :data:`SSIM_DEFAULTS` (``gaussian_kernel``, ``kernel_size``, ``sigma``, ``k1``, ``k2``).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

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
    import torch

    if not torch.isfinite(x).all():
        raise ValueError("to_uint8: the image has non-finite pixels; record status 'nonfinite' instead of measuring")
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_pair(rec: Tensor, ref: Tensor) -> None:
    if rec.shape != ref.shape or rec.ndim != 4:
        shapes = f"{tuple(rec.shape)} and {tuple(ref.shape)}"
        raise ValueError(f"metrics expect two (B, C, H, W) tensors of one shape, got {shapes}")


def _u8_to_unit(images: Tensor | np.ndarray, device: torch.device) -> Tensor:
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W) in [0, 1] on ``device``."""
    import torch

    t = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"measure expects uint8 (B, H, W, 3) images, got {t.dtype} {tuple(t.shape)}")
    return t.to(device).permute(0, 3, 1, 2).float().div(255.0)


# --------------------------------------------------------------------------------------------------------------------
# LPIPS with an offline trunk
# --------------------------------------------------------------------------------------------------------------------


def default_trunk_path(net: str) -> Path:
    """Where torchvision would cache the trunk: ``torch.hub.get_dir()/checkpoints/<file>`` (follows $TORCH_HOME)."""
    import torch

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
    import torch

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
    import torch

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


class LpipsDistance:
    """LPIPS as a per-image function: the network is loaded once, offline (:func:`load_lpips`), and called on the
    [0, 1] images mapped to [-1, 1]. ``info`` describes the trunk for ``run.json``."""

    def __init__(self, device: str | torch.device = "cpu", **params: Any) -> None:
        unknown = sorted(set(params) - set(LPIPS_DEFAULTS))
        if unknown:
            raise ValueError(f"metrics.lpips: unknown keys {unknown}; allowed: {sorted(LPIPS_DEFAULTS)}")
        lp = {**LPIPS_DEFAULTS, **params}
        self.model, self.info = load_lpips(net=str(lp["net"]), trunk_path=lp["trunk_path"],
                                           random_trunk=bool(lp["random_trunk"]), seed=int(lp["seed"]))
        self.model.to(device)

    def __call__(self, rec: Tensor, ref: Tensor) -> Tensor:
        _check_pair(rec, ref)
        return self.model(rec * 2 - 1, ref * 2 - 1).flatten()


class ImageMetrics:
    """The configured metrics, applied to uint8 reconstruction/reference pairs, one dict of floats per image.

    Built from the ``metrics`` config group (``configs/metrics/default.yaml``): ``enabled`` names declared metrics
    (:func:`image_metrics`), and a metric with ``params`` may have a section of its own (``lpips:``, ``ssim:``);
    ``describe()`` goes into ``run.json``.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | None = None,
        *,
        enabled: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        **sections: Mapping[str, Any] | None,
    ) -> None:
        """``ImageMetrics(cfg.metrics)``, ``instantiate(cfg.metrics)`` or keywords (``enabled=``, ``lpips={...}``);
        keywords win over ``cfg``."""
        import torch

        cfg = dict(cfg or {})
        cfg.pop("_target_", None)
        available = image_metrics()
        configurable = [m.name for m in available if m.params]
        stray = sorted(set(cfg) - {"enabled", *configurable}) + sorted(set(sections) - set(configurable))
        if stray:
            raise ValueError(f"metrics: unknown keys {stray}; allowed: {', '.join(['enabled', *configurable])}")
        enabled = enabled if enabled is not None else cfg.get("enabled", [m.name for m in available])
        self.enabled = tuple(str(m) for m in enabled)
        unknown = [m for m in self.enabled if m not in {a.name for a in available}]
        if unknown:
            raise ValueError(f"metrics.enabled: unknown {unknown}; allowed: {[m.name for m in available]}"
                             f"{_plugin_reasons(unknown)}")
        self.device = torch.device(device)
        self.params: dict[str, dict[str, Any]] = {}
        for metric in available:
            given = sections.get(metric.name)
            given = dict(given if given is not None else cfg.get(metric.name) or {})
            unknown = sorted(set(given) - set(metric.params))
            if unknown:
                raise ValueError(f"metrics.{metric.name}: unknown keys {unknown}; allowed: {sorted(metric.params)}")
            self.params[metric.name] = {**metric.params, **given}
        self.scorers: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
        for metric in declared(self.enabled):
            assert metric.fn is not None
            if inspect.isclass(metric.fn):  # a metric with a network: built once, here (a missing file fails now)
                self.scorers[metric.name] = metric.fn(device=self.device, **self.params[metric.name])
            else:
                self.scorers[metric.name] = partial(metric.fn, **self.params[metric.name])

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> ImageMetrics:
        """Same as ``ImageMetrics(cfg, device=device)``."""
        return cls(cfg, device=device)

    @property
    def ssim_params(self) -> dict[str, Any]:
        return self.params["ssim"]

    @property
    def lpips_model(self) -> torch.nn.Module | None:
        """The LPIPS network (None when LPIPS is off)."""
        scorer = self.scorers.get("lpips")
        return scorer.model if isinstance(scorer, LpipsDistance) else None

    @property
    def lpips_info(self) -> dict[str, Any]:
        scorer = self.scorers.get("lpips")
        return dict(scorer.info) if isinstance(scorer, LpipsDistance) else {}

    @property
    def lpips_comparable(self) -> bool:
        """False when LPIPS is off or its trunk is not torchvision's pretrained VGG/Alex/Squeeze checkpoint."""
        return bool(self.lpips_info.get("lpips_comparable", False))

    def comparable(self) -> dict[str, bool]:
        """The record flag of every enabled metric that declares one (``Metric.comparable``): whether its network
        is the published one (the scorer's ``info`` says so under the flag's name), so the report may set its values
        beside published numbers."""
        declared = {m.name: m for m in image_metrics()}
        return {declared[name].comparable: bool(getattr(self.scorers[name], "info", {}).get(declared[name].comparable))
                for name in self.enabled if declared[name].comparable}

    def measure(self, rec_u8: Tensor | np.ndarray, ref_u8: Tensor | np.ndarray) -> list[dict[str, float | bool]]:
        """uint8 (B, H, W, 3) reconstruction and reference → one ``{metric: value}`` per image (``enabled``'s order),
        with the metrics' comparable flags (:meth:`comparable`), which the records carry to the report."""
        import torch

        rec, ref = _u8_to_unit(rec_u8, self.device), _u8_to_unit(ref_u8, self.device)
        _check_pair(rec, ref)
        with torch.no_grad():
            values = {name: self.scorers[name](rec, ref) for name in self.enabled}
        as_lists = {name: v.double().cpu().tolist() for name, v in values.items()}
        flags = self.comparable()
        return [{**{name: float(vals[i]) for name, vals in as_lists.items()}, **flags} for i in range(rec.shape[0])]

    def describe(self) -> dict[str, Any]:
        """Implementations, versions and parameters of every metric, for the run manifest: a metric with a network
        says what it loaded (None when it is off), the others their implementation and parameters."""
        out: dict[str, Any] = {
            "enabled": list(self.enabled),
            "input": "uint8 RGB (as a PNG holds it) → float32 [0, 1]; to_uint8 rounds half to even",
            "torchmetrics_version": importlib.metadata.version("torchmetrics"),
        }
        for metric in image_metrics():
            scorer = self.scorers.get(metric.name)
            if inspect.isclass(metric.fn):
                out[metric.name] = dict(getattr(scorer, "info", {})) if scorer is not None else None
            else:
                out[metric.name] = {**metric.about, **self.params[metric.name]}
        out["lpips_comparable"] = self.lpips_comparable
        return out


# --------------------------------------------------------------------------------------------------------------------
# The declarations: the reconstruction metrics in the order of the tables' columns (and the CSVs'). Table 1 shows
# LPIPS, SSIM and PSNR; the paired comparisons (and their Holm correction, per metric) cover these four.
# --------------------------------------------------------------------------------------------------------------------

declare(Metric("lpips", "LPIPS", higher_is_better=False, decimals=3, fn=LpipsDistance, params=LPIPS_DEFAULTS,
               table1=True, paired=True, comparable="lpips_comparable"))
declare(Metric("ssim", "SSIM", higher_is_better=True, decimals=3, fn=ssim, params=SSIM_DEFAULTS,
               about={"impl": "torchmetrics.functional.structural_similarity_index_measure", "data_range": 1.0,
                      "border": "reflect-padded, full map averaged", "per": "image"},
               table1=True, paired=True))
declare(Metric("psnr", "PSNR", higher_is_better=True, decimals=3, fn=psnr, unit="dB",
               about={"impl": "torchmetrics.functional.peak_signal_noise_ratio", "data_range": 1.0, "per": "image"},
               table1=True, paired=True))
declare(Metric("latent_mse", "latent MSE", higher_is_better=False, decimals=5, paired=True))  # computed by the job

# PIE-Bench's editing metrics as the editing tables print them (computed by easyinv.editing.metrics.EditMetrics,
# whose keys they are); ``comparable``: the record's flag of real (not random) weights.
EDIT_METRICS: tuple[Metric, ...] = (
    Metric("structure_distance", "Structure", False, 2, scale=1e3, comparable="structure_comparable"),
    Metric("psnr_unedit_part", "BG PSNR", True, 2),
    Metric("lpips_unedit_part", "BG LPIPS", False, 2, scale=1e3, comparable="bg_lpips_comparable"),
    Metric("mse_unedit_part", "BG MSE", False, 2, scale=1e4),
    Metric("ssim_unedit_part", "BG SSIM", True, 2, scale=1e2),
    Metric("clip_similarity_target_image", "CLIP whole", True, 2, comparable="clip_comparable"),
    Metric("clip_similarity_target_image_edit_part", "CLIP edited", True, 2, comparable="clip_comparable"),
    Metric("clip_similarity_source_image", "CLIP source", True, 2, comparable="clip_comparable"),  # a sanity check
)
