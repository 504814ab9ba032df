"""Method name → class, for code that starts from a recorded name (reports, notebooks, scripts).

The runner does not use it: it builds methods with ``hydra.utils.instantiate(cfg.method)``.
"""

from __future__ import annotations

from typing import Any

from baselines.bdia import BDIA
from baselines.belm import BELM
from baselines.ddim import DDIM
from baselines.edict import EDICT
from baselines.fixed_point import FixedPoint
from baselines.midpoint import Midpoint
from baselines.negative_prompt import NegativePrompt
from baselines.null_text import NullText
from baselines.renoise import ReNoise
from baselines.rf_inversion import RFInversion
from baselines.uni_inv import UniInv
from baselines.vae_only import VAEOnly
from easyinv.method import EasyInv

__all__ = ["METHODS", "make_method"]

METHODS: dict[str, type] = {
    "vae_only": VAEOnly,
    "ddim": DDIM,
    "euler": DDIM,
    "easyinv": EasyInv,
    "renoise": ReNoise,
    "fixed_point": FixedPoint,
    "negative_prompt": NegativePrompt,
    "null_text": NullText,
    "edict": EDICT,
    "bdia": BDIA,
    "belm": BELM,
    "rf_solver": Midpoint,
    "fireflow": Midpoint,
    "uni_inv": UniInv,
    "rf_inversion": RFInversion,
}
# names whose class needs more than the name to be that method (the YAML's switches)
PRESETS: dict[str, dict[str, Any]] = {"euler": {"time": "source"}, "rf_solver": {"reuse": False},
                                      "fireflow": {"reuse": True}}


def make_method(name: str, **fields: Any) -> Any:
    """Build the method registered as ``name`` with the given fields (validated by the method itself)."""
    if name not in METHODS:
        raise ValueError(f"method.name must be one of {list(METHODS)}, got {name!r}")
    return METHODS[name](name=name, **{**PRESETS.get(name, {}), **fields})
