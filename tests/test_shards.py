"""Scaling out: deterministic shards, one records file per writer, resume across shard counts, the completeness
check, the writer lock, and the launch engines (accelerate, submitit's local executor, the SLURM preset)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_cfg, run_job
from hydra import compose, initialize_config_dir

from easyinv.report import main as report_main
from easyinv.report import write_report
from easyinv.run.completeness import check_runs
from easyinv.run.reconstruction import Job
from easyinv.run.records import RecordsBusyError, RecordWriter, read_records
from easyinv.run.shards import Shard, resolve_shard, shard_of
from easyinv.validation import CONFIG_DIR, ConfigError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
QUALITY = ["item_id", "method", "config_hash", "status", "psnr", "ssim", "lpips", "latent_mse", "nfe", "nfe_invert",
           "nfe_reconstruct", "seed"]
GAUSS = ("model=gaussian", "model.error=0.05")


def _rows(df):
    return df.sort_values(["method", "item_id"])[QUALITY].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------------
# Membership
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_item_is_in_exactly_one_shard_and_ids_not_positions_decide(count):
    ids = [f"val2017/{n:012d}.jpg" for n in range(300)]
    owners = {i: [k for k in range(count) if Shard(k, count).owns(i)] for i in ids}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(o == [k] for o in owners.values()) for k in range(count)]
    assert min(sizes) > 300 / count / 2  # a hash, not a degenerate split
    grown = ["extra/a.png", *reversed(ids), "extra/b.png"]  # items added and the order changed
    assert all(shard_of(i, count) == owners[i][0] for i in grown if i in owners)


def test_shard_function_is_pinned():
    """Membership must not change between versions or machines: a resumed job relies on it."""
    assert [shard_of(f"photos/{n}.png", 7) for n in ("astronaut", "chelsea", "coffee")] == [6, 2, 0]
    assert shard_of("val2017/000000000139.jpg", 8) == 2
    assert shard_of("photos/astronaut.png", 3) == 2


def test_shard_keys_are_validated_and_leave_hash_and_directory_alone(tmp_path):
    with pytest.raises(ConfigError, match="shard.index"):
        resolve_shard({"index": 2, "count": 2}, "cpu")
    with pytest.raises(ConfigError, match="shard.count"):
        resolve_shard({"index": 0, "count": 0}, "cpu")
    hashes = {Job(make_cfg(tmp_path, *GAUSS, "method=easyinv", *s), tmp_path / "j").hash
              for s in [(), ("shard.count=3", "shard.index=2"), ("shard.count=2", "shard.index=0", "batch_size=4")]}
    assert len(hashes) == 1
    assert Job(make_cfg(tmp_path, "shard.count=3", "shard.index=2"), tmp_path / "j").records_path.name == \
        "records.shard-2-of-3.jsonl"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", return_hydra_config=True)
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {"shard.index", "shard.count", "device", "batch_size"} <= excluded


# --------------------------------------------------------------------------------------------------------------------
# Records of many writers: resume, check, lock
# --------------------------------------------------------------------------------------------------------------------


def test_resume_with_another_shard_count_computes_only_the_missing_rows(tmp_path, monkeypatch):
    args = (*GAUSS, "method=easyinv", "dataset.limit=8")
    single = read_records(run_job(tmp_path / "single", *args))
    for k in range(3):
        run_job(tmp_path, *args, "shard.count=3", f"shard.index={k}")
    job_dir = tmp_path / "runs" / "job"
    assert sorted(p.name for p in job_dir.glob("records*.jsonl")) == [
        f"records.shard-{k}-of-3.jsonl" for k in range(3)]
    assert _rows(read_records(job_dir)).equals(_rows(single))  # the union is the single-process run, row for row
    assert all(r.complete for r in check_runs(job_dir))

    lost = job_dir / "records.shard-1-of-3.jsonl"
    lost_ids = set(read_records(lost).item_id)
    assert lost_ids
    lost.unlink()
    missing = check_runs(job_dir)[0]
    assert not missing.complete and set(missing.missing) == lost_ids

    computed: list[str] = []
    original = Job._compute

    def counting(self, items, images, seeds):
        computed.extend(it.id for it in items)
        return original(self, items, images, seeds)

    monkeypatch.setattr(Job, "_compute", counting)
    run_job(tmp_path, *args)  # one process, no shard keys
    assert set(computed) == lost_ids and len(computed) == len(lost_ids)
    assert (job_dir / "records.jsonl").is_file()
    assert _rows(read_records(job_dir)).equals(_rows(single))
    computed.clear()
    run_job(tmp_path, *args, "shard.count=2", "shard.index=1")  # any shard count now finds everything done
    assert computed == []


def test_check_lists_missing_and_duplicated_rows_and_the_report_says_incomplete(tmp_path, capsys):
    args = (*GAUSS, "method=ddim", "dataset.limit=6")
    job_dir = run_job(tmp_path, *args, "shard.count=2", "shard.index=0")
    expected_missing = sorted(i for i in read_records(run_job(tmp_path / "ref", *args)).item_id if shard_of(i, 2) == 1)
    assert expected_missing

    assert report_main([str(tmp_path / "runs"), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"missing {len(expected_missing)}" in out and "INCOMPLETE" in out
    assert all(i in out for i in expected_missing)

    files = write_report([tmp_path / "runs"], tmp_path / "report", paper_dir=None, figures=False)
    md = files["table1_md"].read_text()
    assert md.index("Incomplete run") < md.index("| Method")
    assert f"{len(expected_missing)} of 6 items missing" in md

    run_job(tmp_path, *args, "shard.count=2", "shard.index=1")
    assert report_main([str(job_dir), "--check"]) == 0
    assert "complete" in capsys.readouterr().out
    files = write_report([tmp_path / "runs"], tmp_path / "report", paper_dir=None, figures=False)
    assert "Incomplete" not in files["table1_md"].read_text()

    shutil.copy(job_dir / "records.shard-0-of-2.jsonl", job_dir / "records.jsonl")  # the same rows twice
    duplicated = sorted(read_records(job_dir / "records.jsonl").item_id)
    assert report_main([str(job_dir), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"duplicated {len(duplicated)}" in out and all(i in out for i in duplicated)
    assert len(read_records(job_dir)) == 6  # readers still count each image once


def test_an_error_row_never_hides_a_finished_row_of_another_writer(tmp_path):
    with RecordWriter(tmp_path / "records.jsonl") as w:
        w.append({"item_id": "a", "method": "ddim", "status": "ok", "config_hash": "h", "device": "cpu", "psnr": 30})
    with RecordWriter(tmp_path / "records.shard-0-of-2.jsonl") as w:  # sorted after records.jsonl
        w.append({"item_id": "a", "method": "ddim", "status": "error", "config_hash": "h", "device": "cpu"})
    df = read_records(tmp_path)
    assert list(df.status) == ["ok"] and df.psnr.iloc[0] == 30


def test_a_second_writer_on_the_same_file_is_refused(tmp_path):
    path = tmp_path / "records.shard-0-of-2.jsonl"
    with RecordWriter(path) as first:
        first.append({"item_id": "a", "method": "ddim", "status": "ok"})
        with pytest.raises(RecordsBusyError, match="another process"):
            RecordWriter(path).open()
        RecordWriter(tmp_path / "records.shard-1-of-2.jsonl").open()  # another shard is another file
    with RecordWriter(path) as again:  # released on close
        again.append({"item_id": "b", "method": "ddim", "status": "ok"})
    assert list(read_records(path).item_id) == ["a", "b"]


def test_the_app_refuses_a_busy_shard_in_one_line(tmp_path):
    run_dir = tmp_path / "job"
    ids = [f"photos/{n}.png" for n in ("astronaut", "chelsea", "coffee", "grace_hopper")]
    assert any(shard_of(i, 2) == 1 for i in ids)
    with RecordWriter(run_dir / "records.shard-1-of-2.jsonl") as held:
        held.open()
        out = subprocess.run(
            [sys.executable, "-m", "easyinv", "experiment=none", "model=gaussian", "method=ddim",
             "dataset=samples", "dataset.subset=all", "dataset.limit=4", "shard.count=2", "shard.index=1",
             "metrics.lpips.random_trunk=true", "device=cpu", f"paths.root={tmp_path}", f"hydra.run.dir={run_dir}"],
            env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("easyinv-bench: ") and "records.shard-1-of-2.jsonl" in last and "another process" in last
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------------------------------------------------
# Launch engines
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_presets_compose(launcher):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}", "experiment=table1", "shard.count=8",
                                           "shard.index=5", "hydra.launcher.timeout_min=30"],
                      return_hydra_config=True)
    hl = cfg.hydra.launcher
    assert hl._target_.endswith("SlurmLauncher" if launcher == "slurm" else "LocalLauncher")
    assert hl.timeout_min == 30 and str(hl.submitit_folder).endswith("runs/table1/.submitit/%j")  # the sweep dir
    assert (cfg.shard.index, cfg.shard.count) == (5, 8)
    if launcher == "slurm":
        for key in ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism", "account", "qos",
                    "additional_parameters", "max_num_timeout"):
            assert key in hl, key
        assert hl.gpus_per_node == 1 and hl.max_num_timeout > 0


def _accelerate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("accelerate")
    launch = [str(exe), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
              "no", "--dynamo_backend", "no", "-m", "easyinv"]
    return subprocess.run([*launch, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_accelerate_two_processes_equal_one_process_and_report_once(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU machine: two gloo processes, one shard each."""
    args = ["experiment=none", *GAUSS, "method=easyinv", "dataset.limit=5"]
    out = _accelerate("-m", *args, "device=auto", "metrics.lpips.random_trunk=true", f"paths.root={tmp_path}",
                      "report_dir=${paths.results}/report", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    sweep = tmp_path / "results" / "runs" / "adhoc"
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    assert sorted(p.name for p in job.glob("records*.jsonl")) == [
        "records.shard-0-of-2.jsonl", "records.shard-1-of-2.jsonl"]
    assert (out.stdout + out.stderr).count("report written to") == 1  # by the main process, after both finished
    assert (tmp_path / "results" / "report" / "table1.md").is_file()
    both = read_records(sweep)
    assert len(both) == 5 and both.records_file.nunique() == 2
    one = read_records(run_job(tmp_path / "one", *args[1:]))  # one process, in this one (one thread, as under torchrun)
    assert _rows(both).equals(_rows(one))
    assert report_main([str(sweep), "--check"]) == 0


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_submitit_local_array_of_shards_completes_and_checks(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "easyinv", "-m", "hydra/launcher=local", "experiment=none", *GAUSS,
         "method=ddim,easyinv", "shard.count=2", "shard.index=range(0,2)", "dataset.limit=4",
         "metrics.lpips.random_trunk=true", "device=cpu", f"paths.root={tmp_path}", f"report_dir={tmp_path}/report"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    sweep = tmp_path / "results" / "runs" / "adhoc"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2  # 4 array tasks, 2 job directories: the shards of a method share one
    assert all(len(list(j.glob("records.shard-*-of-2.jsonl"))) >= 1 for j in jobs)
    assert report_main([str(sweep), "--check"]) == 0
    assert len(read_records(sweep)) == 8
    assert (tmp_path / "report" / "table1.md").is_file()
