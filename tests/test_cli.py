"""The real ``easyinv-bench`` app in a subprocess: the embedded default (demo multirun + report), one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easyinv", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # the whole demo in a child process (~40 s); make test-slow (CI) runs it; its protocol runs in
# process in tests/test_runner.py (the Gaussian model, four methods)
def test_default_experiment_runs_the_demo_protocol_and_writes_the_report(tmp_path):
    out = bench("dataset.limit=2", f"paths.root={tmp_path}", cwd=tmp_path)  # no experiment given: demo
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "results" / "runs" / "demo").iterdir() if p.is_dir())
    assert runs == [f"method={m}" for m in sorted(["vae_only", "ddim", "renoise", "fixed_point", "easyinv"])]
    report = tmp_path / "results" / "runs" / "demo_report"  # git-ignored: the committed results/demo is the reference
    table = pd.read_csv(report / "table1.csv")
    assert len(table) == 5 and (table.n_ok == 2).all()
    assert "## Table 1" in out.stdout  # the table is printed at the end
    assert f"no reference table at {tmp_path / 'results' / 'demo' / 'table1.csv'}" in out.stdout
    assert (report / "figures").is_dir() and not (tmp_path / "results" / "demo").exists()
    again = bench("dataset.limit=2", f"paths.root={tmp_path}", cwd=tmp_path)  # resumes: nothing left to do
    assert again.returncode == 0 and "0 to do" in again.stderr + again.stdout


def test_unknown_choice_is_one_line_naming_the_valid_ones(tmp_path):
    out = bench("experiment=none", "method=easyinvv", cwd=tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "method=easyinvv" in lines[0] and "easyinv" in lines[0] and "ddim" in lines[0]


def test_invalid_value_is_one_line_before_any_model_loads(tmp_path):
    out = bench("experiment=none", "model=sd14", "paths.models=/nonexistent", "method=easyinv", "method.eta=1.5",
                f"paths.root={tmp_path}", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == "easyinv-bench: method.eta must be in [0, 1], got 1.5"


def test_missing_model_folder_is_one_clear_line(tmp_path):
    out = bench("experiment=none", "model=sd14", f"paths.models={tmp_path}/models", "dataset.limit=1",
                "metrics.lpips.random_trunk=true", f"paths.root={tmp_path}", cwd=tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert f"{tmp_path}/models/stable-diffusion-v1-4" in last and "huggingface-cli download" in last
    assert "Traceback" not in out.stderr


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_another_model_on_the_default_command_runs_or_names_what_is_missing(tmp_path, tiny_model_cache):
    """`easyinv-bench model=X` keeps the demo protocol with another model: the tiny models run (they are built
    offline), a model without weights stops in one line naming its folder and how to get it. Both failed with
    "unexpected keyword argument 'fit_from'" (the demo's Gaussian setting reached every model's loader)."""
    out = bench("model=tiny-sd,tiny-flux", "method=ddim", "method.num_steps=2", "dataset.limit=1",
                f"paths.root={tmp_path}", f"paths.cache={tiny_model_cache}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = tmp_path / "results" / "runs" / "demo"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [
        f"method.num_steps=2,method=ddim,model={m}" for m in ("tiny-flux", "tiny-sd")]
    for run in runs.glob("*/records.jsonl"):
        assert set(pd.read_json(run, lines=True).status) == {"ok"}
    for model, folder, hub_id in [("flux", "FLUX.1-dev", "black-forest-labs/FLUX.1-dev"),
                                  ("sd3", "stable-diffusion-3-medium-diffusers",
                                   "stabilityai/stable-diffusion-3-medium-diffusers")]:
        out = bench(f"model={model}", "method=euler", "dataset.limit=1", f"paths.root={tmp_path}", cwd=tmp_path)
        assert out.returncode != 0
        last = out.stderr.strip().splitlines()[-1]
        assert f"{tmp_path}/models/{folder} does not exist" in last, out.stderr[-2000:]
        assert f"huggingface-cli download {hub_id}" in last and "Traceback" not in out.stderr


def _hydra_dirs(*overrides: str) -> tuple[Path, str]:
    from hydra import compose, initialize_config_dir

    from easyinv.validation import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["experiment=none", "paths.root=/r", *overrides], return_hydra_config=True)
    return Path(cfg.hydra.run.dir), str(cfg.hydra.sweep.subdir)


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_a_path_valued_override_keeps_the_run_directory_flat(tmp_path, tiny_model_cache):
    """`model.load.source=/abs/path` made nested folders of the run directory's name; now one folder, readable and
    apart from any other source (a hash where a '/' was replaced), while names without '/' stay as they were."""
    single = Path("/r/results/runs/adhoc/single")
    run, sub = _hydra_dirs("model=flux", "model.load.source=/abs/path/FLUX.1-dev", "method=euler")
    assert run.parent == single and "/" not in sub and run.name == sub
    assert run.name.startswith("method=euler,model.load.source=_abs_path_FLUX.1-dev,model=flux-")
    other, _ = _hydra_dirs("model=flux", "model.load.source=/abs_path/FLUX.1-dev", "method=euler")
    assert other.parent == single and other != run
    assert _hydra_dirs("model=sd14", "method=ddim") == (single / "method=ddim,model=sd14", "method=ddim,model=sd14")

    folder = tiny_model_cache / "tiny-models" / "tiny-flux"  # absolute: the real app, one image, no inversion
    out = bench("experiment=none", "model=flux", f"model.load.source={folder}", "model.resolution=64",
                "method=vae_only", "dataset.limit=1", "metrics.lpips.random_trunk=true", f"paths.root={tmp_path}",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    made = list((tmp_path / "results" / "runs" / "adhoc" / "single").iterdir())
    assert len(made) == 1 and (made[0] / "records.jsonl").is_file(), made
