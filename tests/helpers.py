"""Small test doubles shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor

from easyinv.inversion import Denoiser, Grid, StepContext, ddim_step
from easyinv.run.reconstruction import Job
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


def make_mini_piebench(root: Path) -> Path:
    """A generated PIE-Bench in the real layout (never real PIE-Bench files): five 512×512 JPEGs of edit types
    0, 1, 1, 2 and 9, one entry without a mask, one 256×256 image, and run-length masks written by hand."""
    import json

    import numpy as np
    from PIL import Image

    images = root / "annotation_images"
    entries = {}
    specs = [("000000000000", "0_random_140/000000000000.jpg", "0", 512),
             ("111000000000", "1_change_object_80/1_artificial/1_animal/111000000000.jpg", "1", 512),
             ("111000000001", "1_change_object_80/1_artificial/1_animal/111000000001.jpg", "1", 512),
             ("211000000000", "2_add_object_80/1_artificial/1_animal/211000000000.jpg", "2", 512),
             ("900000000000", "9_change_style_80/900000000000.jpg", "9", 256)]
    yy, xx = np.mgrid[0:512, 0:512]
    for n, (key, rel, kind, size) in enumerate(specs):
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern = 127 + 100 * np.sin((xx + 37 * n) / 23.0)[..., None] * np.cos(yy / (17.0 + n))[..., None]
        rgb = np.clip(pattern * np.array([1.0, 0.8, 0.6]), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).resize((size, size)).save(path, quality=95)
        entries[key] = {"image_path": rel, "original_prompt": f"a [cat] sitting on a mat {n}",
                        "editing_prompt": f"a [dog] sitting on a mat {n}", "editing_instruction": "make it a dog",
                        "editing_type_id": kind, "blended_word": "cat dog" if n % 2 == 0 else "",
                        "mask": [512 * 100 + 100, 50, 512 * 101 + 100, 50]}
    del entries["211000000000"]["mask"]  # a malformed entry: skipped with its reason
    (root / "mapping_file.json").write_text(json.dumps(entries))
    return root
