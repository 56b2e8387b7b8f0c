"""Image loading and validation shared by every package: any source, any mode, EXIF-aware, size-capped."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import InvalidImageError

ImageInput = Image.Image | os.PathLike | bytes | np.ndarray  # never str: a str is text

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
MAX_FILE_BYTES = 64 * 1024 * 1024


def _open(source: os.PathLike | bytes, name: str | None = None) -> Image.Image:
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else _read_file(Path(source), name)
    if not data:
        raise InvalidImageError(f"{name}: no image data (0 bytes)")
    try:
        with warnings.catch_warnings():  # our own pixel limit below is stricter than PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise InvalidImageError(f"{name}: image is too large to decode safely ({err})") from err
    except Exception as err:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError...
        raise InvalidImageError(f"{name}: not a readable image ({type(err).__name__})") from err
    _check_pixels(image, name)
    try:
        image.load()
    except Exception as err:
        raise InvalidImageError(f"{name}: image data is corrupt or truncated ({err})") from err
    return image


def _read_file(path: Path, name: str) -> bytes:
    """The bytes of a regular image file; InvalidImageError naming what the path is instead (missing, a broken
    link, a folder, a FIFO or device: never opened, so a pipe cannot hang the caller) or why it cannot be read."""
    try:
        if not path.exists():
            raise InvalidImageError(f"{name}: {'broken symbolic link' if path.is_symlink() else 'no such file'}")
        if path.is_dir():
            raise InvalidImageError(f"{name}: is a folder, not an image file")
        if not path.is_file():
            raise InvalidImageError(f"{name}: not a regular file (a FIFO, socket or device)")
        size = path.stat().st_size
        if size == 0:
            raise InvalidImageError(f"{name}: file is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise InvalidImageError(f"{name}: file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        return path.read_bytes()
    except OSError as err:  # permission denied, name too long, I/O error...
        raise InvalidImageError(f"{name}: cannot read the file ({err.strerror or err})") from err


def _check_pixels(image: Image.Image, name: str) -> None:
    w, h = image.size
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise InvalidImageError(f"{name}: image is {w}x{h}, over the {MAX_PIXELS}-pixel limit")


def _from_array(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise InvalidImageError(f"array of shape {a.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InvalidImageError("float image array holds NaN or infinite values")
        scale = 255.0 if a.max() <= 1.0 else 1.0  # floats in [0, 1] or in [0, 255]
        a = np.clip(a * scale, 0, 255).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    else:
        raise InvalidImageError(f"image array dtype {a.dtype} is not supported (use uint8, uint16 or float)")
    image = Image.fromarray(a)
    _check_pixels(image, "array")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: EXIF orientation applied, transparency composited on white, 16-bit scaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 1 / 256 if image.mode != "I" or np.asarray(image).max() > 255 else 1
        image = Image.fromarray(np.clip(np.asarray(image, np.float64) * scale, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise InvalidImageError("float image (mode F) holds NaN or infinite values")
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageInput, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a `pathlib.Path` (any os.PathLike), raw bytes or a numpy array;
    InvalidImageError otherwise.

    A plain `str` is refused: across the API a str is text (a prompt, a label), never a file path, so text that
    reaches an image parameter (e.g. from a web form) can never open a file. `name` is how errors refer to the
    source (e.g. an upload's original file name instead of a temp path)."""
    if isinstance(source, str):
        raise InvalidImageError(
            f"got the text {source[:80]!r} where an image is expected; pass pathlib.Path(...) to read an image "
            f"file, or a PIL image, array or bytes"
        )
    if isinstance(source, Image.Image):
        _check_pixels(source, "image")
        image = source
    elif isinstance(source, (os.PathLike, bytes)):
        image = _open(source, name)
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        raise InvalidImageError(f"cannot read an image from {type(source).__name__}; give a PIL image, path or array")
    try:
        return to_rgb(image)
    except InvalidImageError:
        raise
    except Exception as err:
        raise InvalidImageError(f"cannot convert image of mode {image.mode} to RGB ({err})") from err


def load_images(sources: ImageInput | Iterable[ImageInput]) -> list[Image.Image]:
    """One or many image inputs to a list of RGB images (a single input becomes a list of one; anything that is
    not a list of inputs is read as one, so `None` or `5` is refused by load_image with its type named)."""
    single = (Image.Image, str, os.PathLike, bytes, bytearray, memoryview)
    if (
        isinstance(sources, single)
        or not isinstance(sources, Iterable)
        or (isinstance(sources, np.ndarray) and sources.ndim != 4)
    ):
        sources = [sources]
    images = [load_image(s) for s in sources]
    if not images:
        raise InvalidImageError("no images given")
    return images
