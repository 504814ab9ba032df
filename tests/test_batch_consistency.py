"""Config layer and batching: settings of some methods beyond their YAML defaults (variants, the blend group) compose
with Hydra, instantiate, and a batch of 3 different images gives the same latents and NFE as 3 single runs (fp32,
≤ 1e-5); invalid values are refused naming the key. Every method YAML at its defaults gets the same batch check from
the test kit (easyinv.testing.MethodContract.test_a_batch_equals_single_runs, tests/test_every_method.py)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from method_cases import CONFIGS, declared

from easyinv.inversion import Denoisers, invert_with, reconstruct_with


def overrides_for(*extra: str) -> list[str]:
    """Overrides that keep the composition to the root, the model and the method, whatever else exists yet."""
    base = ["model=gaussian", "model.resolution=16", "model.error=0.05"]
    base.append("experiment=none" if (CONFIGS / "experiment" / "none.yaml").exists() else "~experiment")
    for group, default in (("dataset", "samples"), ("metrics", "default")):
        if not (CONFIGS / group / f"{default}.yaml").exists():
            base.append(f"~{group}")
    return [*base, *extra]


def build(*extra: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=overrides_for(*extra))
    model = instantiate(
        cfg.model.load, name=cfg.model.name, resolution=cfg.model.resolution, precision=dict(cfg.precision),
        device="cpu",
    )  # fmt: skip
    return instantiate(cfg.method), model


# variants of some methods' settings (each YAML at its defaults: the kit's batch check, tests/test_every_method.py)
CASES = [
    ["method=euler"],  # on SD: DDIM with ε at the source timestep, at its 28 steps
    ["method=easyinv"],
    ["method=easyinv", "method.variant=algorithm", "method.k=2"],
    ["method=renoise", "method.weights=released", "method.reference=clean"],
    ["method=renoise", "+method/blend=easyinv"],
    ["method=fixed_point"],
    ["method=fixed_point", "method.acceleration=anderson", "method.tol=0.003"],
    ["method=fixed_point", "method.acceleration=none", "method.tol=0.01", "+method/blend=easyinv"],
    ["method=bdia", "method.gamma=0.94"],
    ["method=uni_inv", "+method/blend=easyinv"],
    ["model=gaussian_flow", "method=fireflow", "+method/blend=easyinv", "method.blend.interval=[0.2,0.8]"],
    ["model=gaussian_flow", "method=rf_inversion", "method.stop=1.0", "method.time_convention=diffusers_community"],
]


@pytest.mark.parametrize("extra", CASES, ids=[" ".join(c) for c in CASES])
def test_batch_equals_single_runs(extra):
    declared(next(e.split("=")[1] for e in extra if e.startswith("method=")))  # refused unless it declares its facts
    method, model = build(*extra)
    assert ("+method/blend=easyinv" in extra) == (method.blend is not None and method.name != "easyinv")
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1, 1)  # different images converge at different speeds
    x0 = (scales * torch.randn(3, 3, 16, 16, generator=gen)).clamp(-1, 1)
    seeds = [10, 11, 12]
    grid = model.grid(method.num_steps)

    def run(x, seeds):
        prompts = [""] * len(seeds)
        den = Denoisers(lambda w, negative: model.denoiser(prompts, w, negative), prompts,
                        {"invert": 1.0, "reconstruct": 1.0}, null_text=lambda: model.null_text_denoiser(prompts))
        inv = invert_with(method, den, model.encode(x), grid, seeds)
        den.phase = "reconstruct"
        return inv, reconstruct_with(method, den, inv, grid), den

    batch, z_rec, den = run(x0, seeds)
    assert torch.isfinite(model.decode(z_rec)).all()
    for b in range(3):
        single, single_rec, single_den = run(x0[b : b + 1], [seeds[b]])
        assert torch.allclose(single.z_T, batch.z_T[b : b + 1], rtol=0, atol=1e-5)
        assert torch.allclose(single_rec, z_rec[b : b + 1], rtol=0, atol=1e-5)
        for phase in ("invert", "reconstruct"):
            assert single_den.nfe(phase).tolist() == den.nfe(phase)[b : b + 1].tolist()
    if "method.tol=0.003" in extra or "method.tol=0.01" in extra:
        assert int(den.nfe("invert").min()) < 120  # the early stop fired


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["method=easyinv", "method.eta=1.5"], "method.eta"),
        (["method=easyinv", "method.interval=[0.3,0.2]"], "method.interval"),
        (["method=easyinv", "method.interval=[0.2,0.2]"], "method.interval"),
        (["method=easyinv", "method.k=0"], "method.k"),
        (["method=easyinv", "method.variant=paper"], "method.variant"),
        (["method=fixed_point", "method.iters=-1"], "method.iters"),
        (["method=fixed_point", "method.acceleration=broyden"], "method.acceleration"),
        (["method=renoise", "method.K=-1"], "method.K"),
        (["method=renoise", "method.weights=xl"], "method.weights"),
        (["method=ddim", "method.num_steps=0"], "method.num_steps"),
        (["method=ddim", "+method/blend=easyinv", "method.blend.eta=2"], "method.blend.eta"),
        (["method=vae_only", "method.num_steps=50"], "method.num_steps"),
    ],
)
def test_invalid_config_values_raise_naming_the_key(extra, key):
    with pytest.raises(InstantiationException, match=key.replace(".", r"\.")) as info:
        build(*extra)
    assert isinstance(info.value.__cause__, ValueError)


def test_easyinv_with_the_blend_group_is_rejected():
    with pytest.raises(InstantiationException, match="blend"):
        build("method=easyinv", "+method/blend=easyinv")
