"""Every method of the ``method`` config group (tests/method_cases.py finds them), tested by the test kit a plugin's
repository runs on its own method (easyinv.testing.MethodContract; one ``TestMethod_<name>`` class per YAML): what
its class declares is checked (the registry builds what ``method=name`` instantiates, the class's defaults agree with
its YAML, the NFE per image is the declared formula, the round trip is exact exactly when declared and otherwise
converges with the steps, a batch equals single runs, the job refuses exactly the declared paths and CFG-less models,
EasyInv's blend composes or is refused in one line). A class that declares nothing is refused naming what to
declare; a throw-away method YAML + module joins every suite unedited."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from method_cases import CONFIGS, NAMES, contracts

from easyinv.method_checks import DECLARATIONS, check_declared
from easyinv.registry import make_method
from easyinv.testing import MethodContract
from easyinv.validation import CONFIG_DIR, group_choices

for _name, _contract in contracts().items():
    globals()[_name] = _contract  # TestMethod_<name>: every check of the kit, over the paths the class runs on


def test_every_method_file_is_a_choice_of_the_group():
    if CONFIGS == CONFIG_DIR:
        assert group_choices("method") == NAMES and len(NAMES) >= 15


# --------------------------------------------------------------------------------------------------------------------
# A method nobody listed: a throw-away module + YAML joins the suites; one that declares nothing is refused
# --------------------------------------------------------------------------------------------------------------------

THROWAWAY = '''
from dataclasses import dataclass
from typing import ClassVar

from easyinv.inversion import ddim_step
from easyinv.method_checks import check_num_steps


@dataclass(frozen=True)
class Throwaway:
    """Source-time DDIM/Euler, written from scratch: a method no test names."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "throwaway"
    num_steps: int = 7
    blend: object = None

    def __post_init__(self):
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))

    def nfe_per_image(self, T):
        return T, T

    def step(self, eps, z, i, grid, ctx):
        return ddim_step(z, eps(ctx.z_query, grid.source_time(i)), grid.alpha_src[i], grid.alpha_tgt[i])


@dataclass(frozen=True)
class Bare:
    name: str = "bare"
    num_steps: int = 7

    def step(self, eps, z, i, grid, ctx):
        return ddim_step(z, eps(z, grid.timesteps[i]), grid.alpha_src[i], grid.alpha_tgt[i])
'''
SUITES = ("tests/test_every_method.py", "tests/test_batch_consistency.py", "tests/test_exact_methods.py")


def _drop_throwaway(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs, ignore=shutil.ignore_patterns("local"))
    (tmp_path / "throwaway_method.py").write_text(THROWAWAY)
    (configs / "method" / "throwaway.yaml").write_text(
        "_target_: throwaway_method.Throwaway\nname: throwaway\nnum_steps: 7\n")
    (configs / "method" / "bare.yaml").write_text("_target_: throwaway_method.Bare\nname: bare\nnum_steps: 7\n")
    return configs


def test_a_class_that_declares_nothing_is_refused_naming_what_to_declare(tmp_path, monkeypatch):
    configs = _drop_throwaway(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="method=bare: throwaway_method.Bare does not declare") as info:
        make_method("bare", config_dir=configs)
    for key in DECLARATIONS:
        assert f"`{key}" in str(info.value) or f"def {key}" in str(info.value), key
    assert make_method("throwaway", config_dir=configs).num_steps == 7
    with pytest.raises(TypeError, match="not paths"):
        check_declared(type("Odd", (), {**{k: None for k in DECLARATIONS}, "unsupported_paths": {"ve": "?"}}), "odd")


@pytest.mark.skipif(bool(os.environ.get("EASYINV_TEST_CONFIGS")), reason="the proof itself, not run inside itself")
def test_a_new_method_yaml_and_module_join_the_shared_suites_with_no_test_edited(tmp_path):
    """Copies configs/ with a throw-away method (and one that declares nothing) added, and runs the shared suites on
    that copy in a subprocess: the throw-away method gets every check of the kit, all pass, on both paths; the
    undeclared one fails, naming what to declare."""
    configs = _drop_throwaway(tmp_path)
    root = Path(__file__).resolve().parents[1]
    report = tmp_path / "junit.xml"
    env = {**os.environ, "EASYINV_TEST_CONFIGS": str(configs),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "throwaway or bare",
                    f"--junitxml={report}", *SUITES], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    outcome: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcome[f"{case.get('classname')}::{case.get('name')}"] = kind
        if kind in ("failure", "error"):
            detail = case.find(kind)
            outcome[f"{case.get('classname')}::{case.get('name')}"] += f": {detail.get('message')} {detail.text}"
    mine = {k: v for k, v in outcome.items() if "throwaway" in k}
    bare = {k: v for k, v in outcome.items() if "bare" in k}
    assert mine and all(v == "passed" for v in mine.values()), mine
    checks = {name for name in dir(MethodContract) if name.startswith("test_")}
    assert checks <= {k.split("::")[-1].split("[")[0] for k in mine}, (sorted(checks), sorted(mine))
    assert any(k.endswith("[flow]") for k in mine) and any(k.endswith("[vp]") for k in mine), sorted(mine)
    unexplained = {k: v[:400] for k, v in bare.items() if not v.startswith("passed") and "does not declare" not in v}
    assert bare and not unexplained, unexplained
    assert any(v.startswith("failure") or v.startswith("error") for v in bare.values()), bare
