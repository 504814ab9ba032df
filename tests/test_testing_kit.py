"""The test kit (easyinv.testing) as a third party uses it: the worked example of docs/testing-kit.md, a method in a
package of its own (written to a temporary folder, not under tests/) and its test file, run by pytest (in-process),
gets every check of ``MethodContract`` and passes; a method that declares a wrong NFE, and one that declares an
exactness it does not have, fail exactly the check of that declaration, with a message naming it and pytest's
comparison (the kit's asserts are rewritten). An editor runs the ``EditorContract`` on the kit's default models, the
closed-form ones. The same kit runs every built-in method and editor (tests/test_every_method.py,
tests/test_every_editor.py)."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

from easyinv.testing import EditorContract, MethodContract

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing-kit.md"

BROKEN = '''

@dataclass(frozen=True)
class WrongNFE(SourceTimeDDIM):
    """Declares one network call more per inversion than it makes."""

    name: str = "wrong_nfe"

    def nfe_per_image(self, T):
        return T + 1, T


@dataclass(frozen=True)
class FalselyExact(SourceTimeDDIM):
    """Declares an exact round trip, which DDIM does not have."""

    exact: ClassVar[bool] = True
    name: str = "falsely_exact"
'''

BROKEN_TESTS = '''

from my_inversion.method import FalselyExact, WrongNFE


class TestWrongNFE(MethodContract):
    method_class = WrongNFE


class TestFalselyExact(MethodContract):
    method_class = FalselyExact
'''


def _doc_blocks() -> list[str]:
    """The ``python`` code blocks of docs/testing-kit.md: the worked example is the one tested here."""
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


class Outcomes:
    """A pytest plugin that keeps each test's outcome and, for a failure, its message."""

    def __init__(self):
        self.seen: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            self.seen[report.nodeid.split("::", 1)[1]] = (report.outcome, str(report.longrepr or ""))


def _run_kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, str]]:
    """The documented plugin layout in ``tmp_path``, its method module and test file taken from the docs' worked
    example plus two broken variants; pytest's outcome per test."""
    method, tests = _doc_blocks()[:2]
    package = tmp_path / "src" / "my_inversion"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "method.py").write_text(method + BROKEN)
    (tmp_path / "tests").mkdir()
    test_file = tmp_path / "tests" / "test_my_method.py"
    test_file.write_text(tests + BROKEN_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    outcomes = Outcomes()
    try:
        pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                     str(test_file)], plugins=[outcomes])
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in ("my_inversion", "test_my_method")]:
            del sys.modules[name]
    return outcomes.seen


def test_a_third_party_method_passes_the_kit_and_broken_declarations_fail_it(tmp_path, monkeypatch):
    seen = _run_kit(tmp_path, monkeypatch)
    checks = sorted(name for name in dir(MethodContract) if name.startswith("test_"))
    yaml_checks = {"test_the_registry_builds_what_the_config_group_instantiates",
                   "test_the_class_defaults_agree_with_its_yaml"}
    per_path = [c for c in checks if "path" in inspect.signature(getattr(MethodContract, c)).parameters]
    good = {k: v for k, v in seen.items() if k.startswith("TestSourceTimeDDIM::")}
    expected = {f"TestSourceTimeDDIM::{c}" for c in checks if c not in per_path}
    expected |= {f"TestSourceTimeDDIM::{c}[{p}]" for c in per_path for p in ("vp", "flow")}
    assert set(good) == expected, sorted(set(good) ^ expected)
    assert {k for k, v in good.items() if v[0] != "passed"} == {f"TestSourceTimeDDIM::{c}" for c in yaml_checks}
    assert all(v[0] == "skipped" and "no YAML" in v[1] for k, v in good.items() if v[0] != "passed")

    failed = {k: v[1] for k, v in seen.items() if v[0] == "failed"}
    nfe = "test_nfe_per_image_is_the_declared_formula"
    exact = "test_round_trip_is_exact_exactly_when_declared"
    assert set(failed) == {f"TestWrongNFE::{nfe}[vp]", f"TestWrongNFE::{nfe}[flow]",
                           f"TestFalselyExact::{exact}[vp]", f"TestFalselyExact::{exact}[flow]"}, sorted(failed)
    assert "nfe_per_image says (7, 6)" in failed[f"TestWrongNFE::{nfe}[vp]"]  # 6 steps: (T + 1, T) declared
    # the kit's asserts are rewritten (easyinv.testing registers its modules): the failure shows what was compared
    assert "assert ([6, 6, 6], [6, 6, 6]) == ([7, 7, 7], [6, 6, 6])" in failed[f"TestWrongNFE::{nfe}[vp]"]
    assert "declares exact, but round-trips to" in failed[f"TestFalselyExact::{exact}[flow]"]


def test_the_contracts_are_plain_mixins_pytest_does_not_collect_alone():
    import unittest

    for contract in (MethodContract, EditorContract):
        assert not issubclass(contract, unittest.TestCase) and not contract.__name__.startswith("Test")


class TestFlowEditOnTheKitsDefaultModels(EditorContract):
    """An editor checked as a plugin's would be, on the kit's default models (the closed-form Gaussian ones, no tiny
    model in the cache): FlowEdit serves both paths (the ε-form on the VP one) and runs on the flow model."""

    editor = "flowedit"
    overrides = ("model.resolution=16",)  # pixel space: 16 px is enough to run every phase
