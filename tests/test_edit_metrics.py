"""PIE-Bench editing metrics (easyinv.editing.metrics/dino/clip_score) against hand computations, on tiny models.

Everything is offline and CPU-sized: a tiny random DINO ViT (785 tokens like B/8), a tiny random CLIP, a random
LPIPS-squeeze trunk ($TORCH_HOME points at an empty folder, so no real trunk is found), 64-128 px images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure

from easyinv.checksums import file_sha256
from easyinv.editing.clip_score import ClipScorer, ClipWeightsMissingError
from easyinv.editing.dino import (
    DINO_URL,
    VITB8,
    DinoViT,
    DinoWeightsMissingError,
    StructureDistance,
    build_dino_vit,
    dino_input,
    load_dino_vit,
    load_dino_vitb8,
    tiny_dino_vit,
)
from easyinv.editing.metrics import CLEAN_KEYS, DEFAULTS, KEY_FAMILY, PNP_KEYS, EditMetrics, jpeg_roundtrip

ROOT = Path(__file__).resolve().parents[1]
UNEDIT = ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")
SIZE = 96


@pytest.fixture(scope="module", autouse=True)
def empty_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No LPIPS trunk in the hub cache: the random trunk is used, and a missing trunk is really missing."""
    home = tmp_path_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def pnp(empty_torch_home: Path) -> EditMetrics:
    return EditMetrics({"random_for_tests": True})


@pytest.fixture(scope="module")
def clean(empty_torch_home: Path) -> EditMetrics:
    return EditMetrics({"random_for_tests": True, "pnp_compat": False})


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, edit, mask): a smooth-ish source, an edit that changes a box and adds noise everywhere, a box mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    source = np.stack([yy, xx, (yy + xx) / 2], axis=-1) * 200 + rng.integers(0, 40, (SIZE, SIZE, 3))
    source = source.clip(0, 255).astype(np.uint8)
    edit = source.astype(np.int16) + rng.integers(-12, 13, source.shape)
    edit[20:60, 30:80] = 255 - edit[20:60, 30:80]
    edit = edit.clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[18:62, 28:82] = True
    return source, edit, mask


