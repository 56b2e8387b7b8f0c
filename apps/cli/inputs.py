"""Command-line plumbing shared by the scripts: files and folders of images in batches, output paths checked before
any work, and one-line errors (exit status 2) instead of tracebacks."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def fail(prog: str, message: object) -> int:
    """Print `prog: error: message` on stderr (one line) and return the usage-error exit status, 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def load_error(what: str, name: str, err: Exception) -> str:
    """One line for a model that would not load. Our loaders raise WeightsError naming file and key; anything else
    a library raised on a corrupt folder is named with its type, so the message is never an empty traceback."""
    from triptych.clip import TriptychError

    return str(err) if isinstance(err, TriptychError) else f"cannot load {what} {name!r}: {type(err).__name__}: {err}"


def printable(path: Path | str) -> str:
    """A path as text any terminal can print: bytes that were not UTF-8 in the file name come out as \\x.. escapes
    instead of failing the print (Python keeps them as lone surrogates)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def expand_inputs(paths: list[str], recursive: bool = False) -> list[tuple[Path, bool]]:
    """(file, came from a folder) for every input: files as given, folders expanded to their entries with an image
    suffix. Entries that are not regular files (broken links, FIFOs, a folder named `x.png`) are kept, so reading
    them reports them like any bad file; with `recursive` a folder is descended into instead. ValueError when a
    folder cannot be listed."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append((path, False))
            continue
        try:
            entries = sorted(path.rglob("*") if recursive else path.iterdir())
        except OSError as err:
            raise ValueError(f"cannot list folder {printable(path)}: {err.strerror or err}") from err
        out.extend(
            (entry, True)
            for entry in entries
            if entry.suffix.lower() in IMAGE_SUFFIXES and not (recursive and entry.is_dir())
        )
    return out


def batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def read_batch(batch: list[tuple[Path, bool]], prog: str) -> tuple[list[Path], list[Image.Image], list[dict]]:
    """(readable paths, their RGB images, error rows for the rest); each skipped file is reported on stderr."""
    from triptych.clip import InvalidImageError, load_image

    good, images, errors = [], [], []
    for path, _ in batch:
        try:
            images.append(load_image(path, printable(path)))
            good.append(path)
        except InvalidImageError as err:
            errors.append({"image": printable(path), "error": str(err)})
            print(f"{prog}: skipped {err}", file=sys.stderr)
    return good, images, errors


def writable_folder(folder: str | Path, flag: str) -> Path:
    """`folder`, created if missing, after proving a file can be written there: a bad output path fails before
    minutes of work, not after. ValueError naming the flag otherwise."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {printable(path)}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".triptych-write-check-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {printable(path)}: cannot write there ({err.strerror or err})") from err
    return path


def writable_file(file: str | Path, flag: str) -> Path:
    """`file`, after checking it is not a folder and that its folder (created if missing) takes new files."""
    path = Path(file)
    if path.is_dir():
        raise ValueError(f"{flag} {printable(path)}: is a folder; give a file name")
    writable_folder(path.parent, flag)
    return path
