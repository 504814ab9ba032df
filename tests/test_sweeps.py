"""Sweeps end to end: one directory per configuration under one root, resuming, the sweep table with its list keys
split into numbers, heatmaps and η curves, ``easyinv-report --sweep``, and Optuna tuning when the plugin is there."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from easyinv.report import main, write_report
from easyinv.report.sweep_figures import sweep_curves, sweep_heatmaps
from easyinv.report.sweep_tables import sweep_axes, sweep_slice, sweep_table, swept_keys
from easyinv.run.records import Record, RecordWriter, read_records

REPO = Path(__file__).resolve().parent.parent


def _line_counts(sweep_root: Path) -> dict[str, int]:
    return {p.parent.name: len(p.read_text().splitlines()) for p in sorted(sweep_root.glob("*/records.jsonl"))}


# --------------------------------------------------------------------------------------------------------------------
# The real app (shared 2 x 2 multirun from conftest)
# --------------------------------------------------------------------------------------------------------------------


def test_each_configuration_gets_its_own_directory(easyinv_sweep):
    counts = _line_counts(easyinv_sweep["sweep"])
    assert len(counts) == 4 and set(counts.values()) == {2}
    for name in counts:  # path overrides (paths.root is a directory) never leak into the job's directory name
        assert "paths." not in name and "report_dir" not in name and name.startswith("method.eta=")
    hashes = read_records(easyinv_sweep["sweep"]).groupby("run_dir")["config_hash"].unique()
    assert len(hashes) == 4 and all(len(h) == 1 for h in hashes) and len({h[0] for h in hashes}) == 4


def test_sweep_report_aggregates_one_row_per_configuration(easyinv_sweep):
    report = easyinv_sweep["report"]
    sweep = pd.read_csv(report / "sweep.csv")
    assert sorted(zip(sweep["method.eta"], sweep["method.k"], strict=True)) == [(0.5, 1), (0.5, 2), (0.9, 1), (0.9, 2)]
    assert (sweep["n_ok"] == 2).all()
    records = read_records(easyinv_sweep["sweep"])
    for _, row in sweep.iterrows():
        mine = records[(records["method.eta"] == row["method.eta"]) & (records["method.k"] == row["method.k"])]
        assert row["psnr_mean"] == pytest.approx(mine["psnr"].mean(), abs=1e-5)
    best = json.loads((report / "best_configs.json").read_text())
    winner = sweep.loc[sweep["psnr_mean"].idxmax()]
    assert best["psnr"]["config"] == {"method.eta": float(winner["method.eta"]), "method.k": int(winner["method.k"])}
    md = (report / "sweep.md").read_text()
    assert "Best configuration per metric" in md and f"- PSNR ↑: {winner['psnr_mean']:.3f} at" in md
    for name in ("sweep_heatmap_eta__k.png", "sweep_curves_eta.png"):
        assert (report / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_rerunning_the_sweep_computes_nothing(easyinv_sweep, run_easyinv):
    before = _line_counts(easyinv_sweep["sweep"])
    again = run_easyinv(*easyinv_sweep["args"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert _line_counts(easyinv_sweep["sweep"]) == before
    assert (again.stdout + again.stderr).count("2 items, 0 to do") == 4


# --------------------------------------------------------------------------------------------------------------------
# Sweep tables and figures from synthetic records
# --------------------------------------------------------------------------------------------------------------------

WINDOWS = ("[10, 20]", "[2, 6]", "[1, 5]")  # text order 1, 10, 2; number order 1, 2, 10


def _write(path: Path, rows: list[tuple[dict, float]]) -> None:
    """Two images per configuration; psnr = value ± 0.5, so the mean is ``value``."""
    with RecordWriter(path / "records.jsonl") as writer:
        for n, (config, value) in enumerate(rows):
            for i, delta in enumerate((-0.5, 0.5)):
                writer.append(Record(item_id=f"img{i}", method="easyinv", method_label=f"easyinv-{n}", dataset="d",
                                     model="m", precision="fp32", device="cpu", config_hash=f"h{n}",
                                     psnr=value + delta, nfe=100, extra=config))


def test_list_keys_are_split_into_numbers_and_sorted_as_numbers(tmp_path):
    _write(tmp_path, [({"method.eta": 0.5, "method.interval": w}, 20.0 + i) for i, w in enumerate(WINDOWS)])
    df = read_records(tmp_path)
    sweep = sweep_table(df, swept_keys(df))
    assert list(sweep["method.interval"]) == ["[1, 5]", "[2, 6]", "[10, 20]"]
    assert list(sweep["method.interval.start"]) == [1.0, 2.0, 10.0]
    assert list(sweep["method.interval.end"]) == [5.0, 6.0, 20.0]
    # the end follows from the start here, so only the start is an axis
    assert sweep_axes(sweep) == {"method.interval.start": "method.interval"}


def test_independent_window_ends_make_a_second_axis(tmp_path):
    _write(tmp_path, [({"method.interval": f"[{s}, {e}]"}, 10.0 * s + e) for s in (0, 1) for e in (2, 3)])
    df = read_records(tmp_path)
    axes = sweep_axes(sweep_table(df, swept_keys(df)))
    assert axes == {"method.interval.start": "method.interval", "method.interval.end": "method.interval"}


def _grid(tmp_path: Path) -> pd.DataFrame:
    """η × k × window with PSNR = 10 η + k + window bonus; the best is η = 0.9, k = 2, window [0, 4]."""
    rows = []
    for eta in (0.5, 0.7, 0.9):
        for k in (1, 2):
            for window, bonus in (("[0, 4]", 1.0), ("[1, 5]", 0.0)):
                rows.append(({"method.eta": eta, "method.k": k, "method.interval": window}, 10 * eta + k + bonus))
    _write(tmp_path, rows)
    df = read_records(tmp_path)
    return sweep_table(df, swept_keys(df))


def test_slice_holds_the_other_keys_at_the_best_configuration(tmp_path):
    sweep = _grid(tmp_path)
    grid, held = sweep_slice(sweep, "method.eta", "method.k", "psnr")
    assert held == {"method.interval": "[0, 4]"}
    assert list(grid.columns) == [0.5, 0.7, 0.9] and list(grid.index) == [1, 2]
    assert grid.loc[2, 0.9] == pytest.approx(9 + 2 + 1) and grid.loc[1, 0.5] == pytest.approx(5 + 1 + 1)
    grid, held = sweep_slice(sweep, "method.eta", "method.interval.start", "psnr")
    assert held == {"method.k": 2} and grid.loc[1.0, 0.7] == pytest.approx(7 + 2 + 0)


def test_heatmaps_for_full_grids_and_curves_for_eta(tmp_path):
    sweep = _grid(tmp_path / "records")
    made = sorted(p.name for p in sweep_heatmaps(sweep, tmp_path / "figures"))
    assert made == ["sweep_heatmap_eta__interval.start.png", "sweep_heatmap_eta__k.png",
                    "sweep_heatmap_interval.start__k.png"]
    assert [p.name for p in sweep_curves(sweep, tmp_path / "figures")] == ["sweep_curves_eta.png"]
    holes = sweep[~((sweep["method.eta"] == 0.5) & (sweep["method.k"] == 2))]  # a TPE search leaves holes
    assert "sweep_heatmap_eta__k.png" not in [p.name for p in sweep_heatmaps(holes, tmp_path / "holes")]


def test_report_sweep_flag_needs_a_varying_key(tmp_path, capsys):
    _write(tmp_path / "one", [({"method.eta": 0.5}, 20.0)])
    with pytest.raises(SystemExit, match="no configuration key varies"):
        main([str(tmp_path / "one"), "--out", str(tmp_path / "out"), "--sweep", "--paper", "none"])
    assert not (tmp_path / "out").exists()  # refused before writing anything
    _write(tmp_path / "two", [({"method.eta": 0.5}, 20.0), ({"method.eta": 0.7}, 21.0)])
    assert main([str(tmp_path / "two"), "--out", str(tmp_path / "out2"), "--sweep", "--no-figures"]) == 0
    assert "sweep_md" in capsys.readouterr().out
    assert "sweep_md" not in write_report(tmp_path / "two", tmp_path / "out3", figures=False, sweep=False)


# --------------------------------------------------------------------------------------------------------------------
# Optuna (the `tune` extra)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_optuna_tunes_on_one_split_and_scores_on_the_other(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    args = ["hydra.sweeper.n_trials=2", "dataset.limit=2", f"paths.root={tmp_path}", "metrics.enabled=[psnr]"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "tune_then_eval.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    tuned = (tmp_path / "results" / "runs" / "tune_easyinv" / "optimization_results.yaml").read_text()
    assert "best_value" in tuned and "method.eta" in tuned
    summary = json.loads((tmp_path / "results" / "tune_easyinv" / "tune_then_eval.json").read_text())
    assert summary["objective"] == "psnr" and summary["direction"] == "maximize"
    params = summary["tuned"]["params"]
    assert 0.3 <= params["method.eta"] <= 1.0 and params["method.k"] in (1, 2, 3)
    trials = read_records(tmp_path / "results" / "runs" / "tune_easyinv")
    assert trials["config_hash"].nunique() == 2
    best = trials.groupby("config_hash")["psnr"].mean().max()
    assert summary["tuned"]["tune_split"]["value"] == pytest.approx(best, rel=1e-6)
    for entry in (summary["tuned"]["eval_split"], summary["defaults"]["eval_split"]):
        assert entry["n_images"] == 2 and math.isfinite(entry["value"])
    evaluated = read_records(tmp_path / "results" / "runs" / "tune_easyinv_eval")
    assert not set(evaluated["item_id"]) & set(trials["item_id"])  # the eval images were never tuned on
