"""Every method of the ``method`` config group (tests/method_cases.py finds them), tested by what its class declares:
the registry builds what ``method=name`` instantiates, the class's defaults agree with its YAML, the NFE per image is
the declared formula, the round trip is exact exactly when declared, the job refuses exactly the declared paths and
CFG-less models, and EasyInv's blend composes (same NFE, a different walk) or is refused in one line. A class that
declares nothing is refused naming what to declare; a throw-away method YAML + module joins every suite unedited."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from method_cases import CASE_IDS, CASES, CONFIGS, MODEL, NAMES, build, closed_form, declared, steps_of
from omegaconf import OmegaConf

from easyinv.blend import Blend
from easyinv.inversion import Denoisers, invert_with, reconstruct_with
from easyinv.method_checks import DECLARATIONS, PATHS, check_declared
from easyinv.registry import make_method, method_config, method_defaults
from easyinv.run.job_parts import check_method_on_model
from easyinv.validation import CONFIG_DIR, ConfigError, group_choices

NAME_IDS = NAMES


def _round_trip(method, model, n: int = 3, seeds=(1, 2, 3)):
    gen = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(n, 3, model.resolution, model.resolution, generator=gen)).clamp(-1, 1)
    z0 = model.encode(x).to(model.latent_dtype)
    prompts = [""] * n
    den = Denoisers(lambda w, negative: model.denoiser(prompts, w, negative), prompts,
                    {"invert": 1.0, "reconstruct": 1.0}, null_text=lambda: model.null_text_denoiser(prompts))
    grid = model.grid(method.num_steps)
    inversion = invert_with(method, den, z0, grid, list(seeds[:n]))
    den.phase = "reconstruct"
    z = reconstruct_with(method, den, inversion, grid)
    return z0, inversion, z, den


@pytest.mark.parametrize("name", NAMES, ids=NAME_IDS)
def test_the_class_states_every_declaration(name):
    cls = declared(name)  # a TypeError naming what to declare otherwise
    assert isinstance(cls.exact, bool) and isinstance(cls.unsupported_paths, dict)
    assert cls.needs_cfg is None or isinstance(cls.needs_cfg, str)


@pytest.mark.parametrize("name", NAMES, ids=NAME_IDS)
def test_the_registry_builds_what_the_config_group_instantiates(name):
    """``make_method(name)`` is ``instantiate(cfg.method)`` of ``method=name``, field for field (its model's values
    resolved), and an override given to both stays equal."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        for model in dict.fromkeys((MODEL["vp"], MODEL["flow"], "sdxl")):
            if not (CONFIGS / "model" / f"{model}.yaml").exists():
                continue
            cfg = compose("config", overrides=[f"model={model}", f"method={name}", "experiment=none"])
            assert make_method(name, model, CONFIGS) == instantiate(cfg.method, _convert_="all"), model
        if steps_of(name) > 0:
            cfg = compose("config", overrides=[f"method={name}", "experiment=none", "method.num_steps=3"])
            assert make_method(name, MODEL["vp"], CONFIGS, num_steps=3) == instantiate(cfg.method, _convert_="all")


def _plain(value):
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("name", NAMES, ids=NAME_IDS)
def test_the_class_defaults_agree_with_its_yaml(name):
    """A method's values live in its YAML; its class's defaults equal them where the YAML is the class's own (its
    ``name`` is the class's default name), so ``Class()`` is ``method=name``. Another YAML on the same class is a
    preset (euler on DDIM, fireflow on Midpoint): it may only set the class's fields. Fields that are only on the
    class (``DDIM.time``, ``NullText.early_stop_slope``) stay out of the YAML, so a default run's config hash is
    what it always was."""
    cls = declared(name)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    raw = OmegaConf.to_container(method_config(name, CONFIGS), resolve=False)
    values = method_defaults(name, MODEL["vp"], CONFIGS)
    unknown = set(values) - set(fields)
    assert not unknown, f"{name}.yaml sets {sorted(unknown)}, which {cls.__name__} has no field for"
    assert values["name"] == name, f"{name}.yaml must say name: {name}"
    if fields["name"].default != name:
        others = [n for n in NAMES if method_config(n, CONFIGS)._target_ == raw["_target_"]]
        assert fields["name"].default in others, f"{cls.__name__}'s default name is no YAML on it ({others})"
        return
    for key, value in values.items():
        default = fields[key].default
        if isinstance(raw[key], str) and raw[key].startswith("${"):
            continue  # from the model (EasyInv's eta, interval): checked against the composed config above
        assert _plain(default) == _plain(value), f"{cls.__name__}.{key} = {default!r}, {name}.yaml says {value!r}"


