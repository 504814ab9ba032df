"""The every-method suites' cases, found, not listed: one per ``configs/method/<name>.yaml`` and per model path its
class does not refuse (``unsupported_paths``), tested by what the class declares (``exact``, ``nfe_per_image``,
``needs_cfg``; easyinv.method_checks.DECLARATIONS). A new method YAML + module is in every suite with no test edited.

``EASYINV_TEST_CONFIGS`` (a config folder) replaces ``configs/`` for these suites: tests/test_every_method.py drops a
throw-away method into a copy and runs the suites on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from easyinv.method_checks import PATHS
from easyinv.models.gaussian import GaussianModel
from easyinv.models.gaussian_flow import GaussianFlowModel
from easyinv.registry import make_method, method_class, method_defaults, method_names
from easyinv.validation import CONFIG_DIR

CONFIGS = Path(os.environ.get("EASYINV_TEST_CONFIGS") or CONFIG_DIR)
NAMES = method_names(CONFIGS)
T = 6  # steps in the shared suites (fewer where a YAML says fewer: vae_only's 0)
MODEL = {"vp": "gaussian", "flow": "gaussian_flow"}  # the closed-form model of each path (configs/model/)


def declared(name: str) -> type:
    """The class of ``method=name`` (a TypeError naming what to declare when it declares nothing)."""
    return method_class(name, CONFIGS)


def paths_of(name: str) -> list[str]:
    """The model paths ``method=name`` says it runs on."""
    try:
        refused = declared(name).unsupported_paths
    except TypeError:
        return [PATHS[0]]  # one case, which fails with the refusal's message
    return [p for p in PATHS if p not in refused]


def exact_of(name: str) -> bool:
    """Whether ``method=name`` declares an exact round trip (False when it declares nothing: its cases fail)."""
    try:
        return bool(declared(name).exact)
    except TypeError:
        return False


CASES = [(name, path) for name in NAMES for path in paths_of(name)]
CASE_IDS = [f"{name}-{path}" for name, path in CASES]


def steps_of(name: str) -> int:
    return min(int(method_defaults(name, MODEL["vp"], CONFIGS).get("num_steps", T)), T)


def build(name: str, path: str, **fields):
    """``method=name`` at its YAML's defaults on the closed-form model of ``path``, at :data:`T` steps."""
    return make_method(name, MODEL[path], CONFIGS, **{"num_steps": steps_of(name), **fields})


def closed_form(path: str, dtype: torch.dtype = torch.float64, error: float = 0.05, resolution: int = 8):
    """The closed-form model of ``path`` with an imprecise network (``error``), in ``dtype``."""
    gen = torch.Generator().manual_seed(4)
    mu = (torch.rand(3, resolution, resolution, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    s = 0.1 + 0.5 * torch.rand(3, resolution, resolution, generator=gen, dtype=torch.float64)
    cls = GaussianModel if path == "vp" else GaussianFlowModel
    return cls(mu, s, error=error, resolution=resolution, net_dtype=dtype, latent_dtype=dtype)