def _measure(m: EditMetrics, source: np.ndarray, edit: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return m.measure(source, edit, mask, "a photo of the cat", "a photo of the dog")


# -- background metrics (multiplication semantics) ----------------------------------------------------------------


def test_keys_are_the_reference_names(pnp: EditMetrics, images) -> None:
    values = _measure(pnp, *images)
    assert tuple(values) == PNP_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    assert values["mask_area"] == pytest.approx(images[2].mean())
    assert set(KEY_FAMILY) == set(PNP_KEYS) | set(CLEAN_KEYS)


def test_masked_psnr_and_mse_are_those_of_the_multiplied_images(pnp: EditMetrics, images) -> None:
    source, edit, mask = images
    values = _measure(pnp, source, edit, mask)
    keep = (~mask)[..., None].astype(np.float64)
    a, b = source / 255.0 * keep, edit / 255.0 * keep
    mse = np.mean((a - b) ** 2)  # over all 3·H·W values, zeroed edit region included
    assert values["mse_unedit_part"] == pytest.approx(mse, rel=1e-5)
    assert values["psnr_unedit_part"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
    # The quirk is real: over background pixels only, the error is larger by 1 / background fraction.
    mse_bg = np.mean(((source - edit.astype(np.float64)) / 255.0)[~mask] ** 2)
    assert mse_bg == pytest.approx(mse / (~mask).mean(), rel=1e-9)


def test_ssim_and_lpips_use_the_multiplied_images(pnp: EditMetrics, images) -> None:
    source, edit, mask = images
    values = _measure(pnp, source, edit, mask)
    keep = torch.from_numpy(~mask).float()[None, None]
    a = torch.from_numpy(source).permute(2, 0, 1)[None].float() / 255 * keep
    b = torch.from_numpy(edit).permute(2, 0, 1)[None].float() / 255 * keep
    ssim = structural_similarity_index_measure(b, a, data_range=1.0, gaussian_kernel=True, kernel_size=11,
                                               sigma=1.5, k1=0.01, k2=0.03)
    assert values["ssim_unedit_part"] == pytest.approx(float(ssim), abs=1e-6)
    with torch.no_grad():
        lp = pnp.lpips_model(b * 2 - 1, a * 2 - 1)  # masked-out pixels become -1 (black)
    assert values["lpips_unedit_part"] == pytest.approx(float(lp), abs=1e-6)


def test_full_mask_gives_nan_background(pnp: EditMetrics, images) -> None:
    source, edit, _ = images
    values = _measure(pnp, source, edit, np.ones((SIZE, SIZE), bool))
    assert all(math.isnan(values[k]) for k in UNEDIT)
    assert math.isfinite(values["clip_similarity_target_image_edit_part"])
    assert values["mask_area"] == 1.0


def test_empty_mask_gives_nan_edit_part(pnp: EditMetrics, images) -> None:
    source, edit, _ = images
    values = _measure(pnp, source, edit, np.zeros((SIZE, SIZE), bool))
    assert math.isnan(values["clip_similarity_target_image_edit_part"])
    assert all(math.isfinite(values[k]) for k in UNEDIT)
    assert values["mask_area"] == 0.0


def test_identical_images(pnp: EditMetrics, clean: EditMetrics, images) -> None:
    source, _, mask = images
    values = _measure(pnp, source, source, mask)
    assert values["structure_distance"] == 0.0
    assert values["psnr_unedit_part"] == math.inf
    assert values["mse_unedit_part"] == 0.0
    assert values["ssim_unedit_part"] == pytest.approx(1.0)
    values = _measure(clean, source, source, mask)
    assert values["structure_distance_unit"] == 0.0
    assert values["psnr_background"] == math.inf
    assert values["lpips_background"] == pytest.approx(0.0, abs=1e-9)


# -- CLIP --------------------------------------------------------------------------------------------------------


def test_clip_is_clamped_scaled_cosine_of_the_model_embeddings(pnp: EditMetrics, images) -> None:
    black = np.zeros((SIZE, SIZE, 3), np.uint8)  # with the tiny model's seed, some prompts score below 0 on it
    prompts = ["a photo of the cat", "a photo of the dog", "the cat", "a dog on a chair", "blue", "an owl"]
    scorer = pnp.clip
    batch = scorer.processor(text=prompts, images=[images[1], black], return_tensors="pt", padding=True,
                             truncation=True)
    with torch.no_grad():
        out = scorer.model(**batch)  # CLIPModel.forward returns L2-normalised image_embeds / text_embeds
    cosines = out.image_embeds @ out.text_embeds.T  # (image, prompt)
    for i, image in enumerate((images[1], black)):
        for j, prompt in enumerate(prompts):
            cos = float(cosines[i, j])
            assert scorer.cosine(image, prompt) == pytest.approx(cos, abs=1e-5)
            assert scorer.score(image, prompt) == pytest.approx(max(100 * cos, 0.0), abs=1e-3)
    assert cosines.min() < 0 < cosines.max(), "the cases should exercise both the clamp and a positive score"
    values = pnp.measure(black, black, np.zeros((SIZE, SIZE), bool), prompts[2], prompts[3])
    assert values["clip_similarity_target_image"] == pytest.approx(max(100 * float(cosines[1, 3]), 0), abs=1e-3)
    assert values["clip_similarity_source_image"] == pytest.approx(max(100 * float(cosines[1, 2]), 0), abs=1e-3)


def test_clip_truncates_long_texts(pnp: EditMetrics, images) -> None:
    long = "a photo of the cat " * 40  # ≫ 77 tokens
    assert math.isfinite(pnp.clip.score(images[1], long))


def test_edit_part_clip_scores_the_masked_not_cropped_edit(pnp: EditMetrics, images, monkeypatch) -> None:
    source, edit, mask = images
    seen: list[tuple[np.ndarray, str]] = []
    original = pnp.clip.score

    def spy(image: np.ndarray, text: str) -> float:
        seen.append((image.copy(), text))
        return original(image, text)

    monkeypatch.setattr(pnp.clip, "score", spy)
    values = pnp.measure(source, edit, mask, "src prompt", "tgt prompt")
    edit_part = [img for img, text in seen if text == "tgt prompt" and not np.array_equal(img, edit)]
    assert len(edit_part) == 1
    expected = edit * mask[..., None].astype(np.uint8)
    assert edit_part[0].shape == edit.shape and np.array_equal(edit_part[0], expected)
    assert values["clip_similarity_target_image_edit_part"] == pytest.approx(original(expected, "tgt prompt"))


def test_clip_from_a_local_folder(tmp_path: Path, images) -> None:
    tiny = ClipScorer.tiny(seed=3)
    folder = tmp_path / "clip"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    loaded = ClipScorer.from_folder(folder)
    assert loaded.comparable and type(loaded.processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert loaded.score(images[0], "a photo of the cat") == pytest.approx(tiny.score(images[0], "a photo of the cat"),
                                                                          abs=1e-4)
    with pytest.raises(ClipWeightsMissingError) as err:
        ClipScorer.from_folder(tmp_path / "nope")
    assert "openai/clip-vit-large-patch14" in str(err.value) and "\n" not in str(err.value)


# -- DINO structure distance -------------------------------------------------------------------------------------


def test_dino_input_keeps_0_255_in_compat_mode(images) -> None:
    from torchvision import transforms

    source = images[0]
    x = torch.from_numpy(source).permute(2, 0, 1)[None].float()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = transforms.Compose([transforms.Resize(224, max_size=480, antialias=False),
                                    transforms.Normalize(mean, std)])
    assert torch.allclose(dino_input(source), reference(x), atol=1e-4)  # values ≈ ±1100, no /255
    assert dino_input(source).abs().max() > 100
    assert torch.allclose(dino_input(source, unit_range=True), reference(x / 255), atol=1e-5)
    smoothed = transforms.Resize(224, max_size=480, antialias=True)(x)
    assert torch.allclose(dino_input(source, antialias=True), transforms.Normalize(mean, std)(smoothed), atol=1e-4)


def test_dino_keys_are_the_middle_third_of_the_last_qkv(images) -> None:
    model = tiny_dino_vit(seed=5)
    source, edit, _ = images
    captured: list[torch.Tensor] = []
    handle = model.blocks[-1].attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        x = dino_input(source)
        with torch.no_grad():
            model(x)  # full forward, as the reference's hook sees it
    finally:
        handle.remove()
    b, n, three_d = captured[0].shape
    heads, d = 4, three_d // 3
    k = captured[0].reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)[1]  # (B, heads, N, head_dim)
    manual = k.transpose(1, 2).reshape(b, n, d)[0]
    metric = StructureDistance(model)
    keys = metric.keys(source)
    assert keys.shape == (785, 32) and n == 785
    assert torch.allclose(keys, manual, atol=1e-5)
    # Self-similarity distance by hand: cosine matrices, mean squared difference.
    other = metric.keys(edit)
    sim = [F.cosine_similarity(t[:, None, :], t[None, :, :], dim=-1) for t in (keys, other)]
    assert metric(source, edit) == pytest.approx(float(((sim[0] - sim[1]) ** 2).mean()), rel=1e-4)


def test_dino_non_square_input_interpolates_position_embedding() -> None:
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    keys = StructureDistance(tiny_dino_vit()).keys(image)
    assert keys.shape == (1 + 28 * 42, 32)  # 224 x 336 after Resize(224, max_size=480)


def test_vitb8_layout_loads_strictly(tmp_path: Path) -> None:
    with torch.device("meta"):
        meta = DinoViT(**VITB8)
    state = {name: torch.zeros(p.shape) for name, p in meta.state_dict().items()}
    assert sum(t.numel() for t in state.values()) == 85_807_872  # ViT-B/8 backbone without head
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.11.norm1.weight",
                 "blocks.11.attn.qkv.weight", "blocks.11.attn.qkv.bias", "blocks.11.attn.proj.weight",
                 "blocks.11.norm2.bias", "blocks.11.mlp.fc1.weight", "blocks.11.mlp.fc2.bias", "norm.weight"):
        assert name in state
    assert state["pos_embed"].shape == (1, 785, 768) and state["blocks.0.attn.qkv.weight"].shape == (2304, 768)
    path = tmp_path / "dino_vitbase8_pretrain.pth"
    torch.save(state, path)
    del state
    model = load_dino_vitb8(path)
    assert model.blocks[11].norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert not any(p.is_meta for p in model.parameters())
    path.unlink()  # 343 MB: do not leave it in pytest's kept temp folders


def test_strict_loading_rejects_other_layouts(tmp_path: Path, images) -> None:
    shape = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 8, "img_size": 224}
    model = build_dino_vit(**shape, seed=7).eval()
    path = tmp_path / "small.pth"
    torch.save(model.state_dict(), path)
    loaded = load_dino_vit(path, **shape)
    x = dino_input(images[0])
    assert torch.equal(loaded.last_block_keys(x), model.last_block_keys(x).detach())

    extra = dict(model.state_dict(), **{"head.weight": torch.zeros(3, 32)})
    torch.save(extra, path)
    with pytest.raises(ValueError, match="head.weight"):
        load_dino_vit(path, **shape)
    missing = {k: v for k, v in model.state_dict().items() if k != "norm.bias"}
    torch.save(missing, path)
    with pytest.raises(ValueError, match="norm.bias"):
        load_dino_vit(path, **shape)
    torch.save(model.state_dict(), path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_dino_vit(path, **{**shape, "patch_size": 16})  # other pos_embed / patch_embed shapes
    torch.save({"teacher": model.state_dict(), "epoch": 3}, path)
    with pytest.raises(ValueError, match="training checkpoint"):
        load_dino_vit(path, **shape)


def test_missing_dino_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dino_vitbase8_pretrain.pth"
    with pytest.raises(DinoWeightsMissingError) as err:
        load_dino_vitb8(path)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and DINO_URL in message


# -- construction, config ----------------------------------------------------------------------------------------


def test_missing_weights_stop_the_constructor(tmp_path: Path) -> None:
    dino, clip = tmp_path / "dino_vitbase8_pretrain.pth", tmp_path / "clip-vit-large-patch14"
    cfg = {"dino": {"path": str(dino)}, "clip": {"path": str(clip)}}
    with pytest.raises(FileNotFoundError) as err:
        EditMetrics(cfg)
    assert str(dino) in str(err.value) and "\n" not in str(err.value)
    dino.write_bytes(b"")  # exists (never read: every file is checked before anything loads)
    with pytest.raises(ClipWeightsMissingError) as err:
        EditMetrics(cfg)
    assert str(clip) in str(err.value) and "\n" not in str(err.value)
    clip.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        EditMetrics(cfg)
    assert "squeezenet1_1-b8a52dc0.pth" in str(err.value) and "\n" not in str(err.value)


def test_random_models_are_not_comparable(pnp: EditMetrics) -> None:
    assert pnp.comparable == {"structure": False, "clip": False, "lpips": False}
    info = pnp.describe()
    assert info["comparable"] == pnp.comparable and info["pnp_compat"] is True and info["jpeg_quality"] is None
    assert info["antialias"] is False and info["keys"] == list(PNP_KEYS)
    assert info["structure"]["weights_sha256"] is None and info["clip"]["weights_sha256"] is None
    assert info["versions"]["transformers"]


def test_real_clip_folder_is_comparable_and_hashed(tmp_path: Path) -> None:
    tiny = ClipScorer.tiny(seed=2)
    folder = tmp_path / "clip"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    metrics = EditMetrics({"random_for_tests": True, "clip": {"path": str(folder)}})
    assert metrics.comparable == {"structure": False, "clip": True, "lpips": False}
    assert metrics.describe()["clip"]["weights_sha256"] == file_sha256(folder / "model.safetensors")


def test_jpeg_round_trip_only_when_set(pnp: EditMetrics, images) -> None:
    source, _, mask = images
    decoded = jpeg_roundtrip(source, 75)
    assert decoded.shape == source.shape and decoded.dtype == np.uint8 and not np.array_equal(decoded, source)
    buffer = io.BytesIO()
    Image.fromarray(source).save(buffer, format="JPEG")  # PIL's default quality is 75
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))

    jpeg = EditMetrics({"random_for_tests": True, "jpeg_quality": 75})
    plain, coded = _measure(pnp, source, source, mask), _measure(jpeg, source, source, mask)
    assert plain["psnr_unedit_part"] == math.inf and math.isfinite(coded["psnr_unedit_part"])
    assert coded["structure_distance"] > 0
    assert coded["clip_similarity_source_image"] == plain["clip_similarity_source_image"]  # the source is not coded
    # Same as scoring the decoded edit without the option.
    assert _measure(pnp, source, decoded, mask) == pytest.approx(coded)


