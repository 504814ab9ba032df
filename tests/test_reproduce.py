"""The headline command, `make reproduce-table1`, end to end on stand-ins: tiny-sd weights in the place of SD-1.4's
local folder and a synthetic COCO root, through the real app with the Makefile's exact overrides.

This is the path a user takes on a GPU machine: local weights found under MODEL_DIR, the COCO sample drawn and its
manifest written, five jobs (VAE ceiling + four methods), and Table 1 with the paper's numbers beside ours.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_coco import CAPTIONS, TEST, VAL, write_split

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def makefile_overrides(target: str, model_dir: Path, coco_dir: Path) -> list[str]:
    """The overrides a Makefile target passes to easyinv-bench, with MODEL_DIR and COCO_DIR filled in."""
    text = (REPO / "Makefile").read_text()
    # the recipe's $(RUN) line (RUN: easyinv-bench, or accelerate), after the checks for the user's data
    recipe = re.search(rf"^{target}:.*\n(?:\t.*\n)*?\t\$\(RUN\) (.*)$", text, re.M).group(1)
    recipe = recipe.replace("$(MODEL_DIR)", str(model_dir)).replace("$(COCO_DIR)", str(coco_dir))
    return recipe.replace("$(ARGS)", "").split()


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_reproduce_table1_on_stand_ins(tmp_path, tiny_model_cache):
    models = tmp_path / "models"
    shutil.copytree(tiny_model_cache / "tiny-models" / "tiny-sd", models / "stable-diffusion-v1-4")
    coco = tmp_path / "coco"
    write_split(coco, "val2017", VAL, CAPTIONS)
    write_split(coco, "test2017", TEST)
    args = makefile_overrides("reproduce-table1", models, coco)
    assert args[0] == "experiment=table1"
    extra = ["dataset.n=4", "model.resolution=64", "metrics.lpips.random_trunk=true", f"paths.root={tmp_path}"]
    out = subprocess.run([sys.executable, "-m", "easyinv", *args, *extra], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / ".cache" / "manifests" / "coco4-seed0.csv").is_file()
    table = pd.read_csv(tmp_path / "results" / "table1" / "table1.csv")
    assert sorted(table.method) == ["ddim", "easyinv", "fixed_point", "renoise", "vae_only"]
    assert (table.n_ok == 4).all() and (table.model == "sd14").all() and (table.precision == "fp16").all()
    # the stand-in is measured as model=sd14, so the paper's Table 1 numbers sit beside ours
    ddim = table.set_index("method").loc["ddim"]
    assert ddim.paper_psnr == 29.717 and ddim.nfe_mean == 100
    assert "Paper PSNR" in (tmp_path / "results" / "table1" / "table1.md").read_text()
    assert (tmp_path / "results" / "table1" / "figures" / "qualitative_grid.png").is_file()
