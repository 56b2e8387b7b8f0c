"""What a batch job reads: folders (recursive), text files listing image paths, WebDataset tar shards and Parquet
files with an image column, each turned into items with a stable key. Listing reads only names and row counts;
the bytes are read later, where the work happens (in a Ray worker under --ray), by `read_item`."""

from __future__ import annotations

import glob
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from triptych.apps.cli.inputs import IMAGE_SUFFIXES, printable

TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet",)
LIST_SUFFIXES = (".txt",)
KEY_COLUMNS = ("__key__", "key")  # a Parquet file's own row keys, when it has them


@dataclass(frozen=True)
class Item:
    """One input image: `key` names it in the output (unique and the same on every run); where its bytes are:
    `path` alone (a file), `path` + `member` (a tar shard's member), or `path` + `row` (a Parquet row)."""

    key: str
    path: str
    member: str | None = None
    row: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def list_items(inputs: list[str], image_column: str = "image") -> list[Item]:
    """Every image of the inputs, in a stable order; ValueError naming an input that is missing or unreadable.
    Keys: the file path; `<shard>/<sample key>` in a tar; `<file>/<key column>` or `<file>#<row>` in Parquet."""
    items: list[Item] = []
    for raw in inputs:
        matches = sorted(glob.glob(raw)) if any(ch in raw for ch in "*?[") else [raw]
        if not matches:
            raise ValueError(f"{raw}: no file matches")
        for name in matches:
            items.extend(_items_of(Path(name), image_column))
    twice = [key for key, n in Counter(item.key for item in items).items() if n > 1]
    if twice:
        raise ValueError(f"the inputs name {twice[0]!r} twice; every input image must appear once")
    return items


def _items_of(path: Path, image_column: str) -> Iterator[Item]:
    if path.is_dir():
        for entry in sorted(path.rglob("*")):
            if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.is_dir():
                yield Item(printable(entry), str(entry))
    elif not path.exists():
        raise ValueError(f"{printable(path)}: no such file or folder")
    elif path.suffix.lower() in TAR_SUFFIXES:
        yield from _tar_items(path)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_items(path, image_column)
    elif path.suffix.lower() in LIST_SUFFIXES:
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            if line.strip():
                yield Item(printable(line.strip()), line.strip())
    else:
        yield Item(printable(path), str(path))  # one image file (a bad one becomes an error row)


def _tar_items(path: Path) -> Iterator[Item]:
    """WebDataset: a sample is the members sharing a key (the name up to the first dot of its base name); its
    image is the member with an image suffix."""
    try:
        with tarfile.open(path) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
    except (OSError, tarfile.TarError) as err:
        raise ValueError(f"{printable(path)}: not a readable tar shard ({err})") from err
    for name in names:
        base = name.rsplit("/", 1)[-1]
        suffix = "." + base.split(".", 1)[1].lower() if "." in base else ""
        if suffix in IMAGE_SUFFIXES:
            key = name[: len(name) - len(suffix)]
            yield Item(f"{printable(path)}/{key}", str(path), member=name)


def _parquet_items(path: Path, image_column: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as err:  # pyarrow raises its own error types for a corrupt file
        raise ValueError(f"{printable(path)}: not a readable Parquet file ({err})") from err
    if image_column not in schema.names:
        raise ValueError(f"{printable(path)}: no column {image_column!r} (columns: {schema.names}); see --image-column")
    key_column = next((c for c in KEY_COLUMNS if c in schema.names), None)
    keys = pq.read_table(path, columns=[key_column]).column(0).to_pylist() if key_column else range(rows)
    for row, key in enumerate(keys):
        label = f"{printable(path)}/{key}" if key_column else f"{printable(path)}#{row}"
        yield Item(label, str(path), row=row)


def read_item(item: Item, image_column: str = "image") -> bytes | Path:
    """The item's encoded image: a Path for a file (read by the image loader), bytes for a tar member or a
    Parquet cell (raw bytes, or a struct with "bytes" as Hugging Face datasets store images)."""
    if item.member is not None:
        with tarfile.open(item.path) as tar:
            handle = tar.extractfile(item.member)
            if handle is None:
                raise ValueError(f"{item.key}: not a regular file in the shard")
            return handle.read()
    if item.row is not None:
        cell = _parquet_column(item.path, image_column)[item.row]
        if isinstance(cell, dict):
            cell = cell.get("bytes")
        if not isinstance(cell, (bytes, bytearray)):
            raise ValueError(f"{item.key}: column {image_column!r} holds {type(cell).__name__}, not image bytes")
        return bytes(cell)
    return Path(item.path)


@lru_cache(maxsize=4)
def _parquet_column(path: str, column: str) -> list:
    """One Parquet file's image column, read once per process (its rows are read in order, file by file)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[column]).column(0).to_pylist()
