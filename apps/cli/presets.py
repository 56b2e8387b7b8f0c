"""`triptych presets` lists the named presets; `triptych download PRESET [--to DIR]` fetches one.

triptych presets
triptych download kandinsky-2.2                 # into the hub cache (resumable, progress bars)
triptych download kandinsky-2.2 --to ./k22      # ./k22/kandinsky-2-2-prior, ./k22/kandinsky-2-2-decoder
triptych serve --preset ./k22                   # later, offline: the folder is all it needs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from triptych.core import presets
from triptych.core.errors import WeightsError


def list_main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="triptych presets", description="List the named presets.").parse_args(argv)
    print(presets.table())
    return 0


def download_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triptych download", description="Fetch a preset's weights.")
    parser.add_argument("preset", choices=sorted(presets.PRESETS))
    parser.add_argument("--to", type=Path, help="a folder to keep it in (one subfolder per repository)")
    parser.add_argument("--cache-dir", type=Path, help="the hub cache to use (default: the hub client's)")
    args = parser.parse_args(argv)
    try:
        folders = presets.fetch(args.preset, to=args.to, cache_dir=args.cache_dir)
    except WeightsError as err:
        print(f"triptych download: {err}", file=sys.stderr)
        return 1
    for role, folder in folders.items():
        print(f"{role}: {folder}")
    where = args.to if args.to is not None else args.preset
    print(f"serve it with: triptych serve --preset {where}")
    return 0
