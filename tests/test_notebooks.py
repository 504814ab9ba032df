"""The notebooks are stored clean (no outputs, a papermill ``parameters`` cell, python3 kernel) and run top to bottom
on results made during the test (the shared 2 × 2 sweep with saved PNGs), with the results directory as parameter."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETER = {"results.ipynb": "runs_dir", "sweeps.ipynb": "sweep_dir", "api.ipynb": "model_config"}
PLOTTING_ONLY = ("results.ipynb", "sweeps.ipynb")  # notebooks of records, through the report layer


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind in out.get("data", {}) or (kind == "stream" and out.get("output_type") == "stream"):
                found.append(out)
    return found


@pytest.mark.parametrize("name", sorted(PARAMETER))
def test_notebook_is_stored_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source.startswith(f"{PARAMETER[name]} = ")
    if name in PLOTTING_ONLY:
        assert not any("easyinv.models" in c.source or "import torch" in c.source for c in code)


@pytest.mark.slow  # a kernel per notebook on the shared sweep: CI runs it (make test-slow)
@pytest.mark.parametrize("name", sorted(PLOTTING_ONLY))
def test_notebook_runs_on_fresh_results(name, easyinv_sweep, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / name
    parameters = {PARAMETER[name]: str(easyinv_sweep["sweep"])}
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(NOTEBOOKS), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    images = _outputs(nb, "image/png")
    if name == "results.ipynb":
        assert "8 records from 4 run directories" in text
        assert len(images) == 3  # distributions, qualitative grid (PNGs were saved), quality vs cost
        table = "".join(o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown"))
        assert "## Table 1" in table and table.count("| easyinv[") == 4
    else:
        assert "swept keys: ['method.eta', 'method.k']; 4 configurations, 8 records" in text
        assert len(images) == 2  # the η × k heatmap and the η curves


@pytest.mark.slow  # a kernel and a tiny pipeline: CI runs it (make test-slow)
def test_the_api_notebook_runs_on_a_tiny_pipeline(tiny_model_cache, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "api.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "api.ipynb"), str(out), parameters={"cache": str(tiny_model_cache),
                               "num_steps": 5}, kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream") if o.get("name") == "stdout")
    assert "StableDiffusionPipeline" in text and "easyinv[eta=0.5,num_steps=5]" in text
    assert "unet still trainable as loaded: True" in text and "+free+p2p NFE" in text
    assert len(_outputs(nb, "image/png")) == 1
