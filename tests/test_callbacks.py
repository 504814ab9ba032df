"""The end-of-run report (easyinv.callbacks): its defaults are PairedSettings' (as easyinv-report's are, and as
configs/config.yaml's report: keys must be), and a report that fails is one line and a non-zero exit, records kept."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from easyinv.callbacks import ReportCallback
from easyinv.report.paired import DEFAULT, PairedSettings
from easyinv.run.records import Record, RecordWriter
from easyinv.validation import CONFIG_DIR

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _records(root: Path) -> None:
    with RecordWriter(root / "ddim" / "records.jsonl") as writer:
        for i in range(3):
            writer.append(Record(item_id=f"x/{i}", method="ddim", method_label="ddim", config_hash="h", psnr=30.0 + i,
                                 nfe=10, t_total=1.0))


def _captured(monkeypatch) -> list[PairedSettings]:
    import easyinv.report

    seen: list[PairedSettings] = []

    def fake(run_dirs, out_dir, paired=None, **kwargs):
        seen.append(paired)
        return {}

    monkeypatch.setattr(easyinv.report, "write_report", fake)
    monkeypatch.setattr("easyinv.report.cli.write_report", fake)
    return seen


def test_the_config_report_keys_equal_the_paired_settings_defaults():
    """configs/config.yaml spells out report.* so that Hydra takes overrides; PairedSettings is the source."""
    section = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml").report)
    fields = {f.name for f in dataclasses.fields(PairedSettings)}
    in_yaml = {k: v for k, v in section.items() if k in fields}
    assert set(section) - fields == {"html"}, "a report.* key that PairedSettings lacks"
    assert in_yaml == {k: getattr(DEFAULT, k) for k in in_yaml}
    assert PairedSettings.from_options(section, ignore=("html",)) == DEFAULT


def test_the_cli_and_the_callback_default_to_paired_settings(tmp_path, monkeypatch):
    from easyinv.report.cli import main

    seen = _captured(monkeypatch)
    _records(tmp_path)
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--paper", "none"]) == 0
    ReportCallback()._report(tmp_path, OmegaConf.create({"report_dir": str(tmp_path / "cb")}))
    yaml = OmegaConf.load(CONFIG_DIR / "config.yaml").report
    ReportCallback()._report(tmp_path, OmegaConf.create({"report_dir": str(tmp_path / "cb2"), "report": yaml}))
    assert seen == [DEFAULT, DEFAULT, DEFAULT]
    main([str(tmp_path), "--out", str(tmp_path / "out"), "--baseline", "none", "--alpha", "0.01"])
    assert seen[-1] == dataclasses.replace(DEFAULT, baseline=None, alpha=0.01, require=frozenset({"baseline"}))


def test_an_unknown_report_key_is_one_line(tmp_path):
    config = OmegaConf.create({"report_dir": str(tmp_path / "out"), "report": {"alhpa": 0.1}})
    with pytest.raises(SystemExit) as raised:
        ReportCallback()._report(tmp_path, config)
    assert str(raised.value).startswith("easyinv-bench: report: unknown keys ['alhpa']; allowed: baseline, ")


def test_a_failing_report_is_one_line_naming_the_command_that_writes_it_again(tmp_path, monkeypatch):
    import easyinv.report

    def broken(*args, **kwargs):
        raise KeyError("psnr")

    monkeypatch.setattr(easyinv.report, "write_report", broken)
    _records(tmp_path)
    config = OmegaConf.create({"report_dir": str(tmp_path / "out")})
    with pytest.raises(SystemExit) as raised:
        ReportCallback()._report(tmp_path, config)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"easyinv-bench: the report in {tmp_path / 'out'} failed "
                                                      "(KeyError: 'psnr')")
    assert f"easyinv-report {tmp_path} --out {tmp_path / 'out'}" in message
    ReportCallback()._report(tmp_path, config, job_failed=True)  # the job's own error wins: no exit here


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_the_app_exits_non_zero_when_its_report_fails_and_keeps_the_records(tmp_path):
    """The real app (the demo's multirun, one method, two images): report_dir is a file, so writing the report
    fails; Hydra alone would warn and exit 0."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the report would go\n")
    out = subprocess.run([sys.executable, "-m", "easyinv", "hydra.sweeper.params.method=vae_only", "dataset.limit=2",
                          "metrics.enabled=[psnr,ssim]", f"paths.root={tmp_path}", f"report_dir={blocker}"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0, out.stdout[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"easyinv-bench: the report in {blocker} failed (") and "Traceback" not in out.stderr
    assert f"easyinv-report {tmp_path / 'results' / 'runs' / 'demo'} --out {blocker}" in last
    files = list((tmp_path / "results" / "runs" / "demo").rglob("records.jsonl"))
    assert len(files) == 1, files
    records = pd.read_json(files[0], lines=True)
    assert len(records) == 2 and set(records.status) == {"ok"}
