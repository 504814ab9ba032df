"""Method name → class and instance, derived from the ``method`` config group (reports, notebooks, scripts, tests).

Nothing here is kept by hand: a name is a file ``configs/method/<name>.yaml`` (or ``method/<name>.yaml`` of an
installed plugin's config package: ``easyinv.plugins``), its class that file's ``_target_``,
and :func:`make_method` builds it from that file's keys, so ``make_method(name, **keys)`` is exactly what
``method=name`` (with ``method.<key>=...`` overrides) instantiates, and a recorded name rebuilds the method that ran.
A YAML whose values come from the model (EasyInv's ``${model.easyinv.eta}``) needs ``model=`` (a model config name
or the recorded ``model`` node) unless the key is given. The runner does not use this module: it builds methods
with ``hydra.utils.instantiate(cfg.method)``, which reads the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from easyinv.locations import CONFIG_DIR
from easyinv.method_checks import check_declared
from easyinv.plugins import check_choice, group_options

__all__ = ["make_method", "method_class", "method_classes", "method_config", "method_defaults", "method_names"]


def method_names(config_dir: Path | None = None) -> list[str]:
    """The choices of the ``method`` group, sorted: one per ``method/<name>.yaml`` of the built-in configs and of
    every installed plugin (``config_dir``: that folder's alone)."""
    if config_dir is None:
        return list(group_options("method"))
    return sorted(p.stem for p in (Path(config_dir) / "method").glob("*.yaml"))


def _group_file(group: str, name: str, config_dir: Path | None) -> Path:
    """``<group>/<name>.yaml`` of ``config_dir``, or of any source; a plugin's name that its plugin cannot serve is
    refused in one line (``easyinv.plugins.check_choice``). A missing name gives a path that does not exist."""
    if config_dir is not None:
        return Path(config_dir) / group / f"{name}.yaml"
    option = group_options(group).get(name)
    if option is None:
        return CONFIG_DIR / group / f"{name}.yaml"
    check_choice(group, name)
    return option.path


def method_config(name: str, config_dir: Path | None = None) -> DictConfig:
    """``method/<name>.yaml`` as written (interpolations unresolved)."""
    path = _group_file("method", name, config_dir)
    if not path.is_file():
        raise ValueError(f"method.name must be one of {method_names(config_dir)}, got {name!r}")
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ValueError(f"{path} has no _target_ (the method's class)")
    return node


def method_class(name: str, config_dir: Path | None = None) -> type:
    """The class ``method=name`` instantiates, refused (TypeError naming what to declare) unless it states the facts
    of :data:`easyinv.method_checks.DECLARATIONS`."""
    return check_declared(get_class(str(method_config(name, config_dir)._target_)), name)


def method_defaults(name: str, model: str | Mapping[str, Any] | None = None, config_dir: Path | None = None,
                    skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The YAML's keys (less ``_target_`` and ``skip``) resolved as the composed config resolves them: lists stay
    lists, as ``instantiate(..., _convert_="all")`` passes them. ``model``: a model config name or node, for values
    that come from the model."""
    raw = OmegaConf.to_container(method_config(name, config_dir), resolve=False)
    root: dict[str, Any] = {"method": {k: v for k, v in raw.items() if k != "_target_" and k not in skip}}
    if model is not None:
        root["model"] = OmegaConf.load(_group_file("model", model, config_dir)) if isinstance(model, str) \
            else OmegaConf.create(dict(model) if not isinstance(model, DictConfig) else model)
    cfg = OmegaConf.create(root)
    try:
        return OmegaConf.to_container(cfg.method, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError as e:
        raise ValueError(f"method={name}: {e.__class__.__name__} resolving its YAML ({str(e).splitlines()[0]}); "
                         "pass model=<model config name> or the key itself") from None


def make_method(name: str, model: str | Mapping[str, Any] | None = None, config_dir: Path | None = None,
                **fields: Any) -> Any:
    """Build ``method=name`` from its YAML with ``fields`` overriding its keys (validated by the method itself).

    A field given as a mapping with ``_target_`` (a recorded ``method.blend``) is instantiated as Hydra would."""
    cls = method_class(name, config_dir)
    kwargs = {**method_defaults(name, model, config_dir, skip=tuple(fields)), **fields}
    for key, value in kwargs.items():
        if isinstance(value, Mapping) and "_target_" in value:
            from hydra.utils import instantiate  # only for nested configs

            kwargs[key] = instantiate(OmegaConf.create(dict(value)), _convert_="all")
    return cls(**kwargs)


def method_classes(config_dir: Path | None = None) -> dict[str, type]:
    """Name → class of every method YAML (imports every method)."""
    return {name: method_class(name, config_dir) for name in method_names(config_dir)}
