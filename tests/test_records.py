"""Records: durable appends, a killed writer's fragment tolerated, resume keys, config hashing, run manifest."""

from __future__ import annotations

import json
import math

import pytest

from easyinv.run.records import (
    RECORD_FIELDS,
    Record,
    RecordWriter,
    config_hash,
    done_keys,
    environment_info,
    flatten,
    read_records,
    write_run_manifest,
)


def _record(item: str, status: str = "ok", **kw) -> Record:
    fields = {"method": "easyinv", "method_label": "easyinv", "config_hash": "abc", "psnr": 30.0, "device": "cpu"}
    return Record(item_id=item, status=status, **{**fields, **kw})


def test_round_trip_keeps_fields_extra_keys_and_types(tmp_path):
    path = tmp_path / "run" / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("coco/1", nfe=100, warmup=True, lpips_comparable=True, extra={"method.eta": 0.5}))
        writer.append(_record("coco/2", status="nonfinite", reason="NaN latent after invert", psnr=float("nan")))
        writer.append({"item_id": "coco/3", "method": "ddim", "status": "ok", "config_hash": "def", "ssim": 0.5})
    df = read_records(tmp_path)
    assert list(df["item_id"]) == ["coco/1", "coco/2", "coco/3"]
    assert set(RECORD_FIELDS) <= set(df.columns) and "method.eta" in df.columns
    assert df.loc[0, "method.eta"] == 0.5 and df.loc[0, "nfe"] == 100 and df.loc[0, "warmup"]
    assert df.loc[0, "lpips_comparable"] and not df.loc[2, "lpips_comparable"] and not df.loc[2, "warmup"]
    assert math.isnan(df.loc[1, "psnr"])  # non-finite floats are written as null (strict JSON)
    assert df.loc[1, "reason"] == "NaN latent after invert"
    assert set(df["run_dir"]) == {str(path.parent)}
    lines = path.read_text().splitlines()
    assert json.loads(lines[1])["psnr"] is None and "NaN," not in lines[1]


def test_records_hold_primitives_only(tmp_path):
    with pytest.raises(TypeError, match="not a primitive"):
        RecordWriter(tmp_path / "r.jsonl").append({"item_id": "a", "method": "ddim", "status": "ok", "psnr": [1.0]})
    with pytest.raises(ValueError, match="status"):
        Record(item_id="a", method="ddim", status="crashed")
    with pytest.raises(ValueError, match="clash"):
        Record(item_id="a", method="ddim", extra={"psnr": 1.0})


def test_truncated_last_line_is_skipped_and_repaired_on_resume(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("a"))
        writer.append(_record("b", status="error", reason="OOM"))
    with path.open("a") as f:  # a writer killed in the middle of record "c"
        f.write('{"item_id": "c", "method": "easyinv", "status": "ok", "config_hash": "ab')

    assert list(read_records(path)["item_id"]) == ["a", "b"]
    assert done_keys(path) == {("a", "abc")}

    with RecordWriter(path) as writer:  # the resumed run appends after the fragment, on a line of its own
        writer.append(_record("c"))
        writer.append(_record("b"))  # the error, retried
    df = read_records(path)
    assert list(df["item_id"]) == ["a", "c", "b"] and list(df["status"]) == ["ok", "ok", "ok"]
    assert done_keys(path) == {("a", "abc"), ("b", "abc"), ("c", "abc")}
    assert len(read_records(path, dedupe=False)) == 4


def test_done_keys_lets_the_caller_choose_what_to_retry(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        for item, status in [("a", "ok"), ("b", "skipped"), ("c", "nonfinite"), ("d", "error")]:
            writer.append(_record(item, status=status))
    assert {k[0] for k in done_keys(path)} == {"a", "b", "c"}
    assert {k[0] for k in done_keys(path, retry=("error", "nonfinite"))} == {"a", "b"}
    assert done_keys(tmp_path / "missing.jsonl") == set()


def test_read_records_recurses_into_run_dirs(tmp_path):
    for name in ("sweep/eta=0.3", "sweep/eta=0.5"):
        with RecordWriter(tmp_path / name / "records.jsonl") as writer:
            writer.append(_record("x", config_hash=name[-3:], extra={"method.eta": float(name[-3:])}))
    df = read_records([tmp_path / "sweep"])
    assert sorted(df["method.eta"]) == [0.3, 0.5]
    assert sorted(df["run_dir"]) == [str(tmp_path / "sweep/eta=0.3"), str(tmp_path / "sweep/eta=0.5")]
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nowhere")


def test_config_hash_is_canonical_and_sensitive_to_numbers_only():
    cfg = {"seed": 0, "method": {"_target_": "easyinv.method.EasyInv", "eta": 0.5, "interval": [2, 12]},
           "model": {"name": "sd14"}, "device": "cuda", "dataset": {"name": "coco", "limit": 10},
           "paths": {"root": "/home/a"}}
    shuffled = {"paths": {"root": "/elsewhere"}, "dataset": {"limit": 99, "name": "coco"}, "device": "cpu",
                "model": {"name": "sd14"}, "seed": 0,
                "method": {"interval": [2, 12], "eta": 0.5, "_target_": "easyinv.method.EasyInv"}}
    digest = config_hash(cfg)
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert config_hash(shuffled) == digest
    assert config_hash({**cfg, "method": {**cfg["method"], "eta": 0.3}}) != digest
    assert config_hash({**cfg, "seed": 1}) != digest
    assert config_hash({**cfg, "dataset": {"name": "folder", "limit": 10}}) != digest


def test_flatten_names_nested_keys_with_dots():
    assert flatten({"method": {"eta": 0.5, "blend": {"interval": [1, 2]}}, "seed": 3}) == {
        "method.eta": 0.5, "method.blend.interval": "[1, 2]", "seed": 3}


def test_run_manifest_has_config_versions_and_git(tmp_path):
    info = environment_info("cpu")
    assert info["packages"]["torch"] and "lpips" in info["packages"] and "hydra-core" in info["packages"]
    assert set(info["git"]) == {"sha", "dirty"} and info["device"]["type"] == "cpu"
    path = write_run_manifest(tmp_path / "run", {"config": {"seed": 7}, "seed": 7, "device": "cpu"})
    body = json.loads(path.read_text())
    assert path.name == "run.json" and body["config"] == {"seed": 7} and body["environment"]["python"]
