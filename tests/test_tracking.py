"""Experiment tracking (easyinv.report.tracking): real runs of the Gaussian model (two images, five steps) logged to a
real MLflow SQLite store and to W&B offline, read back through ``MlflowClient`` and by parsing W&B's offline run file.
The numbers a tracker shows are the report's table1.csv; a re-logged job updates its run; a tracker that is down
costs one warning line. The app end to end and a real ``mlflow server`` are under ``slow``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_job
from omegaconf import OmegaConf
from wandb_offline import offline_runs, read_offline_run

from easyinv.callbacks import ReportCallback
from easyinv.report.track_content import collect, hashed_params, table_row
from easyinv.report.track_mlflow import embedded_uri
from easyinv.report.tracking import TrackingSettings, track
from easyinv.report.writer import write_report
from easyinv.run.records import config_hash, read_records

METHODS = ("vae_only", "ddim")
CHEAP = ("model=gaussian", "dataset.limit=2", "metrics.enabled=[psnr,ssim]")


def _job(root: Path, method: str, *overrides: str, sweep: str = "sweep") -> Path:
    steps = () if method == "vae_only" else ("method.num_steps=5",)
    return run_job(root, *CHEAP, f"method={method}", *steps, *overrides, name=f"{sweep}/method={method}")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A two-job sweep, its report, and the sweep logged to an embedded MLflow store."""
    root = tmp_path_factory.mktemp("tracking")
    for method in METHODS:
        _job(root, method)
    sweep, report = root / "runs" / "sweep", root / "report"
    write_report([sweep], report, paper_dir=None, figures=False)
    settings = TrackingSettings(backend="mlflow", store=str(root / "mlflow"), experiment="bench")
    ids = track([sweep], report, settings)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=embedded_uri(settings.store))
    return {"root": root, "sweep": sweep, "report": report, "settings": settings, "ids": ids, "client": client,
            "experiment": client.get_experiment_by_name("bench").experiment_id}


def _runs(logged) -> list:
    return logged["client"].search_runs([logged["experiment"]])


def test_a_sweep_is_one_parent_and_a_child_per_job_with_the_tables_numbers(logged):
    runs = {r.info.run_name: r for r in _runs(logged)}
    assert set(runs) == {"sweep", "method=vae_only", "method=ddim"}
    parent = runs["sweep"]
    table = pd.read_csv(logged["report"] / "table1.csv")
    assert len(table) == len(METHODS)
    for method in METHODS:
        child = runs[f"method={method}"]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        manifest = json.loads((logged["sweep"] / f"method={method}" / "run.json").read_text())
        assert child.data.tags["easyinv.config_hash"] == manifest["config_hash"] == config_hash(manifest["config"])
        assert child.data.tags.get("easyinv.git_commit") == manifest["environment"]["git"].get("sha")  # none: no git
        assert child.data.tags["easyinv.torch"] == manifest["environment"]["packages"]["torch"]
        assert child.data.tags["easyinv.device"] == "cpu"
        # params: the resolved config without the keys the hash leaves out (paths, device, ... are tags or nothing)
        assert child.data.params == hashed_params(manifest["config"])
        assert child.data.params["method.name"] == method and child.data.params["model.name"] == "gaussian"
        assert child.data.params["precision.name"] == "fp32" and child.data.params["seed"] == "0"
        assert "device" not in child.data.params and not any(k.startswith("paths.") for k in child.data.params)
        row = table[table["config_hash"] == manifest["config_hash"]].iloc[0]
        metrics = child.data.metrics
        for column in ("psnr_mean", "psnr_ci95", "ssim_mean", "ssim_ci95", "nfe_mean", "time_s_mean", "n_ok",
                       "n_error", "n_nonfinite"):
            if pd.isna(row[column]):  # an empty cell (the CI of an infinite PSNR) is no metric
                assert column not in metrics
                continue
            expected = min(max(float(row[column]), -sys.float_info.max), sys.float_info.max)  # MLflow clamps ±inf
            assert metrics[column] == pytest.approx(expected, rel=1e-12, abs=0), column
        assert metrics["ssim_ci_low"] == pytest.approx(row["ssim_mean"] - row["ssim_ci95"])
        assert metrics["ssim_ci_high"] == pytest.approx(row["ssim_mean"] + row["ssim_ci95"])
        assert not any(k.startswith("paper_") for k in metrics)


