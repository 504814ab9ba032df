"""The bundled samples: present, loadable, attributed, and listed photos first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyinv.data.samples import SAMPLES_DIR, SamplesDataset

REPO = Path(__file__).parents[1]
PHOTOS = ["astronaut", "chelsea", "coffee", "grace_hopper", "hubble_deep_field", "rocket"]
PROBES = ["checkerboard", "flat_colour", "gradient", "noise", "white", "white_dark_object", "white_document"]


def test_photos_then_probes():
    ids = [i.id for i in SamplesDataset().items()]
    assert ids == [f"photos/{p}.png" for p in PHOTOS] + [f"probes/{p}.png" for p in PROBES]
    assert [i.id for i in SamplesDataset(include=["probes", "photos"]).items()][0] == "probes/checkerboard.png"


def test_every_sample_loads_to_the_right_shape():
    ds = SamplesDataset()
    for item in ds.items():
        out = ds.load(item, 64)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8, item.id


def test_white_probes_are_mostly_white():
    ds = SamplesDataset(include=["probes"])
    items = {i.id: i for i in ds.items()}
    assert (ds.load(items["probes/white.png"], 64) == 255).all()
    assert (ds.load(items["probes/white_dark_object.png"], 64) == 255).all(axis=2).mean() > 0.9


def test_attribution_lists_every_photo():
    text = (SAMPLES_DIR / "ATTRIBUTION.md").read_text()
    for path in sorted((SAMPLES_DIR / "photos").glob("*.png")):
        assert f"photos/{path.name}" in text
    assert len(list((SAMPLES_DIR / "photos").glob("*.png"))) == len(PHOTOS)


def test_bundle_stays_small():
    total = sum(p.stat().st_size for p in SAMPLES_DIR.rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024


def test_every_sample_has_a_caption():
    assert all(item.prompt for item in SamplesDataset(prompt="caption").items())


def test_unknown_part_fails_early():
    with pytest.raises(ValueError, match="dataset.include"):
        SamplesDataset(include=["videos"])


def test_config_instantiates():
    ds = instantiate(OmegaConf.load(REPO / "configs/dataset/samples.yaml"), limit=3)
    assert isinstance(ds, SamplesDataset) and len(ds.items()) == 3
    assert ds.describe()["include"] == ["photos", "probes"]