@pytest.mark.parametrize(("name", "path"), CASES, ids=CASE_IDS)
def test_nfe_per_image_is_the_declared_formula(name, path):
    method = build(name, path)
    expected = method.nfe_per_image(method.num_steps)
    if expected is None:
        pytest.skip(f"{name} declares its NFE data-dependent")
    _, _, _, den = _round_trip(method, closed_form(path, torch.float32))
    assert (den.nfe("invert").tolist(), den.nfe("reconstruct").tolist()) == ([expected[0]] * 3, [expected[1]] * 3)


@pytest.mark.parametrize(("name", "path"), CASES, ids=CASE_IDS)
def test_round_trip_is_exact_exactly_when_declared(name, path):
    """On the closed-form model with an imprecise network (float64): round-off for a method declared ``exact``,
    a visible error for every other one."""
    method = build(name, path)
    z0, inversion, z, _ = _round_trip(method, closed_form(path))
    err = float((z - z0).norm() / z0.norm())
    assert torch.isfinite(inversion.z_T).all()
    if type(method).exact:
        assert err <= 1e-12, err
    else:
        assert err > 1e-6, f"{name} round-trips to {err:.1e} on the {path} path: declare exact = True?"


@pytest.mark.parametrize("name", NAMES, ids=NAME_IDS)
def test_the_job_refuses_exactly_what_the_method_declares(name):
    method = build(name, next(p for p in PATHS if p not in declared(name).unsupported_paths))
    for path in PATHS:
        for cfg in (True, False):
            model = OmegaConf.create({"name": f"some-{path}-model", "path": path, "cfg": cfg})
            reason = method.unsupported_paths.get(path) or (None if cfg else method.needs_cfg)
            if reason:
                with pytest.raises(ConfigError, match=f"method={name} does not run on model=some-{path}-model"):
                    check_method_on_model(method, model)
            else:
                check_method_on_model(method, model)


@pytest.mark.parametrize(("name", "path"), CASES, ids=CASE_IDS)
def test_the_blend_composes_at_no_cost_or_is_refused(name, path):
    blend = Blend(eta=0.5, interval=(0.2, 0.8))  # iterations 2..4 of 6
    try:
        blended = build(name, path, blend=blend)
    except (ValueError, TypeError) as e:
        assert "blend" in str(e), e
        return
    plain = build(name, path)
    model = closed_form(path, torch.float32)
    _, a, _, den_a = _round_trip(plain, model)
    _, b, _, den_b = _round_trip(blended, model)
    assert torch.equal(den_a.nfe("invert"), den_b.nfe("invert"))  # the blend costs no NFE
    assert torch.equal(a.trajectory[1], b.trajectory[1])  # nothing changes before the window
    assert not torch.allclose(a.z_T, b.z_T)  # and it acts inside it


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
    """Copies configs/ with a throw-away method (and one that declares nothing) added, and runs the three shared
    suites on that copy in a subprocess: every suite has cases of the throw-away method, all pass, on both paths;
    the undeclared one fails, naming what to declare."""
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
    for suite in ("test_every_method", "test_batch_consistency"):
        assert any(suite in k for k in mine), (suite, sorted(mine))
    assert any("throwaway-flow" in k for k in mine) and any("throwaway-vp" in k for k in mine), sorted(mine)
    unexplained = {k: v[:400] for k, v in bare.items() if not v.startswith("passed") and "does not declare" not in v}
    assert bare and not unexplained, unexplained
    assert any(v.startswith("failure") or v.startswith("error") for v in bare.values()), bare