def test_the_artifacts_are_the_records_and_the_report(logged, tmp_path):
    client = logged["client"]
    runs = {r.info.run_name: r for r in _runs(logged)}
    report_files = {a.path for a in client.list_artifacts(runs["sweep"].info.run_id, "report")}
    assert {"report/table1.csv", "report/table1.md", "report/table1.tex"} <= report_files
    child = runs["method=ddim"]
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"records.parquet", "config.json"}
    local = Path(client.download_artifacts(child.info.run_id, "records.parquet", str(tmp_path)))
    logged_rows = pd.read_parquet(local)
    records = read_records(logged["sweep"] / "method=ddim")
    assert len(logged_rows) == len(records) == 2
    assert list(logged_rows["psnr"]) == pytest.approx(list(records["psnr"]))
    assert sorted(logged_rows["item_id"]) == sorted(records["item_id"])


def test_logging_again_updates_the_runs_and_never_duplicates_them(logged):
    before = {r.info.run_id for r in _runs(logged)}
    again = track([logged["sweep"]], logged["report"], logged["settings"])
    assert again == logged["ids"]
    assert {r.info.run_id for r in _runs(logged)} == before  # found by config hash / sweep name, not created anew
    for method in METHODS:  # an unchanged number is not logged again, an infinite one (vae_only's PSNR) neither
        run_id = logged["ids"][json.loads((logged["sweep"] / f"method={method}" / "run.json").read_text())[
            "config_hash"]]
        assert len(logged["client"].get_metric_history(run_id, "psnr_mean")) == 1, method


def test_a_resumed_job_updates_its_run(logged, tmp_path):
    """The ddim job resumed with a third image (dataset.limit is no part of the hash): the same run, new numbers."""
    root = tmp_path / "copy"
    import shutil

    shutil.copytree(logged["sweep"], root / "runs" / "sweep")
    ddim = _job(root, "ddim", "dataset.limit=3")
    report = tmp_path / "report"
    write_report([root / "runs" / "sweep"], report, paper_dir=None, figures=False)
    ids = track([root / "runs" / "sweep"], report, logged["settings"])
    digest = json.loads((ddim / "run.json").read_text())["config_hash"]
    assert ids[digest] == logged["ids"][digest]
    run = logged["client"].get_run(ids[digest])
    assert run.data.tags["easyinv.images"] == "3"
    row = pd.read_csv(report / "table1.csv").set_index("config_hash").loc[digest]
    assert run.data.metrics["psnr_mean"] == pytest.approx(float(row["psnr_mean"]))
    assert len(logged["client"].get_metric_history(ids[digest], "psnr_mean")) == 2
    assert len(_runs(logged)) == 3


