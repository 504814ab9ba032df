"""The editing walk on tiny-sd (editing.md §6.4(4)) and the editing job end to end on the generated mini PIE-Bench.

Invariants: the controllers never touch the source branch; identical source and target prompts under ``free`` give
target == source; under ``direct_offsets`` the source branch follows the inversion trajectory at every step and the
offset pass uses the edit pass's kernels; ``ref_latents`` pins the source to the inversion before each step.
"""

from __future__ import annotations

import pytest
import torch

from baselines.ddim import DDIM
from easyinv.editing.masactrl import MasaCtrlEditor
from easyinv.editing.p2p import P2PEditor
from easyinv.editing.walk import EditUNet, edit
from easyinv.inversion import ddim_step, invert

T = 10
SOURCE = ["a photo of the cat on a mat", "a cat and a dog"]
TARGET = ["a photo of the dog on a mat", "a cat and a big dog"]
BLEND = [("cat", "dog"), ("dog", "dog")]


def _p2p() -> P2PEditor:
    return P2PEditor(blend_map_size=4)  # tiny-sd's cross-attention runs at 4×4 on an 8×8 latent


def _masactrl() -> MasaCtrlEditor:
    return MasaCtrlEditor(start_step=2, start_layer=3)  # tiny-sd has 6 transformer blocks; 3-5 = up_blocks.0


@pytest.fixture(scope="module")
def inverted(tiny_sd):
    """Two random latents inverted with DDIM (T = 10) on the source prompts: the grid and the trajectory."""
    grid = tiny_sd.grid(T)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    trajectory = invert(DDIM(num_steps=T), tiny_sd.denoiser(SOURCE, 1.0), z0, grid).trajectory
    return grid, trajectory


def _walk(model, editor, grid, trajectory, source="free", targets=TARGET, active=True, keep=False, blend=BLEND):
    controller = editor.controller(SOURCE, targets, blend, model.prompts.tokenizers[0], grid.T)
    unet = EditUNet(model, SOURCE, targets, editor.guidance_scale)
    if not active:  # a passive controller: same kernels, no edit
        controller.begin = _passive(controller)
    return edit(unet, controller, grid, trajectory, source, keep_source_path=keep), controller


def _passive(controller):
    begin = controller.begin

    def passive_begin(layout):
        begin(layout)
        controller.active = False

    return passive_begin


@pytest.mark.parametrize("make", [_p2p, _masactrl], ids=["p2p", "masactrl"])
def test_controllers_leave_the_source_branch_alone(tiny_sd, inverted, make):
    grid, trajectory = inverted
    edited, _ = _walk(tiny_sd, make(), grid, trajectory)
    plain, _ = _walk(tiny_sd, make(), grid, trajectory, active=False)
    torch.testing.assert_close(edited.z_source, plain.z_source, rtol=0, atol=1e-6)
    assert (edited.z_target - plain.z_target).abs().max() > 1e-4  # the edit did something to the target
    assert edited.nfe_edit.tolist() == [4 * T, 4 * T] and edited.nfe_offsets.tolist() == [0, 0]


@pytest.mark.parametrize("make", [_p2p, _masactrl], ids=["p2p", "masactrl"])
def test_identical_prompts_give_target_equal_to_source(tiny_sd, inverted, make):
    grid, trajectory = inverted
    # no blend words: nothing but the prompts could differ (a reweight of a word is an edit of its own)
    out, _ = _walk(tiny_sd, make(), grid, trajectory, targets=SOURCE, blend=[None, None])
    torch.testing.assert_close(out.z_target, out.z_source, rtol=0, atol=1e-6)


def test_direct_offsets_pin_the_source_branch_to_the_inversion(tiny_sd, inverted):
    grid, trajectory = inverted
    out, _ = _walk(tiny_sd, _p2p(), grid, trajectory, source="direct_offsets", keep=True)
    assert len(out.source_path) == T
    assert out.nfe_offsets.tolist() == [4 * T, 4 * T] and out.nfe_edit.tolist() == [4 * T, 4 * T]
    free, _ = _walk(tiny_sd, _p2p(), grid, trajectory, keep=True)
    assert (free.z_source - trajectory[0]).abs().max() > 1e-3  # without offsets the tiny model drifts


