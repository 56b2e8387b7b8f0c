"""Command-line inputs shared by the scripts: files and folders of images, in batches."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def expand_inputs(paths: list[str], recursive: bool = False) -> list[tuple[Path, bool]]:
    """(file, came from a folder) for every input: files as given, folders expanded to their image files."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            out.extend((f, True) for f in sorted(files) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append((path, False))
    return out


def batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def read_batch(batch: list[tuple[Path, bool]], prog: str) -> tuple[list[Path], list[Image.Image], list[dict]]:
    """(readable paths, their RGB images, error rows for the rest); each skipped file is reported on stderr."""
    from clip import InvalidImageError, load_image

    good, images, errors = [], [], []
    for path, _ in batch:
        try:
            images.append(load_image(path))
            good.append(path)
        except InvalidImageError as err:
            errors.append({"image": str(path), "error": str(err)})
            print(f"{prog}: skipped {err}", file=sys.stderr)
    return good, images, errors