def test_a_sweeps_children_carry_their_swept_values(logged, easyinv_sweep):
    """The shared 2 × 2 multirun (η × k, conftest): four children of one parent, each with its η and k as params
    and as metrics (trackers plot metrics against metrics), its numbers the sweep report's table1.csv row."""
    settings = dataclasses.replace(logged["settings"], experiment="swept")
    ids = track([easyinv_sweep["sweep"]], easyinv_sweep["report"], settings)
    client = logged["client"]
    runs = client.search_runs([client.get_experiment_by_name("swept").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ids["adhoc"]]
    assert len(runs) == 5 and len(children) == 4
    pairs = sorted((r.data.metrics["swept.method.eta"], r.data.metrics["swept.method.k"]) for r in children)
    assert pairs == [(0.5, 1), (0.5, 2), (0.9, 1), (0.9, 2)]
    table = pd.read_csv(easyinv_sweep["report"] / "table1.csv", dtype={"config_hash": str}).set_index("config_hash")
    for run in children:
        assert float(run.data.params["method.eta"]) == run.data.metrics["swept.method.eta"]
        assert run.data.metrics["ssim_mean"] == float(table.loc[run.data.tags["easyinv.config_hash"], "ssim_mean"])


def test_the_easyinv_report_track_flag_logs_existing_run_dirs(logged, tmp_path):
    from easyinv.report.cli import main

    store = Path(logged["settings"].store)  # one store per module: a new SQLite store costs seconds of migrations
    assert main([str(logged["sweep"]), "--out", str(tmp_path / "out"), "--paper", "none", "--no-figures", "--track",
                 "mlflow", "--tracking-store", str(store)]) == 0
    client = logged["client"]
    experiment = client.get_experiment_by_name("adhoc")  # the runs' experiment_name (run.json)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["method=ddim", "method=vae_only", "sweep"]
    artifacts = Path(experiment.artifact_location.removeprefix("file://"))
    assert artifacts == store.resolve() / "artifacts"  # beside the SQLite file, not in the CWD's ./mlruns


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracker_that_is_down_costs_one_warning_line(logged, caplog):
    dead = TrackingSettings(backend="mlflow", uri=f"http://127.0.0.1:{_closed_port()}", experiment="bench")
    with caplog.at_level(logging.INFO, logger="easyinv.report.tracking"):
        assert track([logged["sweep"]], logged["report"], dead) is None
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = line.getMessage()
    assert "\n" not in message and message.startswith("tracking: not logged to mlflow (URLError")
    assert f"--track mlflow --tracking-uri {dead.uri}" in message and str(logged["sweep"]) in message
    assert (logged["report"] / "table1.csv").is_file() and len(read_records(logged["sweep"])) == 4


@pytest.mark.slow  # the callback writes the whole report with its figures
def test_the_callback_logs_after_the_report_and_a_failure_keeps_the_run(tmp_path, caplog):
    """Tracking on and no report_dir: the report goes to <root>/report and the job is logged from it; a dead tracker
    is one warning line and the callback ends normally."""
    run_dir = _job(tmp_path, "ddim", sweep="one")
    store = tmp_path / "mlflow"
    config = OmegaConf.create({"report_dir": None, "experiment_name": "cb",
                               "tracking": {"backend": "mlflow", "uri": None, "store": str(store),
                                            "experiment": "${experiment_name}"}})
    ReportCallback()._report(run_dir, config)
    assert (run_dir / "report" / "table1.csv").is_file()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=embedded_uri(store))
    (run,) = client.search_runs([client.get_experiment_by_name("cb").experiment_id])
    assert "mlflow.parentRunId" not in run.data.tags  # one job alone: no parent, and its run holds the report
    assert "report/table1.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    config.tracking.uri = f"http://127.0.0.1:{_closed_port()}"
    caplog.clear()  # the first call's info line may have been captured too (the root logger's level decides)
    with caplog.at_level(logging.WARNING, logger="easyinv.report.tracking"):
        ReportCallback()._report(run_dir, config)
    assert [r.getMessage()[:31] for r in caplog.records if r.name == "easyinv.report.tracking"
            and r.levelno >= logging.WARNING] == ["tracking: not logged to mlflow "]


@pytest.mark.slow  # two more jobs and reports
def test_a_sharded_job_is_logged_once_its_shards_are_in(logged, tmp_path):
    """Two shards of one job, run one after the other (a SLURM array's tasks): the first to end finds rows missing
    and logs nothing; the last logs the merged job. (Under ``accelerate launch`` only the main process reaches this.)
    Of the first four sample images shard 0 owns one, shard 1 three."""
    settings = TrackingSettings(backend="mlflow", store=logged["settings"].store, experiment="shards")
    first = _job(tmp_path, "ddim", "dataset.limit=4", "shard.index=0", "shard.count=2", sweep="sharded")
    write_report([first], tmp_path / "r0", paper_dir=None, figures=False)
    assert track([first], tmp_path / "r0", settings, complete_only=True) == {}  # rows missing: not logged yet
    _job(tmp_path, "ddim", "dataset.limit=4", "shard.index=1", "shard.count=2", sweep="sharded")
    write_report([first], tmp_path / "r1", paper_dir=None, figures=False)
    ids = track([first], tmp_path / "r1", settings, complete_only=True)
    assert len(ids) == 1
    client = logged["client"]
    (run,) = client.search_runs([client.get_experiment_by_name("shards").experiment_id])
    assert run.data.tags["easyinv.images"] == "4" and run.data.tags["easyinv.complete"] == "true"


