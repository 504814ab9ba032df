"""One place checks a config before anything loads: ``easyinv.run.job_parts.check_config``, which every job kind calls
first (the reconstruction job, and the editing job with its edit group); each failure is one line naming the key."""

from __future__ import annotations

import pytest
from helpers import make_cfg

from easyinv.run import editing, job_parts, reconstruction
from easyinv.run.job_parts import check_config
from easyinv.validation import ConfigError, check_run_config

GAUSS = ("model=gaussian", "dataset=samples", "dataset.limit=2")


class CheckedError(Exception):
    pass


@pytest.mark.parametrize("job_class, overrides", [
    (reconstruction.Job, ("method=ddim",)),
    (editing.EditJob, ("edit=p2p", "method=ddim")),
])
def test_every_job_kind_calls_check_config_first(tmp_path, monkeypatch, job_class, overrides):
    seen = []

    def check(cfg, edit=False):
        seen.append(edit)
        raise CheckedError

    monkeypatch.setattr(reconstruction, "check_config", check)
    # every object a job builds from config (method, dataset, model: job_parts.load_model) goes through job_parts.build
    monkeypatch.setattr(job_parts, "build", lambda *a, **k: pytest.fail("built before check_config"))
    with pytest.raises(CheckedError):
        job_class(make_cfg(tmp_path, *GAUSS, *overrides), tmp_path / "run")
    assert seen == [job_class is editing.EditJob]


@pytest.mark.parametrize("override, message", [
    ("precision.fallback=fp64", "precision.fallback must be one of none, fp32, got 'fp64'"),
    ("model.compile=fast", "model.compile must be one of none, default, reduce-overhead, max-autotune, got 'fast'"),
    ("model.channels_last=1", "model.channels_last must be true or false, got 1"),
    ("batch_size=0", "batch_size must be >= 1, got 0"),
    ("precision.unet=fp8", "precision.unet=fp8 is not a valid dtype"),
    ("device=tpu", "device=tpu is not valid"),
    ("save_latents=[60]", "save_latents must list reconstruction steps in [0, 50] (method.num_steps) or 'mid'"),
    ("shard.count=0", "shard.count must be an integer >= 1"),
    ("method=renoise", "method=renoise does not run on model=gaussian_flow (flow path)"),
])
def test_check_config_refuses_in_one_line(tmp_path, override, message):
    model = "model=gaussian_flow" if override.startswith("method=") else "model=gaussian"
    cfg = make_cfg(tmp_path, "dataset=samples", "method=ddim", model, override)
    with pytest.raises(ConfigError) as raised:
        check_config(cfg)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_check_run_config_holds_the_value_checks_of_the_job(tmp_path):
    """The fast paths (once in models/base.py) and the fp32 fallback (once in Job.__init__) are checked with the
    other config values, in the base layer."""
    with pytest.raises(ConfigError, match="model.compile"):
        check_run_config(make_cfg(tmp_path, "model.compile=fast"))
    with pytest.raises(ConfigError, match="precision.fallback"):
        check_run_config(make_cfg(tmp_path, "precision.fallback=yes"))


def test_check_config_returns_what_it_built(tmp_path):
    checked = check_config(make_cfg(tmp_path, *GAUSS, "method=easyinv", "save_latents=[0,mid]"))
    assert checked.method.name == "easyinv" and checked.editor is None
    assert checked.save_latents == (0, checked.method.num_steps // 2)
    assert len(checked.dataset.items()) == 2 and checked.shard.count == 1


def test_check_config_checks_the_edit_group_for_the_editing_job(tmp_path):
    with pytest.raises(ConfigError, match="edit=p2p does not run with model=gaussian and method=ddim"):
        check_config(make_cfg(tmp_path, *GAUSS, "edit=p2p", "method=ddim"), edit=True)
    with pytest.raises(ConfigError, match=r"edit=flowedit needs an editing dataset .* got dataset=samples"):
        check_config(make_cfg(tmp_path, *GAUSS, "edit=flowedit", "method=vae_only"), edit=True)
    checked = check_config(make_cfg(tmp_path, *GAUSS, "edit=p2p", "method=ddim"), edit=False)
    assert checked.editor is None  # a reconstruction job does not look at an edit group


def test_the_editors_protocol_fixes_t_in_check_config(tmp_path):
    cfg = make_cfg(tmp_path, "model=gaussian_flow", "edit=uni_edit", "method=uni_inv", "method.num_steps=7",
                   "dataset=mini_piebench")
    checked = check_config(cfg, edit=True)
    assert checked.editor.name == "uni_edit" and checked.method.num_steps == cfg.method.num_steps == 15
    cfg = make_cfg(tmp_path, "model=gaussian_flow", "edit=flowedit", "method=vae_only", "dataset=mini_piebench")
    assert check_config(cfg, edit=True).method.num_steps == cfg.method.num_steps == 0  # inversion-free: no T
