"""Fresh virtual environments layered on the project's, for the tests that install a wheel (the project's, the
example plugin's) and run it from outside the checkout, with no network and no second copy of torch.

The new environment's ``site-packages`` holds a ``.pth`` line naming the project environment's ``site-packages``, so
torch, diffusers, hydra … import from there. A ``.pth`` line only appends a folder to ``sys.path``; the ``.pth``
files inside that folder are not run, so the editable install's import hook (which maps ``easyinv`` to the checkout)
stays out: ``easyinv`` is whatever was installed into the new environment, which comes first on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layered_env(root: Path) -> Path:
    """Create the environment at ``root``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "easyinv_project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, *args: str) -> None:
    """``pip install --no-deps --no-index --no-build-isolation`` into the environment of ``python`` (the project
    environment's pip, run for that interpreter: its console scripts point at it)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", "-q", *args], check=True)


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel of the project at ``source`` (``pip wheel``, no isolation: the project environment's setuptools),
    built into ``out``; returns its path."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(out), str(source)], check=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def copy_checkout(target: Path) -> Path:
    """The working tree's files that git would keep (tracked, and untracked but not ignored) copied to ``target``:
    a build there leaves no ``*.egg-info`` in the checkout (a stale one would shadow the installed metadata)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    return target


def clean_env() -> dict[str, str]:
    """The environment for a child run outside the checkout: offline, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env