def test_direct_offsets_hold_the_source_branch_to_float_rounding_over_50_steps(tiny_sd):
    """The offset pass carries ẑ + offset (PnPInversion's ``latent_cur = latents_prev_rec + loss``), the number the
    edit pass puts in its source row, so both passes see the same latents: after every sampling step n the source
    row is trajectory[T − 1 − n] up to the rounding of ẑ + (z* − ẑ), a few ulps, at every one of 50 guided steps
    (seeding the pass with z* instead drifted to ~1.7 by step 50)."""
    steps = 50
    grid = tiny_sd.grid(steps)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    trajectory = invert(DDIM(num_steps=steps), tiny_sd.denoiser(SOURCE, 1.0), z0, grid).trajectory
    out, _ = _walk(tiny_sd, _p2p(), grid, trajectory, source="direct_offsets", keep=True)
    assert len(out.source_path) == steps
    for n, z in enumerate(out.source_path):
        target = trajectory[steps - 1 - n]
        ulp = torch.finfo(target.dtype).eps * target.abs().max()
        torch.testing.assert_close(z, target, rtol=0, atol=float(4 * ulp))


def test_ref_latents_replace_the_source_before_each_step(tiny_sd, inverted):
    grid, trajectory = inverted
    out, _ = _walk(tiny_sd, _masactrl(), grid, trajectory, source="ref_latents", keep=True)
    # the last step starts from trajectory[1] whatever came before: one guided DDIM step from there
    eps_src, _ = EditUNet(tiny_sd, SOURCE, TARGET, 7.5).guided(trajectory[1], trajectory[1], grid.timesteps[0], T - 1)
    expected = ddim_step(trajectory[1], eps_src, grid.alpha_tgt[0], grid.alpha_src[0])
    torch.testing.assert_close(out.z_source, expected, rtol=0, atol=1e-5)
    free, _ = _walk(tiny_sd, _masactrl(), grid, trajectory, keep=True)
    assert (free.z_source - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="edit.source"):
        _walk(tiny_sd, _masactrl(), grid, trajectory, source="pinned")
    with pytest.raises(ValueError, match="trajectory"):
        _walk(tiny_sd, _masactrl(), grid, trajectory[:-1])


def _editing_demo_cfg(root, cache, *overrides):
    """``experiment=editing_demo`` as the app composes it (one job of its sweep), results under ``root``."""
    from hydra import compose, initialize_config_dir

    from easyinv.validation import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=["experiment=editing_demo", f"paths.root={root}", f"paths.cache={cache}",
                                            *overrides])


def test_editing_demo_end_to_end(tmp_path, tiny_model_cache):
    """One job of the editing demo on the generated mini PIE-Bench with tiny random DINO / CLIP (3 images, 5 steps):
    records with the protocol and the eight metrics, the editing table with † marks, the strip figure."""
    from easyinv.report import write_report
    from easyinv.run.editing import EditJob
    from easyinv.run.records import read_records

    cfg = _editing_demo_cfg(tmp_path, tiny_model_cache, "method=easyinv", "edit.source=direct_offsets",
                            "method.num_steps=5", "dataset.limit=3")
    run_dir = tmp_path / "runs" / "edit"
    EditJob(cfg, run_dir).run()
    ok = read_records(run_dir)
    assert len(ok) == 3 and set(ok.status) == {"ok"} and set(ok.protocol) == {"easyinv+direct_offsets+p2p"}
    for key in ("structure_distance", "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part",
                "clip_similarity_target_image", "clip_similarity_target_image_edit_part", "psnr"):
        assert ok[key].notna().all(), key
    assert (ok.nfe_offsets == 4 * 5).all() and (ok.nfe_edit == 4 * 5).all() and (ok.nfe_invert == 5).all()
    assert not ok.structure_comparable.any() and not ok.clip_comparable.any()
    written = write_report([run_dir], tmp_path / "report")
    table = written["editing_md"].read_text()
    assert "easyinv+direct_offsets+p2p" in table and "†" in table
    assert written["editing_by_type_md"].is_file() and written["fig_editing_strip"].is_file()
    assert len(list((run_dir / "edit").rglob("*.png"))) == 3
    EditJob(cfg, run_dir).run()  # resuming a finished job computes nothing
    assert len(read_records(run_dir, dedupe=False)) == 3


