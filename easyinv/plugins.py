"""Plugins: methods, model families, datasets, metrics and editors from installed packages, and their configs.

A distribution adds a name by an entry point in the group of its kind (:data:`GROUPS`: ``easyinv.methods``,
``easyinv.models``, ``easyinv.datasets``, ``easyinv.metrics``, ``easyinv.editors``; value ``"pkg.module:Object"``)
and its YAML by one entry point in ``easyinv.configs`` whose value is an importable package holding config groups
(``pkg/conf/method/<name>.yaml``). :func:`config_sources` lists the built-in folder and each such package; every
listing of choices (``group_options``, the registry, the command-line check) reads them all, and
:class:`PluginSearchPath` appends the packages to Hydra's search path (``pkg://...``), registered by
:func:`register_search_path` when the app starts, so a plugin needs no ``hydra_plugins`` package of its own.

Names are listed from the metadata without importing anything; an entry point is loaded only when its name is
chosen. A plugin's config package that cannot be imported, or a name that is already a choice, is one warning line
naming the distribution, never a traceback, and the built-in choices keep working: a built-in name always wins.
An error comes only when such a name is chosen: two plugins offering it, its entry point failing to import, no
entry point for it, or a YAML whose ``_target_`` (``load._target_`` for a model) names another object than the
entry point does (the YAML stays the one source of what is built; the entry point must agree with it).

Metric plugins (a :class:`easyinv.metrics.Metric` as the entry point's object) join the declarations in
``easyinv/metrics.py``, which reads this module's :func:`entry_points`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from hydra.plugins.search_path_plugin import SearchPathPlugin

from easyinv.locations import CONFIG_DIR

__all__ = ["BUILT_IN", "CONFIGS", "GROUPS", "KINDS", "Option", "PluginError", "PluginSearchPath", "Source",
           "announce", "check_choice", "config_path", "config_sources", "describe", "entry_points", "group_options",
           "register_search_path", "warn_once"]

log = logging.getLogger(__name__)

KINDS = ("methods", "models", "datasets", "metrics", "editors")
GROUPS = {kind: f"easyinv.{kind}" for kind in KINDS}  # the entry-point group of each kind
CONFIGS = "easyinv.configs"  # entry points naming a package of config groups
CONFIG_GROUP = {"methods": "method", "models": "model", "datasets": "dataset", "editors": "edit"}
TARGET_KEY = {"methods": ("_target_",), "models": ("load", "_target_"), "datasets": ("_target_",),
              "editors": ("_target_",)}  # where a kind's YAML names the object its entry point registers
BUILT_IN = "easyinv"  # the provider name of the built-in configs

_said: set[str] = set()


class PluginError(ValueError):
    """A chosen name that a plugin cannot serve; the message is one line naming the distribution."""


def warn_once(message: str) -> None:
    """One warning line per process for each problem (listings run many times)."""
    if message not in _said:
        _said.add(message)
        log.warning(message)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def describe(ep: EntryPoint) -> str:
    """``plugin 'dist' (entry point easyinv.methods x = pkg.mod:X)``: who declared an entry point."""
    dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
    return f"plugin '{dist}' (entry point {ep.group} {ep.name} = {ep.value})"


def entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group`` (one distribution per name on ``sys.path``, the first found), in a
    stable order: by distribution, then name."""
    eps = importlib.metadata.entry_points(group=group)
    return sorted(eps, key=lambda ep: (ep.dist.name if ep.dist is not None else "", ep.name))


@dataclass(frozen=True)
class Source:
    """One place config groups come from: the built-in folder, or a plugin's package (``pkg://<package>``)."""

    provider: str  # BUILT_IN, or the distribution's name
    path: Path
    package: str | None = None  # the importable package (None: the built-in folder)

    @property
    def built_in(self) -> bool:
        return self.package is None


def config_sources() -> tuple[Source, ...]:
    """The built-in config folder, then each ``easyinv.configs`` entry point's package folder. Finding a package
    imports its parents only; one that cannot be found is a warning and is left out."""
    sources = [Source(BUILT_IN, CONFIG_DIR)]
    for ep in entry_points(CONFIGS):
        try:
            if ep.attr:
                raise ValueError("the value must be a package name, without ':attribute'")
            spec = importlib.util.find_spec(ep.value)
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError(f"no package named {ep.value!r}")
            folder = Path(next(iter(spec.submodule_search_locations)))
        except Exception as e:  # noqa: BLE001 - any failure of a plugin is one line, never the harness's
            warn_once(f"easyinv: {describe(ep)} cannot be imported ({_first_line(e)}); its configs are ignored")
            continue
        sources.append(Source(ep.dist.name if ep.dist is not None else ep.name, folder, ep.value))
    return tuple(sources)


@dataclass(frozen=True)
class Option:
    """A choice of a config group: the file that holds it and who offers it (``rivals``: other plugins offering
    the same name, which makes choosing it an error)."""

    group: str
    name: str
    source: Source
    path: Path
    rivals: tuple[Source, ...] = ()


