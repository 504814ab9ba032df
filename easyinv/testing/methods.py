"""``MethodContract``: the checks every inversion method of the harness passes, as a mixin a test class subclasses.

What is checked is what the method's class declares about itself (:data:`easyinv.method_checks.DECLARATIONS`):

- it states every declaration (``unsupported_paths``, ``needs_cfg``, ``exact``, ``nfe_per_image``);
- with a YAML (``method = "name"``): the registry builds what ``method=name`` instantiates, and the class's defaults
  agree with its YAML;
- on the closed-form model of each path it does not refuse: the NFE per image is ``nfe_per_image``; the round trip is
  exact (to round-off, for any network) exactly when it declares ``exact``; otherwise its error shrinks with the
  number of steps (at the declared ``order`` when one is given); a batch gives what single runs give;
- the job refuses exactly the declared paths and, on a model without an unconditional branch, ``needs_cfg``;
- EasyInv's blend composes with it (same NFE, a different walk) or is refused in one line.

A subclass names its method by config (``method = "my_method"``, a YAML of the ``method`` group, built in or from
an installed plugin) or by class (``method_class = MyMethod`` with ``config = {...}`` its constructor keys; the YAML
checks are then skipped). Parametrisation over the paths happens here (``pytest_generate_tests``), so a subclass
gets every check over the paths its class runs on, and nothing else to write. No ``unittest.TestCase``: pytest
would collect the mixin itself. Each check costs well under a second on the 8-pixel Gaussian models except for
methods that optimise per step (null-text inversion: a few seconds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyinv.blend import Blend
from easyinv.method_checks import PATHS, check_declared
from easyinv.plugins import register_search_path
from easyinv.registry import make_method, method_class, method_config, method_defaults, method_names
from easyinv.run.job_parts import check_method_on_model
from easyinv.testing.closed_form import MODEL_OF_PATH, RoundTrip, closed_form_model, images, round_trip
from easyinv.validation import CONFIG_DIR, ConfigError

__all__ = ["MethodContract"]

_TRIPS: dict[tuple[Any, ...], RoundTrip] = {}  # round trips shared by the checks of one test class (read only)


def _plain(value: Any) -> Any:
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


class MethodContract:
    """Subclass as ``class TestMyMethod(MethodContract): method = "my_method"`` (or ``method_class = MyMethod``).

    Class attributes a subclass may set:

    ``method``
        the method's config name (``configs/method/<name>.yaml`` or a plugin's).
    ``method_class`` / ``config``
        the class itself and its constructor keys, for a method without a YAML (``config`` also overrides a YAML's
        keys when ``method`` is given).
    ``config_dir``
        the config folder the name is looked up in (default: the harness's, plugins included).
    ``steps``
        the number of steps the checks run (default 6; a YAML or class default below it wins: ``vae_only``'s 0).
    ``nonconvergent_paths``
        path → why the round-trip error of this approximate method does not shrink with the steps there (the
        check is skipped with that reason).
    ``order``
        the convergence order the method claims (e.g. 2 for a second-order solver): the observed order between
        ``steps`` and twice as many must be at least ``order - 0.5``.
    """

    method: ClassVar[str | None] = None
    method_class: ClassVar[type | None] = None
    config: ClassVar[Mapping[str, Any]] = {}
    config_dir: ClassVar[Path | str | None] = None
    steps: ClassVar[int] = 6
    nonconvergent_paths: ClassVar[Mapping[str, str]] = {}
    order: ClassVar[float | None] = None

    # ---------------------------------------------------------------------------------------------------------------
    # what a check builds
    # ---------------------------------------------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Every check taking ``path`` runs once per path the class does not refuse (its declarations decide)."""
        if "path" in metafunc.fixturenames:
            paths = self.paths()
            metafunc.parametrize("path", paths, ids=paths)

    def _where(self) -> dict[str, Any]:
        return {"config_dir": Path(self.config_dir)} if self.config_dir is not None else {}

    def _config_root(self) -> Path:
        return Path(self.config_dir) if self.config_dir is not None else Path(CONFIG_DIR)

    def declared_class(self) -> type:
        """The method's class, refused (TypeError naming what to declare) unless it states every declaration."""
        if self.method is not None:
            return method_class(self.method, **self._where())
        if self.method_class is None:
            raise TypeError(f"{type(self).__name__}: set `method = <config name>` or `method_class = <class>`")
        return check_declared(self.method_class, getattr(self.method_class, "name", self.method_class.__name__))

    def paths(self) -> list[str]:
        """The model paths the class says it runs on (one, when it declares nothing: its checks then fail)."""
        try:
            refused = self.declared_class().unsupported_paths
        except TypeError:
            return [PATHS[0]]
        return [p for p in PATHS if p not in refused]

    def num_steps(self) -> int:
        """:attr:`steps`, or fewer where the YAML, ``config`` or the class's default says fewer."""
        if "num_steps" in self.config:
            default = self.config["num_steps"]
        elif self.method is not None:
            default = method_defaults(self.method, MODEL_OF_PATH["vp"], **self._where()).get("num_steps", self.steps)
        else:
            default = getattr(self.method_class, "num_steps", self.steps)
        return min(int(default), self.steps)

    def build(self, path: str, **fields: Any) -> Any:
        """The method at its defaults (``config`` applied) with :meth:`num_steps` steps, for a model of ``path``."""
        keys = {**self.config, "num_steps": self.num_steps(), **fields}
        if self.method is not None:
            return make_method(self.method, MODEL_OF_PATH[path], **self._where(), **keys)
        return self.declared_class()(**keys)

    def round_trip(self, path: str, dtype: torch.dtype = torch.float64, network: str = "model",
                   num_steps: int | None = None) -> RoundTrip:
        """The round trip of three images on the closed-form model of ``path`` (shared by this class's checks)."""
        steps = self.num_steps() if num_steps is None else num_steps
        key = (type(self), path, dtype, network, steps)
        if key not in _TRIPS:
            method = self.build(path, num_steps=steps)
            _TRIPS[key] = round_trip(method, closed_form_model(path, dtype), network=network)
        return _TRIPS[key]

    def _name(self) -> str:
        return self.method or getattr(self.method_class, "__name__", "?")

    def _needs_yaml(self) -> str:
        if self.method is None:
            pytest.skip("no YAML: the method is given as method_class")
        return self.method

    # ---------------------------------------------------------------------------------------------------------------
    # the checks
    # ---------------------------------------------------------------------------------------------------------------

    def test_the_class_states_every_declaration(self) -> None:
        cls = self.declared_class()  # a TypeError naming what to declare otherwise
        assert isinstance(cls.exact, bool), f"{cls.__name__}.exact must be a bool, is {cls.exact!r}"
        assert isinstance(cls.unsupported_paths, dict), f"{cls.__name__}.unsupported_paths must be a dict"
        assert cls.needs_cfg is None or isinstance(cls.needs_cfg, str), f"{cls.__name__}.needs_cfg: str or None"

    def test_the_registry_builds_what_the_config_group_instantiates(self) -> None:
        """``make_method(name)`` is ``instantiate(cfg.method)`` of ``method=name``, field for field (its model's
        values resolved), and an override given to both stays equal."""
        name, root = self._needs_yaml(), self._config_root()
        register_search_path()  # an installed plugin's YAML composes as on the command line
        with initialize_config_dir(config_dir=str(root), version_base=None):
            for model in dict.fromkeys((*MODEL_OF_PATH.values(), "sdxl")):
                if not (root / "model" / f"{model}.yaml").exists():
                    continue
                cfg = compose("config", overrides=[f"model={model}", f"method={name}", "experiment=none"])
                built = make_method(name, model, **self._where())
                assert built == instantiate(cfg.method, _convert_="all"), f"method={name} model={model}"
            if self.num_steps() > 0:
                cfg = compose("config", overrides=[f"method={name}", "experiment=none", "method.num_steps=3"])
                built = make_method(name, MODEL_OF_PATH["vp"], **self._where(), num_steps=3)
                assert built == instantiate(cfg.method, _convert_="all"), f"method={name} method.num_steps=3"

    def test_the_class_defaults_agree_with_its_yaml(self) -> None:
        """A method's values live in its YAML; its class's defaults equal them where the YAML is the class's own
        (its ``name`` is the class's default name), so ``Class()`` is ``method=name``. Another YAML on the same
        class is a preset (euler on DDIM): it may only set the class's fields. Fields only on the class stay out of
        the YAML, so a default run's config hash is what it always was."""
        name = self._needs_yaml()
        cls = self.declared_class()
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        raw = OmegaConf.to_container(method_config(name, **self._where()), resolve=False)
        values = method_defaults(name, MODEL_OF_PATH["vp"], **self._where())
        unknown = set(values) - set(fields)
        assert not unknown, f"{name}.yaml sets {sorted(unknown)}, which {cls.__name__} has no field for"
        assert values["name"] == name, f"{name}.yaml must say name: {name}"
        if fields["name"].default != name:
            others = [n for n in method_names(**self._where())
                      if method_config(n, **self._where())._target_ == raw["_target_"]]
            assert fields["name"].default in others, f"{cls.__name__}'s default name is no YAML on it ({others})"
            return
        for key, value in values.items():
            default = fields[key].default
            if isinstance(raw[key], str) and raw[key].startswith("${"):
                continue  # from the model (EasyInv's eta, interval): checked against the composed config
            assert _plain(default) == _plain(value), f"{cls.__name__}.{key} = {default!r}, {name}.yaml says {value!r}"

    def test_nfe_per_image_is_the_declared_formula(self, path: str) -> None:
        method = self.build(path)
        expected = method.nfe_per_image(method.num_steps)
        if expected is None:
            pytest.skip(f"{self._name()} declares its NFE data-dependent")
        den = self.round_trip(path, torch.float32).denoisers
        counted = (den.nfe("invert").tolist(), den.nfe("reconstruct").tolist())
        assert counted == ([expected[0]] * 3, [expected[1]] * 3), \
            f"{self._name()} on {path}: counted NFE (invert, reconstruct) {counted}, nfe_per_image says {expected}"

    def test_round_trip_is_exact_exactly_when_declared(self, path: str) -> None:
        """On the closed-form model with an imprecise network: round-off for a method declared ``exact`` (float64
        and float32, the model's network and a smooth non-denoiser), a visible error for every other one."""
        trip = self.round_trip(path)
        assert torch.isfinite(trip.inversion.z_T).all(), f"{self._name()}: non-finite z_T on {path}"
        if not self.declared_class().exact:
            assert trip.error > 1e-6, \
                f"{self._name()} round-trips to {trip.error:.1e} on the {path} path: declare exact = True?"
            return
        assert trip.error <= 1e-12, f"{self._name()} declares exact, but round-trips to {trip.error:.1e} (float64)"
        for dtype, bound in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            for network in ("model", "smooth"):
                other = self.round_trip(path, dtype, network)
                assert other.error <= bound, \
                    f"{self._name()} declares exact, but round-trips to {other.error:.1e} ({dtype}, {network} network)"
                z_t = other.inversion.z_T
                assert torch.isfinite(z_t).all() and z_t.abs().max() < 100, \
                    f"{self._name()}: z_T is no noise level ({network} network, max |z_T| {z_t.abs().max():.3g})"

    def test_round_trip_error_shrinks_with_steps(self, path: str) -> None:
        """An approximate method is consistent: twice the steps give a smaller round-trip error (by the declared
        ``order``, when one is declared), unless the test class says why not (``nonconvergent_paths``)."""
        if self.declared_class().exact:
            pytest.skip("declared exact: test_round_trip_is_exact_exactly_when_declared holds it to round-off")
        if path in self.nonconvergent_paths:
            pytest.skip(f"does not converge on {path}: {self.nonconvergent_paths[path]}")
        steps = self.num_steps()
        coarse, fine = self.round_trip(path).error, self.round_trip(path, num_steps=2 * steps).error
        assert fine < coarse, (f"{self._name()} on {path}: round-trip error {coarse:.3e} at {steps} steps, {fine:.3e} "
                               f"at {2 * steps}; set nonconvergent_paths = {{{path!r}: <why>}} if that is its maths")
        if self.order is not None:
            observed = math.log2(coarse / fine)
            assert observed >= self.order - 0.5, \
                f"{self._name()} on {path}: observed order {observed:.2f} from {steps} to {2 * steps} steps, " \
                f"declared {self.order}"

    def test_a_batch_equals_single_runs(self, path: str) -> None:
        """Three different images in one batch give the latents and NFE of three single runs (float32, ≤ 1e-5)."""
        method = self.build(path)
        model = closed_form_model(path, torch.float32, resolution=16)
        x, seeds = images(3, 16, scales=(0.2, 0.5, 0.9)), (10, 11, 12)  # images that converge at different speeds
        batch = round_trip(method, model, x, seeds)
        assert torch.isfinite(model.decode(batch.z)).all(), f"{self._name()}: non-finite reconstruction"
        for b in range(3):
            single = round_trip(method, model, x[b:b + 1], seeds[b:b + 1])
            gap = float((single.inversion.z_T - batch.inversion.z_T[b:b + 1]).abs().max())
            assert gap <= 1e-5, f"{self._name()} on {path}: image {b}'s z_T differs alone and in a batch by {gap:.1e}"
            gap = float((single.z - batch.z[b:b + 1]).abs().max())
            assert gap <= 1e-5, f"{self._name()} on {path}: image {b}'s reconstruction differs by {gap:.1e}"
            for phase in ("invert", "reconstruct"):
                alone, within = single.denoisers.nfe(phase).tolist(), batch.denoisers.nfe(phase)[b:b + 1].tolist()
                assert alone == within, f"{self._name()} on {path}: {phase} NFE {alone} alone, {within} in a batch"

    def test_the_job_refuses_exactly_what_the_method_declares(self) -> None:
        method = self.build(self.paths()[0])
        name = method.name
        for path in PATHS:
            for cfg in (True, False):
                model = OmegaConf.create({"name": f"some-{path}-model", "path": path, "cfg": cfg})
                reason = method.unsupported_paths.get(path) or (None if cfg else method.needs_cfg)
                if reason:
                    with pytest.raises(ConfigError, match=f"method={name} does not run on model=some-{path}-model"):
                        check_method_on_model(method, model)
                else:
                    check_method_on_model(method, model)

    def test_the_blend_composes_at_no_cost_or_is_refused_in_one_line(self, path: str) -> None:
        blend = Blend(eta=0.5, interval=(0.2, 0.8))  # iterations 2..4 of 6
        try:
            blended = self.build(path, blend=blend)
        except (ValueError, TypeError) as e:
            assert "blend" in str(e) and "\n" not in str(e), f"a refused blend says so in one line: {e}"
            return
        plain = self.round_trip(path, torch.float32)
        other = round_trip(blended, closed_form_model(path, torch.float32))
        assert torch.equal(plain.denoisers.nfe("invert"), other.denoisers.nfe("invert")), "the blend costs no NFE"
        assert torch.equal(plain.inversion.trajectory[1], other.inversion.trajectory[1]), \
            "the blend changes nothing before its window"
        assert not torch.allclose(plain.inversion.z_T, other.inversion.z_T), "the blend acts inside its window"
