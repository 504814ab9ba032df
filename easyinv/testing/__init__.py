"""The harness's own test suites, for methods and editors written elsewhere (a plugin's repository, a notebook).

The checks the harness runs on every built-in method and editor, as plain mixin classes::

    from easyinv.testing import MethodContract, EditorContract

    class TestMyMethod(MethodContract):
        method = "my_method"          # a config name, built in or from an installed plugin
        # or: method_class = MyMethod; config = {"num_steps": 10}

    class TestMyEditor(EditorContract):
        editor = "my_editor"

Every check runs offline on the closed-form Gaussian models (seconds per method). ``docs/testing-kit.md`` says what
each check asserts and what a subclass may set.

pytest rewrites the asserts of test modules only; importing this package asks it to rewrite the checks' modules too
(``pytest.register_assert_rewrite``), so a failing check shows the values it compared. That works in any install
(a ``pytest11`` entry point would not mark an editable install's modules), provided the checks' modules are imported
after this package: its attributes are imported on first use, which also keeps ``import easyinv.testing`` free of
torch and diffusers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest

__all__ = ["EditorContract", "MethodContract", "RoundTrip", "SmoothNetwork", "closed_form_model", "images",
           "round_trip"]

_HOMES = {"MethodContract": "methods", "EditorContract": "editors", "RoundTrip": "closed_form",
          "SmoothNetwork": "closed_form", "closed_form_model": "closed_form", "images": "closed_form",
          "round_trip": "closed_form"}


pytest.register_assert_rewrite(*{f"{__name__}.{home}" for home in _HOMES.values()})


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