@pytest.mark.slow  # W&B's offline writer starts a service process
def test_wandb_offline_logs_the_same_content(logged, tmp_path):
    """The W&B runs hold what the MLflow ones do (the collected content), read back from the offline run files."""
    settings = TrackingSettings(backend="wandb", dir=str(tmp_path / "wb"), experiment="bench")
    ids = track([logged["sweep"]], logged["report"], settings)
    runs = {r.run_id: r for r in map(read_offline_run, offline_runs(tmp_path / "wb"))}
    assert set(runs) == set(ids.values()) and len(runs) == 3
    table = pd.read_csv(logged["report"] / "table1.csv").set_index("config_hash")
    (root,) = collect([logged["sweep"]], logged["report"])
    for job in root.jobs:
        offline = runs[ids[job.key]]
        assert offline.group == "sweep" and offline.job_type == "job" and offline.name == job.name
        assert {k: v for k, v in offline.config.items() if not k.startswith("_")} == {**job.params, **job.tags}
        assert job.params == hashed_params(json.loads((job.run_dir / "run.json").read_text())["config"])
        assert offline.history["psnr_mean"] == pytest.approx(float(table.loc[job.key, "psnr_mean"]))
        assert offline.summary["psnr_mean"] == pytest.approx(float(table.loc[job.key, "psnr_mean"]))
        assert {k: v for k, v in offline.history.items() if not k.startswith("_")} == pytest.approx(job.metrics)
        assert "records.parquet" in offline.files
    sweep = runs[ids["sweep"]]
    assert sweep.job_type == "sweep" and "report/table1.csv" in sweep.files


def test_tracking_settings_refuse_an_unknown_backend_or_mode():
    with pytest.raises(ValueError, match="tracking.backend"):
        TrackingSettings(backend="tensorboard")
    with pytest.raises(ValueError, match="tracking.mode"):
        TrackingSettings(backend="wandb", mode="shared")
    assert TrackingSettings.from_config({"backend": "wandb", "project": "p", "mode": "online"}).experiment == "p"


def _app(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "easyinv", "experiment=demo", "dataset.limit=2", "report.html=false",
                             f"paths.root={root}", *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _children_equal_the_table(client, experiment_id: str, sweep: str, table: pd.DataFrame) -> None:
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if r.data.tags.get("easyinv.kind") == "sweep"]
    assert [p.info.run_name for p in parents] == [sweep]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1 == len(table)
    for child in children:
        row = table.set_index("config_hash").loc[child.data.tags["easyinv.config_hash"]]
        for column in ("ssim_mean", "nfe_mean", "n_ok", "time_s_mean"):
            assert child.data.metrics[column] == pytest.approx(float(row[column]), rel=1e-12, abs=0)


@pytest.mark.slow  # the app's demo multirun in a child process
def test_the_demo_multirun_logs_a_parent_and_its_children_to_the_embedded_store(tmp_path):
    done = _app(tmp_path, "hydra.sweeper.params.method='vae_only,ddim'", "tracking=mlflow")
    output = done.communicate(timeout=600)[0]
    assert done.returncode == 0, output[-4000:]
    runs_dir = tmp_path / "results" / "runs"
    # tracking=mlflow is no part of a job directory's name (dataset.limit, report.html neither)
    assert sorted(p.name for p in (runs_dir / "demo").iterdir() if p.is_dir()) == ["method=ddim", "method=vae_only"]
    assert "tracking: 2 job(s) logged to the embedded store" in output
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=embedded_uri(tmp_path / "results" / "tracking" / "mlflow"))
    experiment = client.get_experiment_by_name("demo")
    _children_equal_the_table(client, experiment.experiment_id, "demo",
                              pd.read_csv(runs_dir / "demo_report" / "table1.csv"))