def test_unknown_and_invalid_config_rejected() -> None:
    with pytest.raises(ValueError, match="bogus"):
        EditMetrics({"random_for_tests": True, "bogus": 1})
    with pytest.raises(ValueError, match="edit_metrics.dino.*resolution"):
        EditMetrics({"random_for_tests": True, "dino": {"resolution": 224}})
    with pytest.raises(ValueError, match="jpeg_quality"):
        EditMetrics({"random_for_tests": True, "jpeg_quality": 0})
    with pytest.raises(ValueError, match="pnp_compat"):
        EditMetrics({"random_for_tests": True, "pnp_compat": "yes"})


def test_config_file_instantiates(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    raw = OmegaConf.load(ROOT / "configs/edit_metrics/pnp.yaml")
    assert set(raw) - {"_target_"} == set(DEFAULTS)
    assert raw._target_ == "easyinv.editing.metrics.EditMetrics"
    cfg = OmegaConf.merge({"paths": {"models": str(tmp_path)}}, {"edit_metrics": raw})
    assert cfg.edit_metrics.dino.path == str(tmp_path / "dino_vitbase8_pretrain.pth")
    with pytest.raises(Exception) as err:  # hydra wraps the constructor's error
        instantiate(cfg.edit_metrics)
    assert isinstance(err.value, DinoWeightsMissingError) or isinstance(err.value.__cause__, DinoWeightsMissingError)
    metrics = instantiate(cfg.edit_metrics, random_for_tests=True)
    assert isinstance(metrics, EditMetrics) and metrics.pnp_compat and metrics.comparable["structure"] is False


# -- pnp_compat: false --------------------------------------------------------------------------------------------


def test_clean_variants_have_their_own_names(clean: EditMetrics, pnp: EditMetrics, images) -> None:
    source, edit, mask = images
    values = _measure(clean, source, edit, mask)
    assert tuple(values) == CLEAN_KEYS
    assert not (set(values) - {"mask_area"}) & set(PNP_KEYS)
    diff = ((source.astype(np.float64) - edit) / 255.0)[~mask]  # background pixels only, all channels
    mse = float(np.mean(diff**2))
    assert values["mse_background"] == pytest.approx(mse, rel=1e-5)
    assert values["psnr_background"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = np.ascontiguousarray(edit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    assert values["clip_edit_region_cropped"] == pytest.approx(clean.clip.score(crop, "a photo of the dog"))
    # The DINO distance on [0, 1] inputs differs from the reference's 0–255 one (same model, same seed).
    reference = _measure(pnp, source, edit, mask)["structure_distance"]
    assert values["structure_distance_unit"] != pytest.approx(reference, rel=1e-3)


def test_clean_nan_rules(clean: EditMetrics, images) -> None:
    source, edit, _ = images
    full = _measure(clean, source, edit, np.ones((SIZE, SIZE), bool))
    assert all(math.isnan(full[k]) for k in ("psnr_background", "mse_background", "ssim_background",
                                             "lpips_background"))
    empty = _measure(clean, source, edit, np.zeros((SIZE, SIZE), bool))
    assert math.isnan(empty["clip_edit_region_cropped"])
