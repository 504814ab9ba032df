"""The flow editors (flow-matching.md §4): invariants that must hold whatever the weights, on tiny-flux / tiny-sd3 /
tiny-sd and the closed-form flow model.

Equal prompts give edit = reconstruction (RF-Inversion's controlled editing; Uni-Edit with ω = 0; V injection that
injects nothing); V injection leaves the source branch bitwise equal to a run without hooks and really replaces V
in the target's first steps; FlowEdit with equal prompts returns the source latent exactly, on flow models and in its
ε-form on Stable Diffusion; batches equal single runs; editors refuse models they cannot serve.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from baselines.ddim import DDIM
from easyinv.editing.editor import EditBatch
from easyinv.editing.flowedit import FlowEditEditor, flow_coordinates, path_velocity
from easyinv.editing.rf_edit import RFInversionEditor, controlled_sample
from easyinv.editing.uni_edit import UniEditEditor, partial_grid, token_mask
from easyinv.editing.v_inject import VInjectEditor
from easyinv.inversion import Level, PhaseTimer, invert_with, reconstruct_with
from easyinv.models.tiny import load_tiny
from easyinv.run.job_parts import bind_denoisers

SOURCE = ["a photo of a cat", "a red car on a road"]
TARGET = ["a photo of a dog", "a blue car on a road"]


@pytest.fixture(scope="module")
def flux(tiny_model_cache):
    return load_tiny("tiny-flux", cache_dir=tiny_model_cache, resolution=64, max_sequence_length=32)


@pytest.fixture(scope="module")
def sd3(tiny_model_cache):
    return load_tiny("tiny-sd3", cache_dir=tiny_model_cache, resolution=64, max_sequence_length=32)


def _batch(model, method, steps, sources=SOURCE, targets=TARGET, seeds=(3, 4), channels=16):
    z0 = torch.randn(len(sources), channels, 8, 8, generator=torch.Generator().manual_seed(sum(seeds)))
    return EditBatch(model=model, method=method, grid=model.grid(steps), z0=z0, seeds=tuple(seeds),
                     source_prompts=list(sources), target_prompts=list(targets), blend_words=[None] * len(sources),
                     denoisers=lambda p, g: bind_denoisers(model, p, g), timer=PhaseTimer(torch.device("cpu")))


def _reconstruction(batch, editor, prompts, guidance, grid=None):
    """The method's plain inversion (editor's prompt and guidance) and reconstruction, with no editor involved."""
    grid = grid or batch.grid
    w = float(editor.invert_guidance)
    inv = invert_with(batch.method, batch.denoisers(editor.prompts(editor.inversion_prompt, batch.source_prompts),
                                                    {"invert": w, "reconstruct": w}), batch.z0, grid, batch.seeds)
    den = batch.denoisers(prompts, {"invert": guidance, "reconstruct": guidance})
    den.phase = "reconstruct"
    return inv, reconstruct_with(batch.method, den, inv, grid)


def test_v_injection_leaves_the_source_branch_alone_and_replaces_v_in_the_first_steps(flux):
    editor = VInjectEditor(num_steps=6, inject=2, blocks=(0, 1))
    batch = _batch(flux, DDIM(num_steps=6, time="source"), 6)
    result = editor.edit(batch)
    inv, plain = _reconstruction(batch, editor, SOURCE, editor.source_w)
    assert torch.equal(result.inversion.z_T, inv.z_T)  # recording V changes nothing
    assert torch.equal(result.z_source, plain)  # bitwise a run without hooks
    _, unedited = _reconstruction(batch, editor, TARGET, editor.guidance_scale)
    assert not torch.allclose(result.z_target, unedited)  # the injected V acts
    assert result.fields["v_injected_calls"] == 2  # Euler: one call per injected step, in each hooked block
    per_eval = 2 * (flux.transformer.config.num_attention_heads * flux.transformer.config.attention_head_dim)
    assert result.fields["v_cache_bytes"] > 0 and result.fields["v_cache_bytes"] % per_eval == 0
    # with nothing injected and equal prompts the edit is the reconstruction, bitwise
    same = VInjectEditor(num_steps=6, inject=0, blocks=(0, 1)).edit(_batch(flux, batch.method, 6, targets=SOURCE))
    assert torch.equal(same.z_target, same.z_source)
    assert (result.nfe_invert == 6).all() and (result.nfe_edit == 6).all()


def test_v_injection_pairs_midpoint_calls_with_their_inversion_counterparts(flux):
    """A solver with two calls per step (a midpoint): both are injected in each injected step."""

    class Midpoint(DDIM):  # RF-Solver's rule written here, independently of baselines/, on the core's levels
        def step(self, eps, z, i, grid, ctx):
            a, b = grid.alpha_src[i], grid.alpha_tgt[i]
            mid = Level.flow(0.5 * (a.sigma + b.sigma))
            v0 = eps(z, grid.source_time(i))
            from easyinv.inversion import ddim_step
            return ddim_step(z, eps(ddim_step(z, v0, a, mid), 1000.0 * mid.sigma), a, b)

    # only the inversion has midpoints here, so each injected sampling step finds its level call (1 per step)
    result = VInjectEditor(num_steps=4, inject=3, blocks=(1,)).edit(_batch(flux, Midpoint(num_steps=4), 4))
    assert result.fields["v_injected_calls"] == 3
    assert (result.nfe_invert == 8).all()


def test_uni_edit_with_omega_zero_and_equal_prompts_is_the_reconstruction(flux):
    editor = UniEditEditor(num_steps=10, alpha=0.6, omega=0.0, token_patch=2)
    batch = _batch(flux, DDIM(num_steps=10, time="source"), 10, targets=SOURCE)
    result = editor.edit(batch)
    assert torch.equal(result.z_target, result.z_source)
    _, plain = _reconstruction(batch, editor, SOURCE, editor.guidance_scale, grid=partial_grid(batch.grid, 6))
    assert torch.equal(result.z_source, plain)
    assert (result.nfe_invert == 6).all() and (result.nfe_edit == 12).all()
    edited = UniEditEditor(num_steps=10, token_patch=2).edit(_batch(flux, batch.method, 10))
    assert not torch.allclose(edited.z_target, edited.z_source)


def test_uni_edit_inverts_with_the_empty_prompt_by_default_as_the_official_code(flux, tmp_path, tiny_model_cache):
    """UniEdit-Flow's FLUX code (``src/edit.py``: ``prepare(..., prompt="")``) and its diffusers demo invert with "";
    the source caption stays an option (``edit.inversion_prompt=source``)."""
    from hydra.utils import instantiate

    from baselines.uni_inv import UniInv

    editor = instantiate(_flow_demo_cfg(tmp_path, tiny_model_cache, "edit=uni_edit").edit)
    assert isinstance(editor, UniEditEditor) and editor.inversion_prompt == ""
    assert UniEditEditor().inversion_prompt == ""
    batch = _batch(flux, UniInv(num_steps=5), 5)
    partial = partial_grid(batch.grid, 3)
    for prompt, prompts in (("", ["", ""]), ("source", SOURCE)):
        ed = UniEditEditor(num_steps=5, token_patch=2, inversion_prompt=prompt)
        w = float(ed.invert_guidance)
        expected = invert_with(batch.method, batch.denoisers(prompts, {"invert": w, "reconstruct": w}), batch.z0,
                               partial, batch.seeds)
        assert torch.equal(ed.edit(batch).inversion.z_T, expected.z_T)


def test_token_mask_is_a_per_image_min_max_over_patches():
    v_s = torch.zeros(2, 4, 4, 4)
    v_t = torch.zeros(2, 4, 4, 4)
    v_t[0, :, :2, :2] = 3.0  # one 2×2 token of image 0 differs
    m = token_mask(v_s, v_t, patch=2)
    assert m.shape == (2, 1, 4, 4)
    assert torch.equal(m[0, 0, :2, :2], torch.ones(2, 2)) and m[0, 0, 2:].abs().sum() == 0
    assert torch.equal(m[1], torch.zeros(1, 4, 4))  # no difference anywhere: 0, not 0/0
    v_t[0, 0, 3, 3] = 4.0
    m = token_mask(v_s, v_t, patch=1)
    assert m[0].max() == 1.0 and m[0].min() == 0.0  # the channel mean: 3 in the corner token, 4/4 at (3, 3)
    assert torch.isclose(m[0, 0, 3, 3], torch.tensor(1 / 3))


def test_rf_inversion_editing_with_equal_prompts_is_its_reconstruction(flux):
    editor = RFInversionEditor(num_steps=8, guidance_scale=2.0)
    result = editor.edit(_batch(flux, DDIM(num_steps=8, time="source"), 8, targets=SOURCE))
    assert torch.equal(result.z_target, result.z_source)
    assert (result.nfe_invert == 8).all() and (result.nfe_edit == 8).all()
    assert result.fields["eta_steps"] == "0-2"


def test_controlled_sampling_with_eta_one_lands_on_the_source(tiny_model_cache):
    from easyinv.models.gaussian_flow import GaussianFlowModel

    model = GaussianFlowModel(0.1, 0.4, shift=3.0, resolution=4, net_dtype=torch.float64, latent_dtype=torch.float64)
    grid = model.grid(12)
    y0 = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z_T = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # noqa: N806
    landed = controlled_sample(model.denoiser(["", ""], 1.0), z_T, y0, grid, 1.0, 0.0, 1.0)
    assert (landed - y0).abs().max() < 1e-12
    free = controlled_sample(model.denoiser(["", ""], 1.0), z_T, y0, grid, 0.0, 0.0, 1.0)
    assert torch.equal(free, reconstruct_with(DDIM(num_steps=12), _den(model), _inv(z_T), grid))


def _den(model):
    from easyinv.inversion import Denoisers

    den = Denoisers(lambda w, n: model.denoiser(["", ""], w), ["", ""], {"invert": 1.0, "reconstruct": 1.0})
    den.phase = "reconstruct"
    return den


def _inv(z_T):  # noqa: N803
    from easyinv.inversion import Inversion

    return Inversion(z_T=z_T, trajectory=[z_T], nfe=torch.zeros(z_T.shape[0], dtype=torch.long))


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_flowedit_with_equal_prompts_returns_the_source_latent(which, flux, sd3):
    model = {"flux": flux, "sd3": sd3}[which]
    editor = FlowEditEditor(num_steps=6, n_max=5, guidance_scale=2.0, source_guidance=2.0)
    result = editor.edit(_batch(model, None, 6, targets=SOURCE))
    assert torch.equal(result.z_target, result.z_source)
    edited = FlowEditEditor(num_steps=6, n_max=5).edit(_batch(model, None, 6))
    assert not torch.allclose(edited.z_target, edited.z_source)
    per_call = 2 if which == "sd3" else 1  # SD3's CFG doubles the rows
    assert (edited.nfe_edit == 5 * 2 * per_call).all() and (edited.nfe_invert == 0).all()


def test_flowedit_in_epsilon_form_on_stable_diffusion(tiny_sd):
    same = FlowEditEditor(num_steps=6, n_max=4, guidance_scale=3.0, source_guidance=3.0)
    result = same.edit(_batch(tiny_sd, None, 6, targets=SOURCE, channels=4))
    assert torch.equal(result.z_target, result.z_source)
    edited = FlowEditEditor(num_steps=6, n_max=4, n_min=1).edit(_batch(tiny_sd, None, 6, channels=4))
    assert torch.isfinite(edited.z_target).all() and not torch.allclose(edited.z_target, edited.z_source)


def test_the_velocity_in_flow_coordinates_is_the_authors_epsilon_form():
    """ṽ_t − ṽ_s = [ε̂_t − ε̂_s − (z̃_e − x_src)]/(1 − s) on a VP level, with z_t − z_s = c·(z̃_e − x_src)."""
    g = torch.Generator().manual_seed(0)
    x_src, z_e, noise, e_s, e_t = (torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=g) for _ in range(5))
    abar = 0.37
    c, s = flow_coordinates(abar)
    z_s = c * ((1 - s) * x_src + s * noise)
    z_t = z_s + c * (z_e - x_src)
    ours = path_velocity(abar, z_t, e_t) - path_velocity(abar, z_s, e_s)
    theirs = (e_t - e_s - (z_e - x_src)) / (1 - s)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert flow_coordinates(Level.flow(0.3)) == (1.0, 0.3)


def test_flow_editors_batch_equals_singles(flux):
    method = DDIM(num_steps=4, time="source")
    for editor in (FlowEditEditor(num_steps=4, n_max=3), UniEditEditor(num_steps=4, token_patch=2),
                   RFInversionEditor(num_steps=4), VInjectEditor(num_steps=4, inject=1, blocks=(1,))):
        both = editor.edit(_batch(flux, method, 4, seeds=(5, 6)))
        for b in range(2):
            one = _batch(flux, method, 4, sources=SOURCE[b:b + 1], targets=TARGET[b:b + 1], seeds=(5 + b,))
            one.z0 = _batch(flux, method, 4, seeds=(5, 6)).z0[b:b + 1]
            single = editor.edit(one)
            assert torch.allclose(single.z_target, both.z_target[b:b + 1], atol=1e-5), editor.name
            assert torch.allclose(single.z_source, both.z_source[b:b + 1], atol=1e-5), editor.name


def test_editors_refuse_models_and_methods_they_cannot_serve():
    flux_cfg = OmegaConf.create({"name": "tiny-flux", "family": "flux", "path": "flow"})
    sd3_cfg = OmegaConf.create({"name": "tiny-sd3", "family": "sd3", "path": "flow"})
    sd_cfg = OmegaConf.create({"name": "tiny-sd", "family": "sd1"})
    ddim = DDIM(num_steps=4)
    assert "single-stream" in VInjectEditor().unsupported(sd3_cfg, ddim)
    assert VInjectEditor().unsupported(flux_cfg, ddim) is None
    assert "flow" in UniEditEditor().unsupported(sd_cfg, ddim)
    assert "vae_only" in FlowEditEditor().unsupported(flux_cfg, ddim)
    from baselines.vae_only import VAEOnly

    assert FlowEditEditor().unsupported(sd_cfg, VAEOnly()) is None
    from easyinv.editing.p2p import P2PEditor

    assert "Stable Diffusion" in P2PEditor().unsupported(flux_cfg, ddim)


def _flow_demo_cfg(root, cache, *overrides):
    """``experiment=editing_demo_flow`` as the app composes it (one job of its sweep), results under ``root``."""
    from hydra import compose, initialize_config_dir

    from easyinv.validation import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=["experiment=editing_demo_flow", f"paths.root={root}",
                                            f"paths.cache={cache}", "dataset.limit=2", *overrides])


@pytest.mark.parametrize(("overrides", "protocol", "model", "nfe"), [
    (("edit=v_inject", "method=fireflow", "edit.num_steps=4", "edit.inject=1"),
     "fireflow+free+v_inject", "tiny-flux", 5 + 5),  # FireFlow: T + 1 per direction
    (("edit=v_inject", "edit.num_steps=3"), "rf_solver+free+v_inject", "tiny-flux", 6 + 6),
    (("edit=uni_edit", "model=tiny-sd3", "edit.num_steps=5"), "uni_inv+free+uni_edit", "tiny-sd3", 4 + 6),
    (("edit=rf_inversion", "model=tiny-sd3", "edit.num_steps=4", "edit.invert_guidance=1.0",
      "edit.guidance_scale=1.0"), "rf_inversion+free+rf_inversion", "tiny-sd3", 4 + 4),
    (("edit=flowedit", "model=tiny-sd3", "edit.num_steps=4", "edit.n_max=3"), "vae_only+free+flowedit",
     "tiny-sd3", 3 * 4),  # SD3 CFG: 2 rows per branch and step
], ids=["fireflow", "rf_solver", "uni_edit", "rf_inversion", "flowedit"])
def test_flow_protocols_run_through_the_editing_job(tmp_path, tiny_model_cache, overrides, protocol, model, nfe):
    from easyinv.run.editing import EditJob
    from easyinv.run.records import read_records

    cfg = _flow_demo_cfg(tmp_path, tiny_model_cache, *overrides)
    run_dir = tmp_path / "runs" / "edit"
    EditJob(cfg, run_dir, overrides=[o for o in overrides if o.startswith("edit.")]).run()
    rows = read_records(run_dir)
    assert len(rows) == 2 and (rows.status == "ok").all()
    assert rows.protocol.str.split("[").str[0].eq(protocol).all() and (rows.model == model).all()
    assert (rows.nfe == nfe).all() and (rows.nfe == rows.nfe_invert + rows.nfe_edit).all()
    assert (rows.prompt_brackets == "stripped").all() and (rows.edit_type_set == "all").all()
    assert rows.psnr.notna().all() and rows.structure_distance.notna().all()


def test_flow_editors_refuse_in_one_line_before_any_weight_loads(tmp_path, tiny_model_cache):
    from easyinv.run.editing import EditJob
    from easyinv.validation import ConfigError

    with pytest.raises(ConfigError, match="single-stream"):
        EditJob(_flow_demo_cfg(tmp_path, tiny_model_cache, "edit=v_inject", "model=tiny-sd3"), tmp_path / "a")
    with pytest.raises(ConfigError, match="inversion-free"):
        EditJob(_flow_demo_cfg(tmp_path, tiny_model_cache, "edit=flowedit", "method=ddim"), tmp_path / "b")
    with pytest.raises(ConfigError, match="only Stable Diffusion"):
        EditJob(_flow_demo_cfg(tmp_path, tiny_model_cache, "edit=p2p"), tmp_path / "c")


def test_nfe_at_the_papers_settings_is_the_docs_table(flux, sd3):
    """inversion + edit per image at every editor's defaults = the 'Editing on flow models' table of docs/editing.md."""
    import re
    from pathlib import Path

    from baselines.midpoint import Midpoint
    from baselines.rf_inversion import RFInversion
    from baselines.uni_inv import UniInv

    one = {"sources": SOURCE[:1], "targets": TARGET[:1], "seeds": (7,)}
    sd3_flowedit = FlowEditEditor(num_steps=50, n_max=33, source_guidance=3.5, guidance_scale=13.5)
    runs = {
        "v_inject": (VInjectEditor(blocks=(0, 1)), flux, Midpoint(name="rf_solver", num_steps=15, reuse=False)),
        "v_inject (FireFlow)": (VInjectEditor(num_steps=8, inject=1, blocks=(0, 1)), flux,
                                Midpoint(name="fireflow", num_steps=8, reuse=True)),
        "uni_edit": (UniEditEditor(token_patch=2), flux, UniInv(num_steps=15)),
        "rf_inversion": (RFInversionEditor(), flux, RFInversion(num_steps=28)),
        "flowedit": (FlowEditEditor(), flux, None),
        "flowedit (SD3)": (sd3_flowedit, sd3, None),
    }
    measured = {}
    for key, (editor, model, method) in runs.items():
        steps = editor.num_steps if method is not None else 0
        result = editor.edit(_batch(model, method, steps, **one))
        measured[key] = (int(result.nfe_invert[0]), int(result.nfe_edit[0]))
    assert measured == {"v_inject": (30, 30), "v_inject (FireFlow)": (9, 9), "uni_edit": (10, 18),
                        "rf_inversion": (28, 28), "flowedit": (0, 48), "flowedit (SD3)": (0, 132)}
    page = (Path(__file__).resolve().parents[1] / "docs" / "editing.md").read_text(encoding="utf-8")
    section = page.split("## Editing on flow models", 1)[1].split("\n\n", 3)[2]
    totals = {row.split("|")[1].strip(" `"): row.split("|")[-2].strip() for row in section.splitlines()[2:]}
    assert totals["v_inject"] == "30 + 30 = 60 (FireFlow 9 + 9 = 18)"
    assert totals["uni_edit"] == "10 + 18 = 28" and totals["rf_inversion"] == "28 + 28 = 56"
    assert re.fullmatch(r"0 \+ 48 \(SD3: 132\)", totals["flowedit"])
