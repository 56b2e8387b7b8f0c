"""`python -m triptych.world export --out DIR --count N`: write world samples as PNG + TXT + JSON."""

from __future__ import annotations

import argparse

from .dataset import export_folder
from .spec import DEFAULT_SIDE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m triptych.world", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a folder of rendered scenes")
    export.add_argument("--out", required=True)
    export.add_argument("--count", type=int, default=1000)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--side", type=int, default=DEFAULT_SIDE)
    export.add_argument("--held-out", choices=("exclude", "include", "only"), default="exclude")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.side < 12:
        parser.error("--count must be positive and --side at least 12")
    print(export_folder(args.out, args.count, args.seed, args.side, args.held_out))


if __name__ == "__main__":
    main()
