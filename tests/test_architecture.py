"""The layers of ARCHITECTURE.md, as import contracts (``[tool.importlinter]`` in pyproject.toml): imports point down,
function-level imports included, and no two modules of a package import each other even indirectly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the tree at ``root`` (its pyproject.toml and packages, found first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "pyproject.toml", "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout, result.stdout


def _copy_tree(dest: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for package in ("easyinv", "baselines"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    return dest


def _add_import(path: Path, line: str, inside_function: bool = False) -> None:
    text = path.read_text()
    if inside_function:  # a lazy import still counts
        text += f"\n\ndef _added_on_purpose():\n    {line}\n"
    else:
        future = "from __future__ import annotations\n"
        text = text.replace(future, f"{future}\n{line}\n", 1)
    path.write_text(text)


def test_a_circle_introduced_on_purpose_fails_naming_both_modules(tmp_path):
    tree = _copy_tree(tmp_path)
    # records (run layer) using the report's summaries, which read records: records <-> summary
    _add_import(tree / "easyinv" / "run" / "records.py", "from easyinv.report.summary import mean_ci",
                inside_function=True)
    result = _lint_imports(tree)
    assert result.returncode != 0
    out = result.stdout
    assert "easyinv.run.records -> easyinv.report.summary" in out, out  # the layers contract names the import
    assert "- .run -> .report" in out, out  # the circle contract names the dependency that closes it


def test_a_lower_layer_importing_a_higher_one_fails(tmp_path):
    tree = _copy_tree(tmp_path)
    # the reconstruction job reaching for the editing job (what the app's job group is for)
    _add_import(tree / "easyinv" / "run" / "reconstruction.py", "from easyinv.run.editing import EditJob")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "easyinv.run.reconstruction is not allowed to import easyinv.run.editing" in result.stdout, result.stdout


def test_the_editing_layer_has_its_order(tmp_path):
    """Inside easyinv/editing/ (ARCHITECTURE.md's Editing section): the contract below the editors, one editor never
    reaching into another."""
    tree = _copy_tree(tmp_path)
    _add_import(tree / "easyinv" / "editing" / "walk.py", "from easyinv.editing.p2p import P2PEditor",
                inside_function=True)
    _add_import(tree / "easyinv" / "editing" / "flowedit.py", "from easyinv.editing.rf_edit import RFInversionEditor")
    result = _lint_imports(tree)
    assert result.returncode != 0
    out = result.stdout
    assert "easyinv.editing.walk is not allowed to import easyinv.editing.p2p" in out, out
    assert "easyinv.editing.flowedit is not allowed to import easyinv.editing.rf_edit" in out, out
