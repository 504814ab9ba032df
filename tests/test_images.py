"""The shared loader: every colour mode to the right RGB values, every bad file to the right skip reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easyinv.data.images import Preprocess, SkipItem, center_square, load_image, open_rgb, to_rgb


def save(tmp_path: Path, name: str, img: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def rgb_of(path_or_img, size: int | None = None) -> np.ndarray:
    if isinstance(path_or_img, Image.Image):
        return np.asarray(to_rgb(path_or_img))
    if size is None:
        return np.asarray(open_rgb(path_or_img))
    return load_image(path_or_img, size)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = save(tmp_path, "g.png", Image.new("L", (64, 64), 100))
    out = rgb_of(path)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == 100).all()


def test_rgba_alpha_is_composited_on_white(tmp_path):
    pixels = np.zeros((64, 64, 4), np.uint8)  # fully transparent black
    pixels[:, 32:] = (0, 0, 255, 255)  # opaque blue
    pixels[0, 0] = (0, 0, 0, 128)  # half-transparent black
    out = rgb_of(save(tmp_path, "a.png", Image.fromarray(pixels)))
    assert (out[1:, :32] == 255).all()
    assert (out[:, 32:] == (0, 0, 255)).all()
    assert abs(int(out[0, 0, 0]) - round(255 * 127 / 255)) <= 1


def test_la_alpha_is_composited_on_white(tmp_path):
    img = Image.new("LA", (64, 64), (10, 255))
    img.putpixel((5, 5), (10, 0))
    out = rgb_of(save(tmp_path, "la.png", img))
    assert (out[5, 5] == 255).all()
    assert (out[0, 0] == 10).all()


def test_palette_transparency_becomes_white(tmp_path):
    img = Image.new("P", (64, 64), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 32, 64))
    path = save(tmp_path, "p.png", img, transparency=1)
    assert Image.open(path).mode == "P"
    out = rgb_of(path)
    assert (out[:, :32] == 255).all()  # index 1 (green) is the transparent one
    assert (out[:, 32:] == (255, 0, 0)).all()


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    img = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red in CMYK
    path = save(tmp_path, "c.jpg", img, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = rgb_of(path).astype(int)
    assert np.abs(out - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_is_scaled_not_clipped(mode):
    values = np.array([[0, 1000, 25700, 32896, 65535]], np.uint16)
    if mode == "I":
        img = Image.fromarray(values.astype(np.int32))
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        img = Image.frombytes(mode, (5, 1), values.astype(dtype).tobytes())
    assert img.mode == mode
    out = rgb_of(img)
    assert out[0, :, 0].tolist() == [0, 4, 100, 128, 255]  # round(v * 255 / 65535); clipping would give 255s
    assert (out[..., 0] == out[..., 2]).all()


def test_sixteen_bit_png_file(tmp_path):
    values = np.full((64, 64), 25700, np.uint16)  # 25700 = 100 * 257
    values[0, 0] = 65535
    path = save(tmp_path, "16.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = rgb_of(path)
    assert (out[1:] == 100).all() and (out[0, 0] == 255).all()


def test_exif_orientation_6_is_applied(tmp_path):
    pixels = np.zeros((64, 96, 3), np.uint8)  # stored 96 wide, 64 high
    pixels[:, :48] = (255, 0, 0)  # left half red
    pixels[:, 48:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(tmp_path, "r.jpg", Image.fromarray(pixels), exif=exif, quality=95)
    out = rgb_of(path).astype(int)
    assert out.shape == (96, 64, 3)  # displayed 64 wide, 96 high
    assert np.abs(out[10, 32] - (255, 0, 0)).max() < 30  # the left edge moved to the top
    assert np.abs(out[85, 32] - (0, 0, 255)).max() < 30


def noise_jpeg(tmp_path: Path, name: str = "n.jpg", size: int = 128) -> Path:
    rng = np.random.default_rng(0)
    return save(tmp_path, name, Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def skip_reason(source, **kwargs) -> str:
    with pytest.raises(SkipItem) as info:
        load_image(source, 64, Preprocess(**kwargs))
    return info.value.reason


def test_truncated_jpeg_is_skipped(tmp_path):
    path = noise_jpeg(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in skip_reason(path)


def test_zero_byte_file_is_skipped(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty file" in skip_reason(path)
    assert "empty file" in skip_reason(b"")


def test_text_named_jpg_is_skipped(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a picture\n")
    assert "not an image" in skip_reason(path)


def test_missing_file_is_skipped(tmp_path):
    assert "not found" in skip_reason(tmp_path / "nope.png")


def test_tiny_image_is_skipped(tmp_path):
    path = save(tmp_path, "tiny.png", Image.new("RGB", (100, 32)))
    assert "too small: 100x32" in skip_reason(path)
    assert load_image(path, 16, Preprocess(min_size=32)).shape == (16, 16, 3)


def test_decompression_bomb_own_limit(tmp_path):
    path = save(tmp_path, "big.png", Image.new("RGB", (100, 100)))
    assert "decompression bomb" in skip_reason(path, max_pixels=1000)
    assert load_image(path, 8, Preprocess(max_pixels=10_000)).shape == (8, 8, 3)


@pytest.mark.parametrize("pillow_limit", [100, 3000])  # past 2x the limit Pillow raises, past 1x it warns
def test_decompression_bomb_pillow_limit(tmp_path, monkeypatch, pillow_limit):
    path = save(tmp_path, "big.png", Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    assert "decompression bomb" in skip_reason(path)


def test_bytes_and_path_give_the_same_pixels(tmp_path):
    path = noise_jpeg(tmp_path)
    assert np.array_equal(load_image(path, 48), load_image(path.read_bytes(), 48))


def test_resize_matches_pillow_with_the_named_filter(tmp_path):
    path = noise_jpeg(tmp_path, size=100)
    with Image.open(path) as img:
        ref = img.convert("RGB")
    for name, flt in [("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS)]:
        expected = np.asarray(ref.resize((64, 64), flt))
        assert np.array_equal(load_image(path, 64, Preprocess(resample=name)), expected)
    assert not np.array_equal(
        load_image(path, 64, Preprocess(resample="bicubic")), load_image(path, 64, Preprocess(resample="lanczos"))
    )


def test_stretch_and_center_crop(tmp_path):
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:96] = (0, 255, 0)  # the central 64x64 square
    pixels[:, 96:] = (0, 0, 255)
    path = save(tmp_path, "wide.png", Image.fromarray(pixels))
    crop = load_image(path, 32, Preprocess(resize="center_crop"))
    stretch = load_image(path, 32, Preprocess(resize="stretch"))
    assert crop.shape == stretch.shape == (32, 32, 3)
    assert (crop == (0, 255, 0)).all()
    assert (stretch[:, :6] == (255, 0, 0)).all() and (stretch[:, -6:] == (0, 0, 255)).all()
    assert center_square(128, 64) == (32, 0, 96, 64)
    assert center_square(5, 8) == (0, 1, 5, 6)


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="dataset.resize"):
        Preprocess(resize="pad")
    with pytest.raises(ValueError, match="dataset.resample"):
        Preprocess(resample="nearest")
