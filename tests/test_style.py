"""``ruff check`` on the tree, in the default suite: a lint error otherwise surfaces only in the slow fresh-clone test
of every make target (``make lint``), which CI reaches last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_is_clean():
    if not RUFF.exists():
        pytest.skip(f"ruff is not installed beside {sys.executable} (the dev extra has it)")
    done = subprocess.run([str(RUFF), "check", "--no-cache", "easyinv", "baselines", "scripts", "tests"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:]
