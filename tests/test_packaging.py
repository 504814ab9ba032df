"""The wheel (issue 29 item 5): configs/ and results/paper/ stay at the repository's top level and ship inside the
package; the installed wheel, in a fresh environment and run from outside the checkout, runs the demo and the
report, composes every config group and exposes the API."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib
from layered_env import REPO, build_wheel, clean_env, copy_checkout, layered_env, pip_install

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
MAPPED = {"easyinv.configs": "configs", "easyinv.paper": "results/paper"}  # easyinv/locations.py reads these


def test_the_package_list_is_every_code_folder_plus_the_shipped_top_level_folders() -> None:
    folders = {".".join(p.parent.relative_to(REPO).parts) for root in ("easyinv", "baselines")
               for p in (REPO / root).rglob("__init__.py")}
    assert set(SETUPTOOLS["packages"]) == folders | set(MAPPED)
    assert SETUPTOOLS["package-dir"] == MAPPED
    from easyinv import locations

    assert REPO / MAPPED["easyinv.configs"] == locations.CONFIG_DIR
    assert REPO / MAPPED["easyinv.paper"] == locations.PAPER_DIR


COMPOSE_ALL = """
from hydra import compose, initialize_config_dir

import easyinv
from easyinv import locations
from easyinv.validation import CONFIG_DIR, GROUPS, group_choices

assert locations.CHECKOUT is None, locations.CHECKOUT
count = 0
with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
    for group in (*GROUPS, "method/blend"):
        for name in group_choices(group):
            base = [] if group == "experiment" else ["experiment=none"]
            prefix = "+" if group in ("method/blend", "edit_metrics") else ""
            compose("config", overrides=[*base, f"{prefix}{group}={name}"])
            count += 1
missing = [name for name in getattr(easyinv, "__all__", ()) if not hasattr(easyinv, name)]
assert not missing, missing
print("EASYINV", easyinv.__file__)
print("CONFIGS", CONFIG_DIR)
print("COMPOSED", count)
"""


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_environment_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    metadata = set(REPO.glob("*.egg-info"))  # `make setup`'s editable install may leave one; the build must add none
    source = copy_checkout(tmp_path / "source")
    (source / "configs" / "local" / "default.yaml").write_text("# a machine's paths: never shipped\n")
    wheel = build_wheel(source, tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "easyinv", "baselines", "configs", "results/paper"], cwd=REPO,
                             check=True, capture_output=True, text=True).stdout.split()
    for rel in tracked:
        shipped = rel.replace("configs/", "easyinv/configs/", 1).replace("results/paper/", "easyinv/paper/", 1)
        if rel.endswith((".py", ".yaml", ".csv", ".html", ".css", ".js", ".png")) or rel.endswith("README.md"):
            assert shipped in names, f"{rel} is not in the wheel"
    assert "easyinv/configs/local/default.yaml" not in names
    assert set(REPO.glob("*.egg-info")) == metadata, "the build must not leave metadata in the checkout"

    python = layered_env(tmp_path / "venv")
    pip_install(python, str(wheel))
    work = tmp_path / "work"  # the current directory of every run: outside the checkout
    work.mkdir()
    env = clean_env()
    probe = subprocess.run([str(python), "-c", COMPOSE_ALL], cwd=work, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    site = str(tmp_path / "venv")
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines() if " " in line)
    assert lines["EASYINV"].startswith(site) and lines["CONFIGS"].startswith(site)  # the wheel's, not the checkout's
    expected = sum(len(list((REPO / "configs" / g).glob("*.yaml"))) for g in
                   ("model", "method", "precision", "dataset", "metrics", "experiment", "paths", "job", "edit",
                    "edit_metrics", "method/blend"))
    assert int(lines["COMPOSED"]) == expected

    bin_dir = tmp_path / "venv" / "bin"
    demo = subprocess.run([str(bin_dir / "easyinv-bench"), f"reference_dir={REPO / 'results' / 'demo'}"], cwd=work,
                          env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "quality and NFE columns MATCH the committed table" in demo.stdout
    assert "published: DDIM Inversion (fp16): LPIPS 0.328" in demo.stdout  # results/paper/ came with the wheel
    assert (work / "results" / "runs" / "demo_report" / "report.html").is_file()

    report = subprocess.run([str(bin_dir / "easyinv-report"), "results/runs/demo", "--out", "again", "--no-figures"],
                            cwd=work, env=env, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (work / "again" / "table1.md").read_text() == (work / "results" / "runs" / "demo_report" /
                                                           "table1.md").read_text()
