"""The example plugin (examples/easyinv-edit-friendly), installed into a fresh environment layered on the project's
with the project's wheel, as a user would install both: ``easyinv-bench method=edit_friendly`` on the Gaussian model
and on tiny-sd (its row in the report), as the inversion of the P2P editing protocol, and its own tests. Nothing in
easyinv/, baselines/ or configs/ names it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from layered_env import REPO, build_wheel, clean_env, copy_checkout, layered_env, pip_install

PLUGIN = REPO / "examples" / "easyinv-edit-friendly"


def test_no_file_of_the_harness_names_the_plugin() -> None:
    named = subprocess.run(["git", "grep", "-l", "-i", "-e", "edit_friendly", "-e", "edit-friendly", "--",
                            "easyinv", "baselines", "configs", "pyproject.toml", "Makefile", "tests/method_cases.py",
                            "tests/test_every_method.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert named == []


@pytest.mark.slow
def test_the_installed_example_plugin_runs_in_the_benchmark_and_passes_its_tests(tmp_path: Path) -> None:
    wheel = build_wheel(copy_checkout(tmp_path / "source"), tmp_path / "dist")
    plugin = shutil.copytree(PLUGIN, tmp_path / "plugin")  # built there: no *.egg-info beside the checkout's copy
    python = layered_env(tmp_path / "venv")
    pip_install(python, str(wheel), str(plugin))
    work, env = tmp_path / "work", clean_env()
    work.mkdir()
    bench = tmp_path / "venv" / "bin" / "easyinv-bench"

    listed = subprocess.run([str(bench), "--help"], cwd=work, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "edit_friendly" in listed.stdout, listed.stderr[-2000:]
    base = ["experiment=none", "device=cpu", "dataset.limit=2", "metrics.lpips.random_trunk=true",
            "method.num_steps=10"]
    for model in ("gaussian", "tiny-sd"):
        run = subprocess.run([str(bench), "--multirun", *base, f"model={model}", "method=edit_friendly,ddim",
                              f"report_dir=report-{model}"], cwd=work, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        table = pd.read_csv(work / f"report-{model}" / "table1.csv")
        ours = table[(table["method"] == "edit_friendly") & (table["model"] == model)]
        assert list(ours["n_ok"]) == [2] and list(ours["nfe_mean"]) == [20.0]  # its row: 2 images, NFE 10 + 10
        assert "edit_friendly" in (work / f"report-{model}" / "table1.md").read_text()
    from easyinv.run.records import read_records

    records = read_records(work / "results" / "runs" / "adhoc")
    ours = records[records["method"] == "edit_friendly"]
    assert len(ours) == 4 and ours["status"].eq("ok").all()
    assert (ours[ours["model"] == "gaussian"]["latent_mse"] < 1e-10).all()  # exact: float32 round-off

    edit = subprocess.run([str(bench), "experiment=editing_demo", "hydra.mode=RUN", "method=edit_friendly",
                           "edit=p2p", "edit.source=free", "dataset.limit=1", "report_dir=edit-report"], cwd=work,
                          env=env, capture_output=True, text=True)  # the editing protocol inverts with it too
    assert edit.returncode == 0, edit.stderr[-3000:]
    assert "| edit_friendly+free+p2p | 1 |" in (work / "edit-report" / "editing.md").read_text()

    # its tests, run from outside its source: the installed package and its metadata are what they import
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-c", str(plugin / "pyproject.toml"), "--rootdir",
                            str(plugin), str(plugin / "tests")], cwd=work, env=env, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout and " failed" not in tests.stdout