def group_options(group: str, sources: tuple[Source, ...] | None = None) -> dict[str, Option]:
    """The choices of ``group`` (``method``, ``method/blend``, …) over every source, sorted by name. A built-in
    name is never taken by a plugin; the same name from two plugins is kept, marked, and refused when chosen."""
    options: dict[str, Option] = {}
    for source in config_sources() if sources is None else sources:
        for path in sorted((source.path / group).glob("*.yaml")):
            known = options.get(path.stem)
            if known is None:
                options[path.stem] = Option(group, path.stem, source, path)
                continue
            if known.source.built_in:
                warn_once(f"easyinv: plugin '{source.provider}' offers {group}={path.stem}, which is built in; "
                          "the plugin's is ignored")
            else:
                warn_once(f"easyinv: plugins '{known.source.provider}' and '{source.provider}' both offer "
                          f"{group}={path.stem}; choosing it is an error until one is uninstalled")
                options[path.stem] = replace(known, rivals=(*known.rivals, source))
    return dict(sorted(options.items()))


def config_path(group: str, name: str) -> Path:
    """The YAML of ``group=name`` from any source (a ValueError naming the choices when there is none)."""
    options = group_options(group)
    if name not in options:
        raise ValueError(f"{group}={name} is not a valid choice; valid: {', '.join(options)}")
    return options[name].path


def _kind_of(group: str) -> str | None:
    return next((kind for kind, g in CONFIG_GROUP.items() if g == group), None)


def _target(path: Path, keys: tuple[str, ...]) -> Any:
    from omegaconf import OmegaConf

    node: Any = OmegaConf.load(path)
    for key in keys:
        node = node.get(key) if hasattr(node, "get") else None
    return node


def check_choice(group: str, name: str) -> None:
    """Refuse, in one line naming the distribution, a chosen plugin name that cannot run: offered by two plugins,
    no entry point of its kind from its distribution, an entry point that fails to import, or a YAML target that
    names another object. Built-in names pass untouched."""
    option = group_options(group).get(name)
    if option is None or option.source.built_in:
        return
    if option.rivals:
        who = ", ".join(f"'{s.provider}'" for s in (option.source, *option.rivals))
        raise PluginError(f"{group}={name} is offered by the plugins {who}; uninstall all but one")
    kind = _kind_of(group)
    if kind is None:
        return
    provider = option.source.provider
    eps = [ep for ep in entry_points(GROUPS[kind]) if ep.name == name and ep.dist is not None
           and ep.dist.name == provider]
    if not eps:
        raise PluginError(f"{group}={name}: plugin '{provider}' ships {option.path.name} but declares no entry "
                          f"point {GROUPS[kind]} {name} = \"module:Object\"")
    ep = eps[0]
    try:
        ep.load()
    except Exception as e:  # noqa: BLE001 - one line naming the plugin, whatever it raised
        raise PluginError(f"{group}={name}: {describe(ep)} failed to import ({_first_line(e)})") from None
    target = _target(option.path, TARGET_KEY[kind])
    expected = f"{ep.module}.{ep.attr}" if ep.attr else ep.module
    if not isinstance(target, str) or not (target == expected or target.startswith(expected + ".")):
        raise PluginError(f"{group}={name}: {option.path} has {'.'.join(TARGET_KEY[kind])}: {target} but "
                          f"{describe(ep)} registers {expected}; they must name the same object")


def announce() -> None:
    """Warn, one line each, about every plugin problem visible without importing plugin code: config packages that
    cannot be found, names colliding with built-in or other plugins' choices, entry points without a YAML."""
    sources = config_sources()
    groups = {p.relative_to(s.path).parent.as_posix() for s in sources[1:] for p in s.path.rglob("*.yaml")}
    options = {group: group_options(group, sources) for group in sorted(groups | set(CONFIG_GROUP.values()))}
    for kind, group in CONFIG_GROUP.items():
        for ep in entry_points(GROUPS[kind]):
            option = options[group].get(ep.name)
            if option is None:
                warn_once(f"easyinv: {describe(ep)} has no {group}/{ep.name}.yaml in any config package, so "
                          f"{group}={ep.name} is not a choice")
            elif option.source.built_in:
                warn_once(f"easyinv: {describe(ep)} declares {group}={ep.name}, which is built in; ignored")


class PluginSearchPath(SearchPathPlugin):
    """Appends each plugin's config package to Hydra's search path (after the built-in configs, so a built-in
    name is found first). Registered by :func:`register_search_path`, not through a ``hydra_plugins`` package, so
    it acts only in this project's apps."""

    def manipulate_search_path(self, search_path: Any) -> None:
        for source in config_sources()[1:]:
            search_path.append(provider=f"easyinv-plugin:{source.provider}", path=f"pkg://{source.package}")


def register_search_path() -> None:
    """Make Hydra compose plugin configs: call before ``hydra.main`` or ``initialize_*`` (idempotent)."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(PluginSearchPath)