def _start_server(store: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1 with its own SQLite backend and artifact folder; returns once /health answers."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", embedded_uri(store),
         "--artifacts-destination", str(store / "served"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    _stop(server)
    raise AssertionError("mlflow server did not answer /health within 180 s")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # the session this test started: the server and its workers
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.mark.slow  # a real `mlflow server` and the app's multirun in child processes
def test_a_server_that_stops_mid_sweep_costs_one_line_and_track_logs_the_sweep_after_it_restarts(tmp_path):
    store, port = tmp_path / "server", _closed_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(store, port)
    try:
        sweep = _app(tmp_path, "hydra.sweeper.params.method='vae_only,ddim,easyinv'", "tracking=mlflow",
                     f"tracking.uri={uri}")
        runs_dir = tmp_path / "results" / "runs"
        second = runs_dir / "demo" / "method=ddim" / "run.json"
        deadline = time.monotonic() + 600
        while not second.exists() and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sweep.poll() is None, "the sweep ended before the server could be stopped mid-sweep"
        _stop(server)  # mid-sweep: the second of three jobs has started
        output = sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 0, output[-4000:]
        warnings = [line for line in output.splitlines() if "tracking:" in line]
        assert len(warnings) == 1 and "not logged to mlflow" in warnings[0], warnings
        assert f"--track mlflow --tracking-uri {uri}" in warnings[0]
        records = read_records(runs_dir / "demo")
        assert len(records) == 6 and set(records["status"]) == {"ok"}  # every record kept
        table = pd.read_csv(runs_dir / "demo_report" / "table1.csv")  # and the report written
        assert len(table) == 3

        server = _start_server(store, port)
        from easyinv.report.cli import main

        assert main([str(runs_dir / "demo"), "--out", str(runs_dir / "demo_report"), "--paper", "none",
                     "--no-figures", "--track", "mlflow", "--tracking-uri", uri]) == 0
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("demo")
        _children_equal_the_table(client, experiment.experiment_id, "demo",
                                  pd.read_csv(runs_dir / "demo_report" / "table1.csv"))
        (ddim,) = client.search_runs([experiment.experiment_id], "tags.`easyinv.method_label` = 'ddim'")
        assert {a.path for a in client.list_artifacts(ddim.info.run_id)} == {"records.parquet", "config.json"}
    finally:
        _stop(server)


def test_a_jobs_table_row_is_found_by_hash_or_by_its_protocol():
    table1 = pd.DataFrame({"method": ["ddim", "easyinv"], "config_hash": ["aaa", "bbb,ccc"], "psnr_mean": [20.0, 30.0]})
    editing = pd.DataFrame({"dataset": ["pie", "pie"], "model": ["flux", "flux"], "precision": ["fp32", "fp32"],
                            "protocol": ["p2p", "fireflow+free+v_inject"], "structure_distance_mean": [0.1, 0.2]})
    records = pd.DataFrame({"dataset": ["pie"] * 2, "model": ["flux"] * 2, "precision": ["fp32"] * 2,
                            "protocol": ["fireflow+free+v_inject"] * 2})
    assert table_row([table1, editing], "ccc", records.iloc[:0])["psnr_mean"] == 30.0  # one row, two hashes
    assert table_row([table1, editing], "zzz", records)["structure_distance_mean"] == 0.2
    mixed = records.assign(protocol=["p2p", "fireflow+free+v_inject"])
    assert table_row([table1, editing], "zzz", mixed) == {}  # not one protocol: no row is the job's


def test_a_tracker_that_is_not_installed_costs_one_line_naming_the_extra(logged, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as without the extra
    settings = TrackingSettings(backend="wandb", dir=str(logged["root"] / "never"))
    with caplog.at_level(logging.WARNING, logger="easyinv.report.tracking"):
        assert track([logged["sweep"]], logged["report"], settings) is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "easyinv.report.tracking"]
    assert "ModuleNotFoundError" in line and "pip install 'easyinv-bench[track]'" in line


def test_a_cuda_runs_gpu_name_is_a_tag(logged, tmp_path):
    """run.json of a CUDA run names its GPU (records.environment_info); here one is written as a CUDA run writes it."""
    import shutil

    job = shutil.copytree(logged["sweep"] / "method=ddim", tmp_path / "gpu" / "method=ddim")
    manifest = json.loads((job / "run.json").read_text())
    manifest["environment"]["device"] = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "9.0"}
    (job / "run.json").write_text(json.dumps(manifest))
    (root,) = collect([tmp_path / "gpu"], logged["report"])
    assert root.jobs[0].tags["easyinv.gpu"] == "NVIDIA H100 80GB HBM3"
    (cpu,) = collect([logged["sweep"] / "method=ddim"], logged["report"])
    assert "easyinv.gpu" not in cpu.jobs[0].tags
