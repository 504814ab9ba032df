"""The every-method suites' cases, found, not listed: one per ``configs/method/<name>.yaml`` and per model path its
class does not refuse (``unsupported_paths``), tested by what the class declares (``exact``, ``nfe_per_image``,
``needs_cfg``; easyinv.method_checks.DECLARATIONS). A new method YAML + module is in every suite with no test edited.

The checks themselves are the test kit's (:class:`easyinv.testing.MethodContract`), the same a plugin's repository
runs on its own method: :func:`contracts` makes one test class of it per YAML. What only the harness's methods need
said is here: the approximate methods whose round trip does not converge with the steps (and why), and the
convergence order the second-order flow solvers claim.

``EASYINV_TEST_CONFIGS`` (a config folder) replaces ``configs/`` for these suites: tests/test_every_method.py drops a
throw-away method into a copy and runs the suites on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from easyinv.method_checks import PATHS
from easyinv.registry import method_class, method_names
from easyinv.testing import MethodContract
from easyinv.validation import CONFIG_DIR

CONFIGS = Path(os.environ.get("EASYINV_TEST_CONFIGS") or CONFIG_DIR)
NAMES = method_names(CONFIGS)

# method → path → why its round-trip error does not shrink with the steps (MethodContract.nonconvergent_paths)
NONCONVERGENT = {
    "renoise": {"vp": "its noise regularisation (patch-KL, auto-correlation) moves each inverted latent toward "
                      "white noise by an amount the step count does not remove"},
    "rf_inversion": {"flow": "its controllers steer the inversion toward a noise sample and the reconstruction "
                             "toward the source (gamma, eta): the round trip is no reversed ODE"},
}
ORDER = {"rf_solver": 2.0, "fireflow": 2.0}  # second-order flow solvers (MethodContract.order)


def contracts() -> dict[str, type]:
    """``TestMethod_<name>`` → a :class:`MethodContract` subclass for each method YAML of :data:`CONFIGS`."""
    return {f"TestMethod_{name}": type(f"TestMethod_{name}", (MethodContract,), {
        "method": name, "config_dir": CONFIGS, "nonconvergent_paths": NONCONVERGENT.get(name, {}),
        "order": ORDER.get(name)}) for name in NAMES}


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
