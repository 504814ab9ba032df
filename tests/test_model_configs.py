"""configs/model/*.yaml compose, and the runner's instantiate call builds a model from them."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyinv.models.loading import ModelNotFoundError
from easyinv.validation import CONFIG_DIR

MODELS = {"sd14": ("sd1", 512), "sdxl": ("sdxl", 1024), "tiny-sd": ("sd1", 64), "tiny-sdxl": ("sdxl", 64),
          "sd14-random": ("sd1", 512)}


def _compose(model: str, *extra: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=[f"model={model}", "experiment=none", "paths.root=/nonexistent", *extra])


def _instantiate(cfg):
    """Exactly the runner's call."""
    return instantiate(cfg.model.load, name=cfg.model.name, resolution=cfg.model.resolution,
                       precision=OmegaConf.to_container(cfg.precision, resolve=True), device="cpu", _convert_="all")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_config_composes(model):
    cfg = _compose(model)
    family, resolution = MODELS[model]
    assert cfg.model.name == model and cfg.model.family == family and cfg.model.resolution == resolution
    assert set(cfg.model.guidance) == {"invert", "reconstruct"}
    assert 0 < cfg.model.easyinv.eta <= 1 and len(cfg.model.easyinv.interval) == 2
    assert OmegaConf.to_container(cfg.model.load, resolve=True)["_target_"].startswith("easyinv.models.")


def test_guidance_defaults_follow_the_released_code():
    assert _compose("sd14").guidance.invert == 1.0   # 7.5 on ""/"" is a no-op
    assert _compose("sdxl").guidance.invert == 5.0   # "" against zeros is not


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_tiny_config_instantiates(model, tiny_model_cache):
    built = _instantiate(_compose(model, f"paths.cache={tiny_model_cache}"))
    assert built.name == model and built.resolution == 64 and built.family == MODELS[model][0]


def test_missing_weights_surface_through_instantiate(tmp_path):
    with pytest.raises(InstantiationException) as err:
        _instantiate(_compose("sd14", f"paths.models={tmp_path}"))
    assert isinstance(err.value.__cause__, ModelNotFoundError)
    assert str(tmp_path / "stable-diffusion-v1-4") in str(err.value.__cause__)



def _load_keys(*overrides: str) -> set[str]:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["paths.root=/nonexistent", *overrides])
    return set(cfg.model.load)


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-flux", "sd3", "flux"])
def test_the_default_experiment_gives_another_model_only_its_own_loader_keys(model):
    """`easyinv-bench model=tiny-sd` (the demo with another model) failed: "unexpected keyword argument 'fit_from'",
    the demo's Gaussian setting merged into every model's loader."""
    assert _load_keys(f"model={model}") == _load_keys("experiment=none", f"model={model}")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        demo = compose("config", overrides=["paths.root=/nonexistent"])
    assert demo.model.name == "gaussian" and demo.model.load.fit_from == "samples"  # the demo's model stays fitted


def test_no_experiment_preset_writes_a_loader_key():
    """Loader keys differ per model family, so an experiment's own body never sets ``model.load.*`` (a setting for
    its default model alone goes in ``experiment_model/<experiment>_<model>.yaml``, merged only for that pair)."""
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        body = OmegaConf.load(path)
        assert "load" not in (body.get("model") or {}), f"{path.name} sets model.load"
    for path in sorted((CONFIG_DIR / "experiment_model").glob("*.yaml")):
        pairs = [(path.stem[:i], path.stem[i + 1:]) for i, c in enumerate(path.stem) if c == "_"]
        known = [(e, m) for e, m in pairs
                 if (CONFIG_DIR / "experiment" / f"{e}.yaml").is_file()
                 and (CONFIG_DIR / "model" / f"{m}.yaml").is_file()]
        assert known, f"{path.name} names no <experiment>_<model> pair"
