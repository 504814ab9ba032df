"""The DDIM schedule of a checkpoint: built from shipped PNDM / Euler configs, checked, and turned into the grid."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

from easyinv.models.scheduler import build_ddim_scheduler, check_schedule, grid_from_scheduler, scheduler_facts
from easyinv.models.tiny import SD14_SCHEDULER, SDXL_SCHEDULER


@pytest.mark.parametrize(("shipped", "family"), [(SD14_SCHEDULER, "sd1"), (SDXL_SCHEDULER, "sdxl")])
def test_ddim_from_shipped_config(shipped, family):
    scheduler = build_ddim_scheduler(shipped, family)
    assert isinstance(scheduler, DDIMScheduler)
    assert scheduler.config.clip_sample is False and scheduler.config.steps_offset == 1
    assert float(scheduler.final_alpha_cumprod) == float(scheduler.alphas_cumprod[0])  # set_alpha_to_one=False
    # the schedule itself is the one the shipped scheduler class computes
    native = (PNDMScheduler if family == "sd1" else EulerDiscreteScheduler).from_config(shipped)
    assert torch.equal(scheduler.alphas_cumprod, native.alphas_cumprod)
    facts = scheduler_facts(scheduler)
    assert facts["class"] == "DDIMScheduler" and facts["beta_schedule"] == "scaled_linear"
    assert not any(k.startswith("_") for k in facts)


def test_clip_sample_is_forced_off():
    scheduler = build_ddim_scheduler({**SD14_SCHEDULER, "clip_sample": True}, "sd1")
    assert scheduler.config.clip_sample is False


@pytest.mark.parametrize(
    ("key", "value"),
    [("steps_offset", 0), ("set_alpha_to_one", True), ("beta_schedule", "linear"), ("beta_end", 0.02),
     ("prediction_type", "v_prediction"), ("timestep_spacing", "trailing"), ("num_train_timesteps", 500)],
)
def test_wrong_schedule_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=rf"model\.scheduler: {key} must be") as err:
        build_ddim_scheduler({**SD14_SCHEDULER, key: value}, "sd1")
    assert "\n" not in str(err.value)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="model.family"):
        check_schedule(SD14_SCHEDULER, "sd3")


def test_grid_facts_at_50_steps():
    scheduler = build_ddim_scheduler(SD14_SCHEDULER, "sd1")
    grid = grid_from_scheduler(scheduler, 50)
    ac = scheduler.alphas_cumprod
    assert grid.T == 50
    assert grid.timesteps[:2] == (1, 21) and grid.timesteps[-1] == 981
    assert grid.alpha_src[0] == float(ac[0])                      # final_alpha_cumprod below timestep 0
    assert grid.alpha_src[1:] == grid.alpha_tgt[:-1]              # each step starts where the previous ended
    assert grid.alpha_tgt[-1] == float(ac[981])
    assert abs(grid.alpha_tgt[-1] - 0.00578) < 5e-6               # algorithms.md notation table
