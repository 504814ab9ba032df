"""Small test doubles shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor

from easyinv.inversion import Denoiser, Grid, StepContext, ddim_step
from easyinv.runner import Job
from easyinv.validation import CONFIG_DIR


@dataclass
class PlainDDIM:
    """Vanilla DDIM inversion step, written here so model tests do not depend on ``baselines/``."""

    num_steps: int
    name: str = "ddim-test"
    blend: None = None

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        return ddim_step(z, eps(ctx.z_query, grid.timesteps[i]), grid.alpha_src[i], grid.alpha_tgt[i])


class ConstantEps(Denoiser):
    """ε(z, t) = c whatever z and t: makes every inversion step an affine map computable by hand."""

    def __init__(self, c: Tensor):
        super().__init__(c.shape[0])
        self.c = c

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return self.c[rows].clone(), 1




def make_cfg(root: Path, *overrides: str) -> DictConfig:
    """The real config composed with the compose API: no experiment preset, results under ``root``, CPU, offline."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=[
            "experiment=none", f"paths.root={root}", "metrics.lpips.random_trunk=true", "device=cpu", *overrides,
        ])


def run_job(root: Path, *overrides: str, name: str = "job") -> Path:
    """Run one job in-process into ``root/runs/<name>``; returns that directory."""
    run_dir = root / "runs" / name
    Job(make_cfg(root, *overrides), run_dir).run()
    return run_dir
