"""sha256 manifests for weights folders: written after training, checked at every load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import WeightsError
from .weights_files import config_value, read_json

MANIFEST = "manifest.json"
UNCHECKED_SUFFIXES = (".md",)  # model cards may be edited without breaking the weights


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Record the sha256 and size of every file in `folder` (recursively), except the manifest and cards."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and p.suffix not in UNCHECKED_SUFFIXES
    }
    out = folder / MANIFEST
    out.write_text(json.dumps({"files": files}, indent=1) + "\n")
    return out


def verify_manifest(folder: str | Path) -> None:
    """Raise WeightsError naming the first missing or corrupted file listed in the folder's manifest (or the key
    of a malformed manifest). Names must stay inside the folder."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise WeightsError(f"weights folder not found: {folder}")
    if not manifest.is_file():
        raise WeightsError(f"{manifest} is missing; cannot verify the weights in {folder}")
    files = config_value(read_json(manifest), "files", dict, manifest)
    root = folder.resolve()
    for name, entry in files.items():
        where = f"files.{name}"
        if not isinstance(entry, dict):
            raise WeightsError(f"{manifest}: key {where!r} must be an object with sha256 and bytes")
        digest, size = config_value(entry, "sha256", str, manifest), config_value(entry, "bytes", int, manifest)
        path = folder / name
        if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
            raise WeightsError(f"{manifest}: key {where!r} names a file outside {folder}")
        if not path.is_file():
            raise WeightsError(f"{path} is missing (listed in {manifest})")
        if path.stat().st_size != size or sha256(path) != digest:
            raise WeightsError(f"{path} is corrupted: its sha256 does not match {manifest}")
