"""Folder datasets: stable ids and order whatever the file system does, sidecar captions, skips instead of crashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from easyinv.data import folder as folder_module
from easyinv.data.base import DatasetNotFoundError, SkipItem
from easyinv.data.folder import FolderDataset

REPO = Path(__file__).parents[1]
EXPECTED = ["A.PNG", "a.jpg", "a.png", "b/c.JPEG", "b/z.webp", "b/zz/d.tif", "broken.jpg", "y.gif"]


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    root = tmp_path / "imgs"
    (root / "b" / "zz").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ["y.gif", "b/zz/d.tif", "a.png", "A.PNG", "b/z.webp", "a.jpg", "b/c.JPEG", ".hidden/h.png", "._a.jpg"]:
        Image.new("RGB", (80, 70), (len(name) * 20, 0, 0)).save(root / name, format=_format(name))
    (root / "broken.jpg").write_text("not a jpeg")
    (root / "notes.md").write_text("ignored")
    (root / "a.txt").write_text("  a red\nsquare ")
    return root


def _format(name: str) -> str:
    ext = name.rsplit(".", 1)[1].lower()
    return {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(ext, ext.upper())


def test_ids_are_sorted_relative_paths(image_dir):
    assert [i.id for i in FolderDataset(root=image_dir).items()] == EXPECTED


def test_order_does_not_depend_on_listing_order(image_dir, monkeypatch):
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):
        for folder, dirs, files in real_walk(top, *args, **kwargs):
            dirs.reverse()
            yield folder, dirs, files[::-1]

    monkeypatch.setattr(folder_module.os, "walk", reversed_walk)
    assert [i.id for i in FolderDataset(root=image_dir).items()] == EXPECTED


def test_sidecar_captions(image_dir):
    items = {i.id: i for i in FolderDataset(root=image_dir, prompt="caption").items()}
    assert items["a.jpg"].prompt == items["a.png"].prompt == "a red square"
    assert items["a.jpg"].meta["caption_source"] == "sidecar"
    assert items["b/c.JPEG"].prompt == ""
    assert all(i.prompt == "" for i in FolderDataset(root=image_dir).items())


def test_unreadable_caption_becomes_a_skip(image_dir):
    (image_dir / "y.txt").write_bytes(b"\xff\xfe\xfa bad utf-8")
    ds = FolderDataset(root=image_dir, prompt="caption")
    item = next(i for i in ds.items() if i.id == "y.gif")
    with pytest.raises(SkipItem, match="caption"):
        ds.load(item, 32)


def test_load_and_skip(image_dir):
    ds = FolderDataset(root=image_dir)
    items = {i.id: i for i in ds.items()}
    assert ds.load(items["b/zz/d.tif"], 32).shape == (32, 32, 3)
    with pytest.raises(SkipItem, match="not an image"):
        ds.load(items["broken.jpg"], 32)


def test_limit_offset_and_describe(image_dir):
    ds = FolderDataset(root=image_dir, limit=2, offset=1)
    assert [i.id for i in ds.items()] == EXPECTED[1:3]
    info = ds.describe()
    assert info["n_total"] == 8 and info["n_items"] == 2 and info["preprocess"]["resize"] == "stretch"


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        FolderDataset(root=tmp_path / "nowhere")


def test_bad_window_fails_early(image_dir):
    with pytest.raises(ValueError, match="dataset.offset"):
        FolderDataset(root=image_dir, offset=-1)
    with pytest.raises(ValueError, match="dataset.prompt"):
        FolderDataset(root=image_dir, prompt="blip")


def test_config_instantiates(image_dir):
    cfg = OmegaConf.load(REPO / "configs/dataset/folder.yaml")
    cfg.root = str(image_dir)
    ds = instantiate(cfg)
    assert isinstance(ds, FolderDataset) and ds.preprocess.resize == "center_crop"
    assert [i.id for i in ds.items()] == EXPECTED


def test_tune_and_eval_subsets_partition_the_items(tmp_path):
    for n in range(40):
        Image.new("RGB", (70, 70), (n, 0, 0)).save(tmp_path / f"img{n:02d}.png")
    full = [it.id for it in FolderDataset(root=tmp_path, name="f").items()]
    tune = [it.id for it in FolderDataset(root=tmp_path, name="f", subset="tune", tune_fraction=0.3).items()]
    held = [it.id for it in FolderDataset(root=tmp_path, name="f", subset="eval", tune_fraction=0.3).items()]
    assert set(tune).isdisjoint(held) and sorted(tune + held) == full
    assert 4 <= len(tune) <= 20  # about 30 % of 40
    # membership depends on the id alone: a limit never moves an image from one split to the other
    limited = FolderDataset(root=tmp_path, name="f", subset="tune", limit=3, tune_fraction=0.3).items()
    limited = [it.id for it in limited]
    assert limited == tune[:3]
    with pytest.raises(ValueError, match="dataset.subset"):
        FolderDataset(root=tmp_path, name="f", subset="train")
