"""Every editor of the ``edit`` config group, found from its YAML (no list to edit): on each tiny model it runs one
mini PIE-Bench image through the editing job at its paper's defaults (its own inversion), with NFE accounted as the
sum of its phases, or it is refused in one line before any weight loads (``Editor.unsupported``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from easyinv.validation import CONFIG_DIR, ConfigError

EDITORS = sorted(p.stem for p in (Path(CONFIG_DIR) / "edit").glob("*.yaml"))
MODELS = ("tiny-sd", "tiny-flux", "tiny-sd3")


def _cfg(root, cache, *overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=["experiment=editing_demo_flow", f"paths.root={root}",
                                            f"paths.cache={cache}", "dataset.limit=1", *overrides])


def test_the_edit_group_is_found():
    assert {"p2p", "masactrl", "v_inject", "uni_edit", "rf_inversion", "flowedit"} <= set(EDITORS)


@pytest.mark.parametrize("editor", EDITORS)
def test_every_editor_runs_on_a_model_it_serves_and_refuses_the_others_in_one_line(tmp_path, tiny_model_cache,
                                                                                    editor):
    from easyinv.run.editing import EditJob
    from easyinv.run.records import read_records

    served = []
    for model in MODELS:
        cfg = _cfg(tmp_path, tiny_model_cache, f"edit={editor}", f"model={model}")
        try:
            job = EditJob(cfg, tmp_path / "runs" / model)
        except ConfigError as refusal:
            assert "\n" not in str(refusal) and str(refusal), refusal
            continue
        served.append((model, job))
    assert served, f"edit={editor} serves none of {MODELS}"
    model, job = served[0]  # one run per editor keeps the suite short; the others were built and checked
    job.run()
    rows = read_records(tmp_path / "runs" / model)
    assert len(rows) == 1 and (rows.status == "ok").all(), rows.get("reason")
    parts = rows.nfe_invert + rows.get("nfe_offsets", 0) + rows.nfe_edit
    assert (rows.nfe == parts).all() and (rows.nfe > 0).all()
    assert rows.structure_distance.notna().all() and rows.psnr.notna().all()
