"""The Python API (easyinv/api.py) against the job the CLI runs, and on a diffusers pipeline the user loaded.

For each tiny family, one image of the bundled set: the job (what ``easyinv-bench`` builds) stores z_T and the last
reconstruction latent (``save_latents``), its PNG and its record; the API on the model config name must give the same
z_T, reconstruction latent, pixels, NFE, metrics and config hash, bit for bit; the API on the diffusers pipeline
object of the same folder must equal the API on the name, and leave the pipeline exactly as it was (same weights in
place, scheduler, attention processors, hooks, flags), also when a call fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_cfg
from PIL import Image
from test_plugins import site  # noqa: F401 - the fixture of fake installed plugins

import easyinv
from easyinv.run.files import latents_path, recon_png_path
from easyinv.run.reconstruction import Job
from easyinv.run.records import read_records, records_files
from easyinv.validation import ConfigError

T = 5
LPIPS = {"lpips": {"random_trunk": True}}
FAMILIES = {  # tiny model config → (diffusers pipeline class, a method that runs on it, its keys)
    "tiny-sd": ("StableDiffusionPipeline", "easyinv", {"eta": 0.4}),
    "tiny-sdxl": ("StableDiffusionXLPipeline", "renoise", {}),
    "tiny-sd3": ("StableDiffusion3Pipeline", "easyinv", {}),
    "tiny-flux": ("FluxPipeline", "rf_solver", {}),
}


@pytest.fixture
def cache_env(tiny_model_cache, monkeypatch):
    monkeypatch.setenv("EASYINV_CACHE", str(tiny_model_cache))
    return tiny_model_cache


def _pipeline(name: str, cache):
    import diffusers

    cls = getattr(diffusers, FAMILIES[name][0])
    extra = {"safety_checker": None, "requires_safety_checker": False} if name == "tiny-sd" else {}
    return cls.from_pretrained(cache / "tiny-models" / name, **extra)


def _state(pipe) -> dict:
    """Everything a call could change on a pipeline, as comparable values."""
    modules = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    net = pipe.components.get("transformer") or pipe.components["unet"]
    return {
        "ptrs": {k: [p.data_ptr() for p in m.parameters()] for k, m in modules.items()},
        "dtypes": {k: {p.dtype for p in m.parameters()} for k, m in modules.items()},
        "grad": {k: [p.requires_grad for p in m.parameters()] for k, m in modules.items()},
        "training": {k: [x.training for x in m.modules()] for k, m in modules.items()},
        "hooks": {k: [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in m.modules()]
                  for k, m in modules.items()},
        "processors": {k: id(v) for k, v in net.attn_processors.items()},
        "scheduler": (json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str),
                      None if pipe.scheduler.timesteps is None else pipe.scheduler.timesteps.tolist(),
                      getattr(pipe.scheduler, "_step_index", None)),
        "modules": {k: id(v) for k, v in modules.items()},
    }


@pytest.mark.parametrize("name", [n if n == "tiny-sd" else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES])
def test_the_api_equals_the_cli_and_a_pipeline_equals_the_config_name(name, cache_env, tmp_path):
    _, method, keys = FAMILIES[name]
    overrides = [f"model={name}", f"method={method}", f"method.num_steps={T}", "dataset=samples", "dataset.limit=1",
                 f"paths.cache={cache_env}", f"save_latents=[0,{T}]", "save_png=true",
                 *(f"method.{k}={v}" for k, v in keys.items())]
    run_dir = tmp_path / "runs" / "job"
    Job(make_cfg(tmp_path, *overrides), run_dir, overrides=overrides).run()  # what the app builds from the CLI
    record = read_records(records_files(run_dir)).iloc[0]
    assert record.status == "ok"
    from easyinv.data.samples import SamplesDataset

    item = next(it for it in SamplesDataset(name="samples", include=["photos", "probes"], resize="center_crop")
                .all_items() if it.id == record.item_id)
    stored = torch.load(latents_path(run_dir, record.method_label, item.id))
    png = np.array(Image.open(recon_png_path(run_dir, record.method_label, item.id)))

    api = easyinv.reconstruct(name, item.path, item.prompt, method=method, ids=[item.id], num_steps=T,
                              metrics=LPIPS, **keys)
    assert torch.equal(api.z_T, stored["latents"][0][None])
    assert torch.equal(api.z_rec, stored["latents"][1][None])
    assert np.array_equal(api.images[0], png)
    assert api.config_hash == record.config_hash and api.label == record.method_label
    assert api.nfe == {"invert": [record.nfe_invert], "reconstruct": [record.nfe_reconstruct]}
    scores = api.metrics()[0]
    for key in ("psnr", "ssim", "lpips", "latent_mse"):
        assert scores[key] == record[key], key
    inverted = easyinv.invert(name, item.path, item.prompt, method=method, ids=[item.id], num_steps=T, **keys)
    assert torch.equal(inverted.z_T, api.z_T) and inverted.images is None

    pipe = _pipeline(name, cache_env)
    before = _state(pipe)
    borrowed = easyinv.reconstruct(pipe, item.path, item.prompt, method=method, ids=[item.id], num_steps=T,
                                   model_config=name, metrics=LPIPS, **keys)
    assert torch.equal(borrowed.z_T, api.z_T) and np.array_equal(borrowed.images, api.images)
    assert borrowed.nfe == api.nfe and borrowed.metrics() == api.metrics()
    assert _state(pipe) == before


def test_inputs_come_as_pil_numpy_tensors_one_or_a_batch(cache_env):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    model = easyinv.load_model("tiny-sd", device="cpu")
    batch = easyinv.invert(model, arrays, ["a", "b"], num_steps=2)
    assert batch.z_T.shape == (2, 4, 8, 8) and batch.nfe["invert"] == [2, 2]
    single = easyinv.invert(model, Image.fromarray(arrays[1]), "b", num_steps=2, ids=["1"])
    assert torch.equal(single.z_T[0], batch.z_T[1])  # a batch gives each image's own numbers
    as_tensor = easyinv.invert(model, torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255, ["a", "b"],
                               num_steps=2)
    assert torch.equal(as_tensor.z_T, batch.z_T)
    kept = easyinv.reconstruct(model, arrays[0], num_steps=2, keep_latents=True, metrics=LPIPS)
    assert len(kept.inversion_latents) == 3 and torch.equal(kept.inversion_latents[-1], kept.z_T)
    assert sorted(kept.reconstruction_latents) == [0, 1, 2]
    assert torch.equal(kept.reconstruction_latents[2], kept.z_rec)
    assert set(kept.seconds) == {"encode", "invert", "reconstruct", "decode"}


def test_bad_keys_fail_in_one_line_before_any_work(cache_env):
    pipe = _pipeline("tiny-sd", cache_env)
    for call, words in [
        (lambda: easyinv.invert(pipe, np.zeros((64, 64, 3), np.uint8), method="easyinv", etaa=0.3), "no key 'etaa'"),
        (lambda: easyinv.invert(pipe, np.zeros((64, 64, 3), np.uint8), method="nope"), "method=nope"),
        (lambda: easyinv.invert(pipe, np.zeros((64, 64, 3), np.uint8), method="easyinv", eta=3), "method.eta"),
        (lambda: easyinv.invert(pipe, np.zeros((64, 64, 3), np.uint8), method="rf_solver"), "rf_solver"),
        (lambda: easyinv.invert(pipe, np.zeros((64, 64, 3), np.uint8), precision="fp16"), "does not cast"),
        (lambda: easyinv.invert(pipe, np.zeros((2, 64, 64, 3), np.uint8), ["a"]), "1 prompts for 2 images"),
        (lambda: easyinv.invert(object(), np.zeros((64, 64, 3), np.uint8)), "diffusers pipeline"),
        (lambda: easyinv.invert(_offloaded(pipe), np.zeros((64, 64, 3), np.uint8)), "is offloaded (unet"),
    ]:
        with pytest.raises(ConfigError, match=".*") as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)


def _offloaded(pipe):
    pipe.unet._hf_hook = object()  # what accelerate's offloading hooks leave on a module
    return pipe


def test_a_failing_call_and_an_edit_leave_the_pipeline_as_it_was(cache_env):
    pipe = _pipeline("tiny-sd", cache_env)
    pipe.unet.train()  # a user's own state, to be kept (the harness runs frozen, in eval mode)
    before = _state(pipe)
    calls = []

    def fail_on_third(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    handle = pipe.unet.register_forward_pre_hook(fail_on_third)
    before = _state(pipe)
    with pytest.raises(RuntimeError, match="boom"):
        easyinv.reconstruct(pipe, np.zeros((64, 64, 3), np.uint8), method="ddim", num_steps=4, model_config="tiny-sd")
    assert _state(pipe) == before
    handle.remove()
    before = _state(pipe)
    out = easyinv.edit(pipe, np.full((64, 64, 3), 128, np.uint8), "a cat on a mat", "a dog on a mat", editor="p2p",
                       model_config="tiny-sd", num_steps=3)
    assert out.edited.shape == out.source.shape == (1, 64, 64, 3)
    assert out.protocol == "ddim[num_steps=3]+free+p2p" and out.nfe["edit"][0] > 0
    assert _state(pipe) == before  # P2P's attention processors are gone again


@pytest.mark.slow  # the app in process, twice
def test_benchmark_is_the_cli_run_in_process(tmp_path):
    df = easyinv.benchmark(["experiment=none", "dataset.limit=2", "method=ddim", "method.num_steps=3",
                            "metrics.lpips.random_trunk=true", "device=cpu"], root=tmp_path)
    assert len(df) == 2 and set(df.status) == {"ok"} and set(df.method) == {"ddim"}
    again = easyinv.benchmark(["experiment=none", "dataset.limit=2", "method=ddim", "method.num_steps=3",
                               "metrics.lpips.random_trunk=true", "device=cpu"], root=tmp_path)
    assert again[["item_id", "psnr", "config_hash"]].equals(df[["item_id", "psnr", "config_hash"]])  # resumed
    with pytest.raises(ConfigError, match="method=nope"):
        easyinv.benchmark(["method=nope"], root=tmp_path)


@pytest.mark.slow  # FLUX's V injection: forward hooks on the transformer, removed again
def test_a_flux_edit_leaves_no_hook_behind(cache_env):
    pipe = _pipeline("tiny-flux", cache_env)
    before = _state(pipe)
    out = easyinv.edit(pipe, np.full((64, 64, 3), 100, np.uint8), "a cat", "a dog", editor="v_inject",
                       method="fireflow", model_config="tiny-flux", edit_options={"num_steps": 4, "inject": 1})
    assert out.protocol == "fireflow+free+v_inject[inject=1,num_steps=4]"
    assert out.nfe == {"invert": [5], "offsets": [0], "edit": [5]}
    assert _state(pipe) == before


def test_a_plugin_method_is_a_method_of_the_api(site, cache_env):  # noqa: F811 - the imported fixture
    from test_plugins import toy_plugin

    toy_plugin(site)
    model = easyinv.load_model("tiny-sd", device="cpu")
    image = np.full((64, 64, 3), 90, np.uint8)
    toy = easyinv.invert(model, image, method="toy", num_steps=3)
    ddim = easyinv.invert(model, image, method="ddim", num_steps=3)
    assert toy.label == "toy[num_steps=3]" and torch.equal(toy.z_T, ddim.z_T)  # the toy is DDIM under another name