def test_editing_needs_an_sd_model_and_an_editing_dataset(tmp_path, tiny_model_cache):
    from easyinv.run.editing import EditJob
    from easyinv.validation import ConfigError

    with pytest.raises(ConfigError, match="only Stable Diffusion 1.x / XL"):
        EditJob(_editing_demo_cfg(tmp_path, tiny_model_cache, "model=gaussian"), tmp_path / "a")
    with pytest.raises(ConfigError, match="editing dataset"):
        EditJob(_editing_demo_cfg(tmp_path, tiny_model_cache, "dataset=samples"), tmp_path / "b")
    with pytest.raises(ConfigError, match="edit.source"):
        EditJob(_editing_demo_cfg(tmp_path, tiny_model_cache, "edit.source=pinned"), tmp_path / "c")
    job = EditJob(_editing_demo_cfg(tmp_path, tiny_model_cache, "edit_metrics.random_for_tests=false",
                                    f"paths.models={tmp_path / 'none'}"), tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="dino_vitbase8_pretrain.pth"):
        job.run()  # a missing weight file stops the job before any model loads, naming the file


def test_editing_table_scales_excludes_nan_and_joins_the_published_rows():
    """Synthetic records of the DDIM+P2P protocol on sd14: Table 1's scaling, NaN rows left out per column, the
    published row beside ours with the difference; † and no difference when a metric came from random weights."""
    import pandas as pd

    from easyinv.report.editing_tables import display, editing_table, load_paper_edits

    rows = []
    for k, (structure, psnr_bg) in enumerate([(0.07, 17.0), (0.06, float("nan")), (0.08, 19.0)]):
        rows.append({"dataset": "piebench", "model": "sd14", "protocol": "ddim+free+p2p", "precision": "fp32",
                     "edit_type": k % 2, "status": "ok", "warmup": False, "t_total": 40.0, "nfe": 250, "psnr": 25.0,
                     "structure_distance": structure, "psnr_unedit_part": psnr_bg, "lpips_unedit_part": 0.2,
                     "mse_unedit_part": 0.02, "ssim_unedit_part": 0.7, "clip_similarity_target_image": 25.0,
                     "clip_similarity_target_image_edit_part": 22.0, "clip_similarity_source_image": 26.0,
                     "structure_comparable": True, "clip_comparable": True, "bg_lpips_comparable": False})
    rows.append({**rows[0], "status": "nonfinite", "structure_distance": None})
    table = editing_table(pd.DataFrame(rows), load_paper_edits())
    (row,) = table.to_dict("records")
    assert row["n_ok"] == 3 and row["n_nonfinite"] == 1
    assert row["structure_distance_mean"] == pytest.approx(70.0) and row["psnr_unedit_part_n"] == 2
    assert row["psnr_unedit_part_mean"] == pytest.approx(18.0) and row["mse_unedit_part_mean"] == pytest.approx(200.0)
    assert row["paper_structure_distance"] == pytest.approx(69.43) and row["paper_source"] == "PnPInversion Table 1"
    shown = display(table).iloc[0]
    assert shown["Δ Structure"] == "+0.57" and shown["Δ BG LPIPS"] == "—" and shown["BG LPIPS ×10³ ↓"].endswith("†")
    assert shown["Failures"] == "1 nonfinite" and "Paper CLIP source" not in shown.index
    assert len(editing_table(pd.DataFrame(rows), None, by_type=True)) == 2
