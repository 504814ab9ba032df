"""Metrics against independent references: scikit-image for PSNR/SSIM, lpips' own trunk loading for LPIPS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.data import astronaut, chelsea
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from easyinv.metrics import ImageMetrics, LpipsTrunkMissingError, latent_mse, psnr, ssim, to_uint8

SIZE = 64


def _photo(image: np.ndarray) -> np.ndarray:
    return resize(image, (SIZE, SIZE), anti_aliasing=True).astype(np.float64)  # float [0, 1], (H, W, 3)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(reference, distorted) float64 (H, W, 3) pairs: noise, blur, 16-level quantisation, an unrelated photo."""
    rng = np.random.default_rng(0)
    a, b = _photo(astronaut()), _photo(chelsea())
    return [
        (a, np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)),
        (a, gaussian(a, sigma=1.5, channel_axis=-1)),
        (b, np.round(b * 15) / 15),
        (a, b),
    ]


def _nchw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def test_psnr_matches_skimage_per_image(pairs):
    refs, recs = zip(*pairs, strict=True)
    ours = psnr(_nchw(list(recs)).float(), _nchw(list(refs)).float())
    assert ours.shape == (len(pairs),)
    for value, (ref, rec) in zip(ours.tolist(), pairs, strict=True):
        expected = peak_signal_noise_ratio(ref.astype(np.float32), rec.astype(np.float32), data_range=1)
        assert value == pytest.approx(expected, abs=1e-4)


def test_psnr_of_identical_images_is_infinite():
    x = torch.rand(1, 3, 8, 8)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_equals_torchmetrics_per_image(pairs):
    refs, recs = zip(*pairs, strict=True)
    ours = ssim(_nchw(list(recs)), _nchw(list(refs)))
    for value, (ref, rec) in zip(ours.tolist(), pairs, strict=True):
        one = StructuralSimilarityIndexMeasure(data_range=1.0)(_nchw([rec]), _nchw([ref]))
        assert value == pytest.approx(float(one), abs=1e-7)  # the class keeps float32 state


def test_ssim_map_without_borders_equals_skimage(pairs):
    """torchmetrics reflect-pads and averages the whole map; skimage drops 5 px: the cropped maps agree to 1e-6."""
    for ref, rec in pairs:
        _, full = structural_similarity_index_measure(
            _nchw([rec]), _nchw([ref]), data_range=1.0, reduction="none", return_full_image=True
        )
        cropped = float(full[..., 5:-5, 5:-5].mean())
        expected = structural_similarity(ref, rec, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1, channel_axis=-1)
        assert cropped == pytest.approx(expected, abs=1e-6)


def test_ssim_rejects_unknown_parameter():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="metrics.ssim"):
        ssim(x, x, window=7)


def test_to_uint8_rounds_half_to_even_and_keeps_the_layout():
    values = torch.tensor([-1.0, -0.5, 0.0, 1 / 255, 0.5, 1.0, 2.0, -3.0])
    x = values.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    u8 = to_uint8(x)
    assert u8.shape == (1, 3, 1, 8) and u8.dtype == torch.uint8
    expected = np.round((np.clip(values.numpy(), -1, 1) + 1) * 127.5).astype(np.uint8)  # numpy: ties to even
    assert u8[0, 0, 0].tolist() == expected.tolist() == [0, 64, 128, 128, 191, 255, 255, 0]


def test_to_uint8_refuses_non_finite_pixels():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="nonfinite"):
        to_uint8(x)


