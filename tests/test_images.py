"""Image loading: any source and mode to RGB, EXIF-aware; bad files give InvalidImageError naming the problem."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from triptych.clip import InvalidImageError, load_image, load_images
from triptych.core import images as image_io


def png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new("RGB", (8, 6), (200, 40, 40)).convert(mode)
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (8, 6)


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped():
    deep = Image.fromarray(np.full((4, 4), 40000, np.uint16))
    assert load_image(deep).getpixel((0, 0))[0] == 40000 // 256


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.new("RGB", (30, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    assert load_image(path).size == (10, 30)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 7), np.uint8),
        np.zeros((5, 7, 3), np.uint8),
        np.zeros((5, 7, 4), np.uint8),
        np.zeros((5, 7, 1), np.uint8),
        np.ones((5, 7, 3), np.float32),
        np.full((5, 7), 65535, np.uint16),
        np.zeros((5, 7), bool),
    ],
)
def test_arrays(array):
    out = load_image(array)
    assert out.mode == "RGB" and out.size == (7, 5)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((5, 7, 2), np.uint8), "not an image"),
        (np.zeros((0, 7, 3), np.uint8), "not an image"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 4, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(array)


def test_bad_files_name_the_problem(tmp_path):
    good = png_bytes(Image.new("RGB", (64, 64), "blue"))
    cases = {
        "empty.png": (b"", "empty"),
        "truncated.png": (good[: len(good) // 2], "truncated|corrupt"),
        "garbage.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a readable image"),
        "notes.txt": (b"hello, I am text", "not a readable image"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidImageError, match=message) as info:
            load_image(path)
        assert name in str(info.value)
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(InvalidImageError, match="cannot read an image"):
        load_image(42)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 MP, a few kB on disk
    with pytest.raises(InvalidImageError, match="pixel limit|too large"):
        load_image(bomb)
    assert bomb.stat().st_size < 1_000_000


def test_oversized_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(Image.effect_noise((64, 64), 50).convert("RGB")))
    with pytest.raises(InvalidImageError, match="limit"):
        load_image(path)


def test_bytes_and_lists():
    data = png_bytes(Image.new("RGB", (3, 3), "green"))
    assert load_image(data).getpixel((1, 1)) == (0, 128, 0)
    assert len(load_images([data, Image.new("L", (2, 2))])) == 2
    assert len(load_images(Image.new("RGB", (2, 2)))) == 1
    with pytest.raises(InvalidImageError, match="no images"):
        load_images([])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_images_holding_nan_or_inf_are_refused(value, tmp_path):
    """A PIL float image (mode F, as TIFF files decode) used to be clipped silently: NaN became black."""
    pixels = np.full((4, 4), 100.0, np.float32)
    pixels[1, 2] = value
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        load_image(Image.fromarray(pixels, "F"))
    path = tmp_path / "float.tif"
    Image.fromarray(pixels, "F").save(path)
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        load_image(path)
    assert load_image(Image.fromarray(np.full((4, 4), 100.0, np.float32), "F")).getpixel((0, 0)) == (100, 100, 100)


@pytest.mark.parametrize("source", [None, 5, 2.5, object()])
def test_non_images_are_named_by_type(source):
    with pytest.raises(InvalidImageError, match=type(source).__name__):
        load_images(source)


def test_special_files_are_named_never_read(tmp_path):
    """A FIFO is refused without opening it (reading one would block for ever); a dangling link says so."""
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image(fifo)
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(InvalidImageError, match="broken symbolic link"):
        load_image(link)
    with pytest.raises(InvalidImageError, match="cannot read the file"):
        load_image(tmp_path / ("x" * 300 + ".png"))  # a name too long for the file system
