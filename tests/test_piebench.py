"""PIE-Bench data: the run-length mask decoder (border rule, clipping, odd lengths), prompts with brackets removed,
deterministic subsets, skipped entries with reasons, and a reconstruction run over a generated mini PIE-Bench."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_mini_piebench, run_job

from easyinv.data.base import DatasetNotFoundError, SkipItem
from easyinv.data.piebench import PieBenchDataset, decode_mask, strip_brackets
from easyinv.run.records import read_records


def test_mask_decoding_follows_the_reference():
    runs = [3, 4, 512 * 7 + 510, 5, 512 * 512 - 2, 9]  # a run that wraps to the next row, one clipped at the end
    bare = decode_mask(runs, border=False)
    assert bare.shape == (512, 512) and bare.dtype == bool
    assert bare[0, 3:7].all() and not bare[0, 2] and not bare[0, 7]
    assert bare[7, 510:].all() and bare[8, :3].all() and not bare[8, 3]
    assert bare[511, 510:].all() and bare.sum() == 4 + 5 + 2
    framed = decode_mask(runs)
    assert framed[0].all() and framed[-1].all() and framed[:, 0].all() and framed[:, -1].all()
    assert framed.sum() == 4 * 511 + (bare[1:-1, 1:-1].sum())
    with pytest.raises(ValueError, match="odd length"):
        decode_mask([1, 2, 3])
    assert decode_mask([], border=False).sum() == 0


def test_prompts_subsets_and_bad_entries(tmp_path):
    root = make_mini_piebench(tmp_path / "pie")
    ds = PieBenchDataset(root=root, prompt="caption")
    items = {it.id: it for it in ds.items()}
    assert list(items) == ["000000000000", "111000000000", "111000000001", "211000000000", "900000000000"]
    first = items["000000000000"]
    assert first.prompt == "a cat sitting on a mat 0" and first.meta["target_prompt"] == "a dog sitting on a mat 0"
    assert first.meta["source_prompt_raw"] == "a [cat] sitting on a mat 0"
    assert first.meta["blend_words"] == ("cat", "dog") and items["111000000000"].meta["blend_words"] is None
    assert first.meta["edit_type"] == 0
    mask = ds.edit_mask(first)
    assert mask[100, 100:150].all() and mask[101, 100:150].all() and not mask[102, 120] and mask[0, 300]
    assert ds.load(first, 64).shape == (64, 64, 3)
    with pytest.raises(SkipItem, match="lacks mask"):
        ds.load(items["211000000000"], 64)
    with pytest.raises(SkipItem, match="expected 512x512"):
        ds.load(items["900000000000"], 64)
    assert PieBenchDataset(root=root, prompt="empty").items()[0].prompt == ""
    assert [it.id for it in PieBenchDataset(root=root, per_type=1).items()] == [
        "000000000000", "111000000000", "211000000000", "900000000000"]
    assert [it.id for it in PieBenchDataset(root=root, edit_types=[1]).items()] == ["111000000000", "111000000001"]
    assert [it.id for it in PieBenchDataset(root=root, ids=["111000000001"]).items()] == ["111000000001"]
    assert strip_brackets("[a] [b]") == "a b"
    with pytest.raises(DatasetNotFoundError, match="mapping_file.json"):
        PieBenchDataset(root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="edit_types"):
        PieBenchDataset(root=root, edit_types=[10])


def test_a_reconstruction_run_over_piebench_records_skips_with_reasons(tmp_path):
    root = make_mini_piebench(tmp_path / "pie")
    df = read_records(run_job(tmp_path, "model=gaussian", "method=ddim", "dataset=piebench",
                              f"dataset.root={root}")).set_index("item_id")
    assert df.status.to_dict() == {"000000000000": "ok", "111000000000": "ok", "111000000001": "ok",
                                   "211000000000": "skipped", "900000000000": "skipped"}
    assert "lacks mask" in df.reason["211000000000"] and np.isfinite(df.psnr["000000000000"])
    assert df.prompt["111000000000"] == "a cat sitting on a mat 1"