def test_latent_mse_per_latent():
    z0, z = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    expected = ((z.numpy().astype(np.float64) - z0.numpy()) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(latent_mse(z, z0).numpy(), expected, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# LPIPS and the measure() entry point
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_torch_home(tmp_path_factory):
    """A hub cache with no trunk in it, so these tests behave the same on machines that have the real file."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("torch_home")
        mp.setenv("TORCH_HOME", str(home))

        def no_network(*args, **kwargs):
            raise AssertionError("metrics tried to download")

        mp.setattr(torch.hub, "load_state_dict_from_url", no_network)
        mp.setattr(torch.hub, "download_url_to_file", no_network)
        yield home


@pytest.fixture(scope="module")
def random_lpips(empty_torch_home) -> ImageMetrics:
    return ImageMetrics(lpips={"net": "vgg", "random_trunk": True, "seed": 0})


@pytest.fixture(scope="module")
def u8_pair(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 (32, 32, 3) pairs: VGG on 2 cores is the slow part of this file, so keep them small."""
    refs = np.stack([p[0][16:48, 16:48] for p in pairs[:2]])
    recs = np.stack([p[1][16:48, 16:48] for p in pairs[:2]])
    return (np.round(recs * 255).astype(np.uint8), np.round(refs * 255).astype(np.uint8))


def test_missing_trunk_fails_clearly_without_download(empty_torch_home):
    with pytest.raises(LpipsTrunkMissingError, match=r"vgg16-397923af\.pth.*random_trunk") as err:
        ImageMetrics(lpips={"net": "vgg"})
    assert str(empty_torch_home) in str(err.value)


def test_missing_trunk_path_names_the_key(tmp_path):
    with pytest.raises(LpipsTrunkMissingError, match="metrics.lpips.trunk_path"):
        ImageMetrics(lpips={"trunk_path": str(tmp_path / "nope.pth")})


def test_measure_gives_per_image_dicts_matching_skimage(random_lpips, u8_pair):
    rec, ref = u8_pair
    rows = random_lpips.measure(rec, ref)
    assert len(rows) == 2 and all(set(r) == {"psnr", "ssim", "lpips", "lpips_comparable"} for r in rows)
    assert not any(r["lpips_comparable"] for r in rows)  # a random trunk
    for row, a, b in zip(rows, rec, ref, strict=True):
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-4)
        assert row["lpips"] > 0
    assert random_lpips.measure(torch.from_numpy(rec), torch.from_numpy(ref)) == rows  # tensors or arrays alike


def test_lpips_zero_on_identical_and_symmetric(random_lpips, u8_pair):
    rec, ref = u8_pair
    assert all(abs(r["lpips"]) < 1e-7 for r in random_lpips.measure(ref, ref))
    x = torch.from_numpy(rec).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        forward, backward = random_lpips.lpips_model(x, y).flatten(), random_lpips.lpips_model(y, x).flatten()
    assert (forward > 0).all()
    torch.testing.assert_close(forward, backward, rtol=1e-5, atol=0)


def test_random_trunk_is_seeded_and_marked_not_comparable(random_lpips):
    state = torch.get_rng_state()
    again = ImageMetrics(lpips={"random_trunk": True, "seed": 0})
    assert torch.equal(torch.get_rng_state(), state)  # the trunk's seed does not reseed the caller
    other = ImageMetrics(lpips={"random_trunk": True, "seed": 1})
    first = random_lpips.lpips_model.net.state_dict()
    assert all(torch.equal(v, first[k]) for k, v in again.lpips_model.net.state_dict().items())
    assert not torch.equal(other.lpips_model.net.state_dict()["slice1.0.weight"], first["slice1.0.weight"])
    info = random_lpips.describe()
    assert info["lpips_comparable"] is False and info["lpips"]["trunk"] == "random (seed 0)"
    assert info["ssim"]["sigma"] == 1.5 and info["ssim"]["kernel_size"] == 11


def test_trunk_path_loads_a_torchvision_checkpoint_offline(empty_torch_home, tmp_path, u8_pair, monkeypatch):
    """A VGG16 checkpoint in torchvision's layout loads through trunk_path and gives lpips' own value for it."""
    import lpips
    import torchvision

    torch.manual_seed(123)
    vgg = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, path)

    ours = ImageMetrics(lpips={"trunk_path": str(path)})
    assert torch.equal(ours.lpips_model.net.slice5._modules["28"].weight, vgg.features[28].weight)
    assert ours.describe()["lpips"]["trunk"] == str(path)
    assert ours.lpips_comparable is False  # a random file with the right name is not torchvision's checkpoint

    # The same file found in the hub cache ($TORCH_HOME/hub/checkpoints/) without any trunk_path.
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path.rename(cache / path.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cached = ImageMetrics(lpips={"net": "vgg"})
    assert cached.describe()["lpips"]["trunk"] == str(cache / path.name)
    expected_state = ours.lpips_model.net.state_dict()
    assert all(torch.equal(v, expected_state[k]) for k, v in cached.lpips_model.net.state_dict().items())

    # Reference: lpips slicing the same torchvision model itself (its constructor handed our model, no download).
    monkeypatch.setattr(lpips.pretrained_networks.tv, "vgg16", lambda *a, **k: vgg)
    reference = lpips.LPIPS(net="vgg", verbose=False).eval()
    rec, ref = u8_pair
    x = torch.from_numpy(rec).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = reference(x, y).flatten().tolist()
    np.testing.assert_allclose([r["lpips"] for r in ours.measure(rec, ref)], expected, rtol=1e-6)


def test_without_lpips_nothing_is_loaded(empty_torch_home, u8_pair):
    metrics = ImageMetrics({"_target_": "x", "enabled": ["psnr", "ssim"], "lpips": {"net": "vgg"}})
    assert metrics.lpips_model is None and metrics.describe()["lpips"] is None
    assert set(metrics.measure(*u8_pair)[0]) == {"psnr", "ssim"}


def test_unknown_metric_or_key_is_rejected():
    with pytest.raises(ValueError, match="metrics.enabled"):
        ImageMetrics(enabled=["psnr", "fid"])
    with pytest.raises(ValueError, match="metrics.lpips: unknown keys"):
        ImageMetrics(lpips={"network": "vgg"})
    with pytest.raises(ValueError, match="metrics: unknown keys"):
        ImageMetrics({"enabled": ["psnr"], "psnr": {}})


def test_the_shipped_config_instantiates(empty_torch_home):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs" / "metrics" / "default.yaml")
    assert cfg.lpips.net == "vgg" and list(cfg.enabled) == ["psnr", "ssim", "lpips"] and not cfg.lpips.random_trunk
    cfg.enabled = ["psnr", "ssim"]  # LPIPS's trunk is covered above; the rest of the keys must fit the constructor
    metrics = instantiate(cfg, device="cpu")
    assert isinstance(metrics, ImageMetrics) and metrics.ssim_params == {
        "gaussian_kernel": True, "kernel_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03}
    assert ImageMetrics(cfg).enabled == ImageMetrics.from_config(cfg).enabled == ("psnr", "ssim")
    assert ImageMetrics(cfg, enabled=["psnr"]).enabled == ("psnr",)  # keywords win


@pytest.mark.parametrize("published", [False, True])
def test_the_job_records_whether_lpips_is_comparable_and_the_table_follows(tmp_path, monkeypatch, published):
    """The records carry each metric's comparable flag (they did not: a run with torchvision's real VGG trunk was
    still marked † and lost its difference to the paper). The trunk here is random; ``published`` stands in for a
    trunk whose checksum is torchvision's."""
    import pandas as pd
    from helpers import run_job

    import easyinv.metrics as metrics_module
    from easyinv.report.writer import write_report
    from easyinv.run.records import read_records

    real = metrics_module.load_lpips

    def load(**kwargs):
        model, info = real(**kwargs)
        return model, {**info, "lpips_comparable": published}

    monkeypatch.setattr(metrics_module, "load_lpips", load)
    run = run_job(tmp_path, "model=gaussian", "dataset.limit=2", "method=ddim", "method.num_steps=4",
                  "report.html=false", name="ddim")
    records = read_records(run)
    assert records["lpips_comparable"].tolist() == [published, published]
    written = write_report([run], tmp_path / "report", figures=False)
    table = pd.read_csv(written["table1_csv"])
    assert table["lpips_comparable"].tolist() == [published]
    row = next(line for line in written["table1_md"].read_text().splitlines() if line.startswith("| ddim |"))
    assert ("†" in row) is not published
