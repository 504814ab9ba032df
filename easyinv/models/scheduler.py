"""The DDIM noise schedule of a Stable Diffusion checkpoint, built explicitly and checked, never silently fixed.

Checkpoints ship other schedulers (SD-1.4: PNDM, SD-XL: Euler) whose configs carry the training schedule. We build a
``DDIMScheduler`` from that config, force ``clip_sample=False`` and refuse any value that would change the grid of
algorithms.md §1.2 (diffusers pipelines rewrite such values quietly; ecosystem.md §2.1). The scheduler object is used
only for its ``alphas_cumprod`` and ``final_alpha_cumprod``: stepping is done by :func:`easyinv.inversion.ddim_step`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from diffusers import DDIMScheduler

from easyinv.inversion import Grid

__all__ = ["EXPECTED_SCHEDULE", "build_ddim_scheduler", "check_schedule", "grid_from_scheduler", "scheduler_facts"]

log = logging.getLogger(__name__)

# What SD-1.x and SD-XL were trained with (scheduler_config.json of CompVis/stable-diffusion-v1-4 and
# stabilityai/stable-diffusion-xl-base-1.0). Any other value changes the grid or the meaning of eps.
_COMMON: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "trained_betas": None,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
    "thresholding": False,
    "clip_sample": False,
}
EXPECTED_SCHEDULE: dict[str, dict[str, Any]] = {"sd1": dict(_COMMON), "sdxl": dict(_COMMON)}


def check_schedule(config: Mapping[str, Any], family: str, origin: str = "scheduler config") -> None:
    """Raise a one-line ``ValueError`` naming the first key whose value differs from the family's training schedule."""
    if family not in EXPECTED_SCHEDULE:
        raise ValueError(f"model.family must be one of {sorted(EXPECTED_SCHEDULE)}, got {family!r}")
    for key, expected in EXPECTED_SCHEDULE[family].items():
        value = config.get(key)
        same = (
            math.isclose(float(value), expected, rel_tol=1e-9)
            if isinstance(expected, float) and isinstance(value, int | float)
            else value == expected
        )
        if not same:
            raise ValueError(f"model.scheduler: {key} must be {expected!r} for {family}, got {value!r} ({origin})")


def build_ddim_scheduler(config: Mapping[str, Any], family: str, origin: str = "scheduler config") -> DDIMScheduler:
    """``DDIMScheduler`` from a checkpoint's scheduler config (any scheduler class), ``clip_sample`` forced off."""
    scheduler = DDIMScheduler.from_config(dict(config), clip_sample=False)
    check_schedule(scheduler.config, family, origin)
    log.info("DDIM scheduler for %s (%s): %s", family, origin, dict(scheduler.config))
    return scheduler


def grid_from_scheduler(scheduler: DDIMScheduler, steps: int) -> Grid:
    """The inversion grid for ``steps`` steps: same alphas, offset and final ᾱ as the scheduler."""
    return Grid.from_schedule(
        scheduler.alphas_cumprod,
        steps,
        steps_offset=int(scheduler.config.steps_offset),
        final_alpha_cumprod=float(scheduler.final_alpha_cumprod),
    )


def scheduler_facts(scheduler: DDIMScheduler) -> dict[str, Any]:
    """JSON-friendly scheduler config for the run manifest (private ``_`` keys dropped)."""
    facts = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    facts["class"] = type(scheduler).__name__
    facts["final_alpha_cumprod"] = float(scheduler.final_alpha_cumprod)
    return facts
