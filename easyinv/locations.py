"""Where the harness's own files are: the checkout's top-level folders, or the copies an installed wheel holds.

The repository keeps ``configs/`` and ``results/paper/`` at its top level; a wheel ships them inside the package as
``easyinv/configs/`` and ``easyinv/paper/`` (``pyproject.toml``'s ``package-dir``). Run from a checkout (an editable
install, or ``PYTHONPATH`` pointing at a worktree) the checkout's folders are used, so editing a YAML takes effect at
once; installed from a wheel, the packaged copies. The bottom of the layers: it imports nothing of the project.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKOUT", "CONFIG_DIR", "PAPER_DIR", "in_checkout"]

_PACKAGE = Path(__file__).resolve().parent
_ROOT = _PACKAGE.parent


def in_checkout(root: Path = _ROOT) -> bool:
    """Whether ``root`` (the folder above the ``easyinv`` package) is this project's checkout: its
    ``pyproject.toml`` beside ``configs/config.yaml``. An installed package's parent is ``site-packages``, which
    holds neither (another distribution's top-level ``configs`` folder there does not count)."""
    return (root / "pyproject.toml").is_file() and (root / "configs" / "config.yaml").is_file()


CHECKOUT: Path | None = _ROOT if in_checkout() else None
CONFIG_DIR: Path = CHECKOUT / "configs" if CHECKOUT is not None else _PACKAGE / "configs"  # the built-in groups
PAPER_DIR: Path = CHECKOUT / "results" / "paper" if CHECKOUT is not None else _PACKAGE / "paper"  # published CSVs
