"""Config checks that must fail in one line, before any dataset is read or any weight is loaded: the base layer's
part, checks of config values alone (dtypes, devices, sizes, fast paths, group choices on the command line).

Every job kind runs all of its checks through one entry point, ``easyinv.run.job_parts.check_config``, which calls
:func:`check_run_config` first and then the checks that need the method, dataset and editor objects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from easyinv.locations import CONFIG_DIR
from easyinv.plugins import PluginError, check_choice, config_sources, group_options

GROUPS = ("model", "method", "precision", "dataset", "metrics", "experiment", "paths", "job", "edit", "edit_metrics")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp64": "float64"}
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
FALLBACKS = ("none", "fp32")  # precision.fallback: what a non-finite image is retried in


def flat_dirname(name: str) -> str:
    """``hydra.job.override_dirname`` as one folder name (configs/config.yaml's ``${flat_dirname:...}``): a
    path-valued override such as ``model.load.source=/data/FLUX.1-schnell`` would nest folders in the run directory.
    Each ``/`` becomes ``_`` and, only then, 8 hex of a hash of the original are appended (as ``run.files.safe_name``
    does), so two overrides never share a folder; a name without ``/`` is unchanged, so existing runs resume."""
    text = str(name)
    if "/" not in text:
        return text
    return f"{text.replace('/', '_')}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


# registered on import: everything that composes this project's configs imports this module (CONFIG_DIR)
OmegaConf.register_new_resolver("flat_dirname", flat_dirname, replace=True)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the valid choices."""


def dirname_exclude_keys(config_dir: Path = CONFIG_DIR) -> tuple[str, ...]:
    """The override keys a run directory's name leaves out, as ``configs/config.yaml`` lists them
    (``hydra.job.config.override_dirname.exclude_keys``): keys that change no record's numbers. The one list:
    ``easyinv.run.records.HASH_EXCLUDE`` is derived from it. Read from the file, not from a composed config, so a
    command line that changes Hydra's list changes no config hash."""
    cfg = OmegaConf.load(config_dir / "config.yaml")
    return tuple(str(key) for key in cfg.hydra.job.config.override_dirname.exclude_keys)


def group_choices(group: str, config_dir: Path | None = None) -> list[str]:
    """Option names of a config group (``<group>/<name>.yaml``), sorted: of the built-in configs and every
    installed plugin's (``easyinv.plugins.config_sources``), or of ``config_dir`` alone when given."""
    if config_dir is not None:
        return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))
    return list(group_options(group))


def check_cli_choices(argv: Sequence[str], config_dir: Path | None = None) -> None:
    """Reject ``group=unknown`` overrides with one line naming the valid choices (Hydra prints a screenful), and a
    chosen plugin name its plugin cannot serve (``easyinv.plugins.check_choice``). ``config_dir``: only that folder's
    choices (default: the built-in configs and every plugin's)."""
    folders = [Path(config_dir)] if config_dir is not None else [s.path for s in config_sources()]
    for arg in argv:
        m = re.fullmatch(r"[+~]*([A-Za-z_/]+)=(.*)", arg)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        group = key
        if group not in GROUPS and not (key.startswith("method/") and any((f / key).is_dir() for f in folders)):
            continue
        if "(" in value or not value:  # sweeper functions such as choice(...) or glob(...): Hydra checks those
            continue
        valid = group_choices(group, config_dir)
        for choice in value.split(","):
            if choice == "null":  # deselects the group (edit=null: the reconstruction job)
                continue
            if choice not in valid:
                raise ConfigError(f"{key}={choice} is not a valid choice; valid: {', '.join(valid)}")
            if config_dir is None:
                try:
                    check_choice(group, choice)
                except PluginError as e:
                    raise ConfigError(str(e)) from None


def parse_dtype(name: str | torch.dtype, key: str = "precision") -> torch.dtype:
    """``"float16"`` (or ``"fp16"``, ``torch.float16``) → ``torch.float16``; a wrong name fails naming the key.

    The one dtype map of the project: the precision group, the SD model and the Gaussian model all use it.
    """
    if isinstance(name, torch.dtype):
        return name
    text = _DTYPE_ALIASES.get(str(name).lower(), str(name).lower())
    if text not in DTYPES:
        raise ConfigError(f"{key}={name} is not a valid dtype; valid: {', '.join(DTYPES)}")
    return DTYPES[text]


def check_fast_paths(compile: str, channels_last: bool) -> None:  # noqa: A002 - the config key's name
    """Validate ``model.compile`` / ``model.channels_last`` on every device, so a typo fails before a GPU job."""
    if compile not in COMPILE_MODES:
        raise ConfigError(f"model.compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    if not isinstance(channels_last, bool):
        raise ConfigError(f"model.channels_last must be true or false, got {channels_last!r}")


def check_run_config(cfg: DictConfig) -> None:
    """Protocol keys that no constructor checks (the method and dataset validate themselves)."""
    for part in ("unet", "vae", "latent"):
        parse_dtype(cfg.precision[part], f"precision.{part}")
    fallback = str(cfg.precision.get("fallback", "none"))
    if fallback not in FALLBACKS:
        raise ConfigError(f"precision.fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    check_fast_paths(str(cfg.model.get("compile", "none")), cfg.model.get("channels_last", False))
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    for phase in ("invert", "reconstruct"):
        if float(cfg.guidance[phase]) < 0:
            raise ConfigError(f"guidance.{phase} must be >= 0, got {cfg.guidance[phase]}")
    if cfg.png_limit is not None and int(cfg.png_limit) < 0:
        raise ConfigError(f"png_limit must be null or >= 0, got {cfg.png_limit}")
    device = str(cfg.device)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"device={device} is not valid; valid: auto, cpu, cuda, cuda:N, mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is available; use device=cpu or device=auto")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None) → the first CUDA device when there is one, else the CPU."""
    if name is None or str(name) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
