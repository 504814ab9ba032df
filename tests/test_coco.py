"""The COCO-2017 sample on a synthetic COCO root: filter, seeded sample, manifest bytes, captions, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from easyinv.data.base import DatasetNotFoundError, SkipItem
from easyinv.data.coco import CocoDataset, build_manifest, is_near_square, read_manifest

REPO = Path(__file__).parents[1]

# (image_id, width, height): near-square means 0.9*w < h and 0.9*h < w
VAL = [(1, 100, 90), (2, 100, 91), (3, 90, 100), (4, 91, 100), (5, 160, 120), (6, 80, 80), (7, 110, 105)]
TEST = [(11, 120, 120), (12, 150, 100), (13, 181, 200), (14, 180, 200), (15, 96, 100), (16, 70, 72)]
ELIGIBLE = {("val2017", i) for i in (2, 4, 6, 7)} | {("test2017", i) for i in (11, 13, 15, 16)}
# val captions; image 2's lowest annotation id is 21, so that caption is the one chosen
CAPTIONS = [
    (30, 2, "A dog on grass."),
    (21, 2, '  Second, "quoted"\n caption  '),
    (40, 4, "A red\tbus."),
    (41, 6, "A cat."),
]


def write_split(root: Path, split: str, images, captions=None, name: str | None = None) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, w, h in images:
        file_name = f"{image_id:012d}.jpg"
        Image.new("RGB", (w, h), (image_id * 10 % 256, 80, 160)).save(root / split / file_name)
        entries.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
    data = {"info": {}, "licenses": [], "images": entries}
    if captions is not None:
        data["annotations"] = [{"id": a, "image_id": i, "caption": c} for a, i, c in captions]
    kind = "captions" if captions is not None else "image_info"
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / (name or f"{kind}_{split}.json")).write_text(json.dumps(data))


@pytest.fixture()
def coco_root(tmp_path) -> Path:
    root = tmp_path / "coco"
    write_split(root, "val2017", VAL, CAPTIONS)
    write_split(root, "test2017", TEST)
    return root


def make(root: Path, tmp_path: Path, **kwargs) -> CocoDataset:
    kwargs.setdefault("n", 4)
    kwargs.setdefault("manifest", tmp_path / "cache" / f"coco{kwargs['n']}-seed{kwargs.get('seed', 0)}.csv")
    return CocoDataset(root=root, **kwargs)


@pytest.mark.parametrize(
    ("w", "h", "keep"),
    [
        (100, 90, False),
        (100, 91, True),
        (90, 100, False),
        (91, 100, True),
        (1000, 900, False),
        (1000, 901, True),
        (640, 480, False),
        (1, 1, True),
    ],
)
def test_near_square_bound_is_strict(w, h, keep):
    assert is_near_square(w, h) is keep


def test_filter_and_eligible_counts(coco_root):
    rows, eligible = build_manifest(coco_root, ["val2017", "test2017"], n=8, seed=0)
    assert eligible == {"val2017": 4, "test2017": 4}
    assert {(r.split, r.image_id) for r in rows} == ELIGIBLE
    assert [(r.split, r.image_id) for r in rows] == sorted(ELIGIBLE)


def test_sample_size_order_and_seed(coco_root, tmp_path):
    a = [(r.split, r.image_id) for r in build_manifest(coco_root, ["val2017", "test2017"], n=3, seed=0)[0]]
    b = [(r.split, r.image_id) for r in build_manifest(coco_root, ["val2017", "test2017"], n=3, seed=1)[0]]
    five = [(r.split, r.image_id) for r in build_manifest(coco_root, ["val2017", "test2017"], n=5, seed=0)[0]]
    assert len(a) == 3 and a == sorted(a) and set(a) <= ELIGIBLE
    assert a != b  # another seed, another sample
    assert set(a) <= set(five)  # hash-rank sampling: a smaller n is a prefix of the same ranking


def test_manifest_is_byte_identical_on_rebuild(coco_root, tmp_path):
    first = make(coco_root, tmp_path, manifest=tmp_path / "one" / "m.csv")
    second = make(coco_root, tmp_path, manifest=tmp_path / "two" / "m.csv")
    for suffix in (".csv", ".json"):
        one, two = (d.manifest.with_suffix(suffix).read_bytes() for d in (first, second))
        assert one == two and b"\r\n" not in one
    assert [i.id for i in first.items()] == [i.id for i in second.items()]
    header = first.manifest.read_text().splitlines()[0]
    assert header == "split,image_id,file_name,width,height,caption_id,caption,sha256"


def test_captions_and_prompt_policy(coco_root, tmp_path):
    ds = make(coco_root, tmp_path, n=8, prompt="caption")
    items = {i.id: i for i in ds.items()}
    assert items["val2017/000000000002"].prompt == 'Second, "quoted" caption'
    assert items["val2017/000000000002"].meta["caption_id"] == 21
    assert items["val2017/000000000004"].prompt == "A red bus."
    assert items["val2017/000000000007"].prompt == ""  # a val image without captions
    assert all(items[f"test2017/{i:012d}"].prompt == "" for i in (11, 13, 15, 16))
    assert ds.describe()["prompt_counts"] == {"caption": 3, "empty": 5}
    rows = {r.image_id: r for r in read_manifest(ds.manifest)}
    assert rows[2].caption == 'Second, "quoted" caption' and rows[11].caption_id is None
    empty = make(coco_root, tmp_path, n=8, manifest=tmp_path / "e.csv")
    assert all(i.prompt == "" for i in empty.items())
    assert empty.describe()["prompt_counts"] == {"caption": 0, "empty": 8}


def test_load_checks_sha256(coco_root, tmp_path):
    ds = make(coco_root, tmp_path, n=8)
    items = ds.items()
    assert all(len(i.meta["sha256"]) == 64 for i in items)
    assert ds.load(items[0], 32).shape == (32, 32, 3)
    Image.new("RGB", (120, 120), "white").save(items[0].path)  # a different local copy
    with pytest.raises(SkipItem, match="sha256 mismatch"):
        ds.load(items[0], 32)
    items[1].path.unlink()
    with pytest.raises(SkipItem, match="not found"):
        ds.load(items[1], 32)


def test_manifest_is_reused_and_checked(coco_root, tmp_path):
    manifest = tmp_path / "m.csv"
    first = make(coco_root, tmp_path, manifest=manifest)
    for path in (coco_root / "annotations").iterdir():
        path.unlink()  # a reused manifest needs no annotations
    again = make(coco_root, tmp_path, manifest=manifest)
    assert [i.id for i in again.items()] == [i.id for i in first.items()]
    assert again.describe()["eligible"] == {"test2017": 4, "val2017": 4}
    with pytest.raises(ValueError, match="other settings.*seed"):
        make(coco_root, tmp_path, manifest=manifest, seed=1)


def test_limit_and_offset(coco_root, tmp_path):
    full = [i.id for i in make(coco_root, tmp_path, n=8).items()]
    assert [i.id for i in make(coco_root, tmp_path, n=8, limit=3, offset=2).items()] == full[2:5]


def test_too_many_requested(coco_root, tmp_path):
    with pytest.raises(ValueError, match="n=9 but only 8"):
        make(coco_root, tmp_path, n=9)


def test_missing_files_raise_one_clear_error(coco_root, tmp_path):
    (coco_root / "annotations" / "image_info_test2017.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"annotations/image_info_test2017\.json"):
        make(coco_root, tmp_path)
    with pytest.raises(DatasetNotFoundError, match="COCO root not found"):
        make(tmp_path / "nowhere", tmp_path)


def test_instances_file_is_a_fallback_without_captions(tmp_path):
    root = tmp_path / "coco"
    write_split(root, "val2017", VAL, captions=[], name="instances_val2017.json")
    ds = make(root, tmp_path, n=4, splits=["val2017"], prompt="caption")
    assert [i.prompt for i in ds.items()] == [""] * 4


def test_missing_image_folder(coco_root, tmp_path):
    for path in (coco_root / "test2017").iterdir():
        path.unlink()
    (coco_root / "test2017").rmdir()
    with pytest.raises(DatasetNotFoundError, match="test2017"):
        make(coco_root, tmp_path)


def test_script_writes_the_same_manifest(coco_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_coco_manifest", REPO / "scripts/make_coco_manifest.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "script" / "m.csv"
    assert script.main(["--coco-root", str(coco_root), "--out", str(out), "--n", "4", "--seed", "0", "--hash"]) == 0
    printed = capsys.readouterr().out
    assert "val2017: 4 near-square" in printed and "test2017: 4 near-square" in printed
    ds = make(coco_root, tmp_path, manifest=tmp_path / "ds" / "m.csv")
    assert out.read_bytes() == ds.manifest.read_bytes()
    assert out.with_suffix(".json").read_bytes() == ds.manifest.with_suffix(".json").read_bytes()


def test_config_instantiates(coco_root, tmp_path):
    cfg = OmegaConf.create(
        {
            "paths": {"coco": str(coco_root), "cache": str(tmp_path / "cache")},
            "dataset": OmegaConf.load(REPO / "configs/dataset/coco2298.yaml"),
        }
    )
    cfg.dataset.n = 8
    ds = instantiate(cfg.dataset)
    assert isinstance(ds, CocoDataset) and ds.name == "coco2298"
    assert ds.manifest == tmp_path / "cache" / "manifests" / "coco8-seed0.csv"
    assert len(ds.items()) == 8
