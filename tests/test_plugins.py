"""Plugins (easyinv/plugins.py): installed distributions faked on sys.path (a ``<dist>-0.1.dist-info`` folder with
METADATA and entry_points.txt beside the plugin's package) add a method, its YAML and a metric; a broken plugin and a
colliding one cost one warning line naming the distribution, an error only when chosen, and the built-ins work."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyinv import metrics, plugins
from easyinv.registry import make_method, method_config, method_names
from easyinv.validation import CONFIG_DIR, ConfigError, check_cli_choices, group_choices

TOY_METHOD = '''
from dataclasses import dataclass
from baselines.ddim import DDIM


@dataclass(frozen=True)
class Toy(DDIM):
    """DDIM under another name: what matters here is that the harness finds it."""

    name: str = "toy"
'''


def install(root: Path, dist: str, package: str, files: dict[str, str], entry_points: str) -> None:
    """Write a package and the dist-info of a distribution that declares ``entry_points`` into ``root``."""
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for fake installed plugins; every warning may be said again in each test, and the
    plugins' modules are forgotten afterwards (the next test's package of the same name is another)."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(plugins, "_said", set())
    monkeypatch.setattr(metrics, "_PLUGINS", {})
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]


def toy_plugin(site: Path, dist: str = "easyinv-toy", package: str = "toy_plugin", name: str = "toy",
               target: str | None = None) -> None:
    install(site, dist, package, {
        "methods.py": TOY_METHOD,
        "conf/__init__.py": "",
        f"conf/method/{name}.yaml": f"_target_: {target or package + '.methods.Toy'}\nname: {name}\nnum_steps: 50\n",
    }, f"""
        [easyinv.methods]
        {name} = {package}.methods:Toy

        [easyinv.configs]
        {package} = {package}.conf
    """)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "easyinv.plugins"]


def test_a_plugin_method_is_a_choice_everywhere_and_runs_through_the_config(site: Path, tmp_path: Path) -> None:
    toy_plugin(site)
    sources = plugins.config_sources()
    assert [s.provider for s in sources] == ["easyinv", "easyinv-toy"]
    assert sources[1].path == site / "toy_plugin" / "conf"
    assert "toy" in group_choices("method") and "toy" in method_names() and "ddim" in method_names()
    assert "toy" not in group_choices("method", CONFIG_DIR)  # one folder alone: the built-in choices
    check_cli_choices(["method=toy", "model=gaussian"])
    assert method_config("toy")._target_ == "toy_plugin.methods.Toy"
    assert type(make_method("toy", num_steps=4)).__name__ == "Toy"

    from helpers import run_job

    plugins.register_search_path()
    run_dir = run_job(tmp_path, "method=toy", "method.num_steps=4", "dataset.limit=1", "metrics.enabled=[psnr]",
                      name="toy")
    from easyinv.run.records import read_records

    df = read_records(run_dir)
    assert list(df["method"]) == ["toy"] and list(df["nfe_invert"]) == [4] and df["status"].eq("ok").all()


def test_the_search_path_appends_each_plugin_package_after_the_built_in_configs(site: Path) -> None:
    toy_plugin(site)
    from hydra.core.config_search_path import ConfigSearchPath

    class Recorder(ConfigSearchPath):
        def __init__(self) -> None:
            self.appended: list[tuple[str, str]] = []

        def get_path(self):  # noqa: ANN201 - the abstract methods a search path has
            return []

        def append(self, provider: str, path: str, anchor=None) -> None:  # noqa: ANN001
            self.appended.append((provider, path))

        def prepend(self, provider: str, path: str, anchor=None) -> None:  # noqa: ANN001
            raise AssertionError("plugins are appended, never prepended")

    recorder = Recorder()
    plugins.PluginSearchPath().manipulate_search_path(recorder)
    assert recorder.appended == [("easyinv-plugin:easyinv-toy", "pkg://toy_plugin.conf")]
    plugins.register_search_path()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["experiment=none", "method=toy"])
    assert cfg.method._target_ == "toy_plugin.methods.Toy"
    assert instantiate(cfg.method).name == "toy"


def test_a_broken_plugin_is_one_line_and_the_built_ins_keep_working(site: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    install(site, "easyinv-gone", "gone_plugin", {}, """
        [easyinv.configs]
        gone = gone_plugin.no_such_package
    """)
    install(site, "easyinv-crash", "crash_plugin", {
        "methods.py": "raise ImportError('needs a package that is not installed')\n",
        "conf/__init__.py": "",
        "conf/method/crash.yaml": "_target_: crash_plugin.methods.Crash\nname: crash\n",
    }, """
        [easyinv.methods]
        crash = crash_plugin.methods:Crash

        [easyinv.configs]
        crash = crash_plugin.conf
    """)
    with caplog.at_level(logging.WARNING):
        plugins.announce()
        assert "crash" in group_choices("method")  # listed from the metadata: nothing of it was imported
    said = warnings_of(caplog)
    assert len(said) == 1 and "'easyinv-gone'" in said[0] and "gone_plugin.no_such_package" in said[0]
    assert "\n" not in said[0]
    check_cli_choices(["method=ddim", "model=gaussian"])
    assert type(make_method("ddim")).__name__ == "DDIM"
    with pytest.raises(ConfigError) as e:
        check_cli_choices(["method=crash"])
    assert "'easyinv-crash'" in str(e.value) and "failed to import" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(plugins.PluginError, match="easyinv-crash"):
        make_method("crash")


def test_a_colliding_plugin_never_takes_a_built_in_name_and_two_plugins_sharing_one_are_refused(
        site: Path, caplog: pytest.LogCaptureFixture) -> None:
    toy_plugin(site, "easyinv-shadow", "shadow_plugin", name="ddim")
    toy_plugin(site, "easyinv-one", "one_plugin", name="twin")
    toy_plugin(site, "easyinv-two", "two_plugin", name="twin")
    with caplog.at_level(logging.WARNING):
        plugins.announce()
    said = warnings_of(caplog)
    assert any("'easyinv-shadow'" in s and "ddim" in s and "built in" in s for s in said)
    assert any("'easyinv-one'" in s and "'easyinv-two'" in s and "twin" in s for s in said)
    assert all("\n" not in s for s in said)
    assert plugins.group_options("method")["ddim"].source.built_in
    assert method_config("ddim")._target_ == "baselines.ddim.DDIM"
    check_cli_choices(["method=ddim"])
    with pytest.raises(ConfigError, match="'easyinv-one', 'easyinv-two'"):
        check_cli_choices(["method=twin"])


def test_a_yaml_target_must_agree_with_the_entry_point(site: Path) -> None:
    toy_plugin(site, target="baselines.ddim.DDIM")
    with pytest.raises(ConfigError, match=r"has _target_: baselines.ddim.DDIM but plugin 'easyinv-toy'.*"
                                          r"registers toy_plugin.methods.Toy"):
        check_cli_choices(["method=toy"])


def test_a_yaml_without_an_entry_point_and_an_entry_point_without_a_yaml(site: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    install(site, "easyinv-half", "half_plugin", {
        "methods.py": TOY_METHOD, "conf/__init__.py": "",
        "conf/method/orphan.yaml": "_target_: half_plugin.methods.Toy\nname: orphan\n",
    }, """
        [easyinv.methods]
        lonely = half_plugin.methods:Toy

        [easyinv.configs]
        half = half_plugin.conf
    """)
    with caplog.at_level(logging.WARNING):
        plugins.announce()
    assert any("'easyinv-half'" in s and "method/lonely.yaml" in s for s in warnings_of(caplog))
    assert "lonely" not in group_choices("method")
    with pytest.raises(ConfigError, match="declares no entry point easyinv.methods orphan"):
        check_cli_choices(["method=orphan"])


L1_METRIC = '''
from easyinv.metrics import Metric


def l1(rec, ref):
    return (rec - ref).abs().flatten(1).mean(1)


L1 = Metric("l1", "L1", higher_is_better=False, decimals=4, fn=l1, table1=True)
'''


def test_a_plugin_metric_joins_the_declarations_and_is_computed(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    install(site, "easyinv-l1", "l1_plugin", {"metric.py": L1_METRIC}, """
        [easyinv.metrics]
        l1 = l1_plugin.metric:L1
        psnr = l1_plugin.metric:L1
        broken = l1_plugin.nothing:X
    """)
    with caplog.at_level(logging.WARNING):
        names = [m.name for m in metrics.declared()]
    assert names[-1] == "l1" and names.count("psnr") == 1
    said = warnings_of(caplog)
    assert len(said) == 2 and all("'easyinv-l1'" in s for s in said)
    from easyinv.report.columns import table1_metrics

    assert "l1" in [m.name for m in table1_metrics()]
    scorer = metrics.ImageMetrics(enabled=["psnr", "l1"])
    ref = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    rec = torch.full((1, 8, 8, 3), 51, dtype=torch.uint8)
    assert scorer.measure(rec, ref)[0]["l1"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"broken.*'easyinv-l1'.*ModuleNotFoundError"):
        metrics.ImageMetrics(enabled=["broken"])


def test_the_config_folder_is_the_checkout_s_here() -> None:
    from easyinv import locations

    assert locations.CHECKOUT is not None and CONFIG_DIR == locations.CHECKOUT / "configs"
    assert OmegaConf.load(CONFIG_DIR / "config.yaml").defaults
    assert not locations.in_checkout(Path(plugins.__file__).parent)  # a folder without pyproject.toml + configs
