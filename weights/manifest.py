"""sha256 manifests for weights folders: written after training, checked at every load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clip.errors import WeightsError

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
    """Raise WeightsError naming the first missing or corrupted file listed in the folder's manifest."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise WeightsError(f"weights folder not found: {folder}")
    if not manifest.is_file():
        raise WeightsError(f"{manifest} is missing; cannot verify the weights in {folder}")
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        raise WeightsError(f"{manifest} is not a valid manifest ({err})") from err
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{path} is missing (listed in {manifest})")
        if path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise WeightsError(f"{path} is corrupted: its sha256 does not match {manifest}")
