"""easyinv-bench: a reproducible benchmark harness for diffusion-model image inversion, and the EasyInv method.

The Python API (``easyinv.invert``, ``reconstruct``, ``edit``, ``benchmark``, ``load_model``, ``compose_config``;
:mod:`easyinv.api`) is imported on first use, so ``import easyinv`` stays light and the layers below never load it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["EditOutput", "InversionResult", "__version__", "benchmark", "compose_config", "edit", "invert",
           "load_model", "reconstruct"]

_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from easyinv import api

        return getattr(api, name)
    raise AttributeError(f"module 'easyinv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
