"""`triptych`: one command for every capability. Each subcommand is the matching script with the same flags.

triptych serve [--preset shapes] [--port 7860]     the Gradio app and its HTTP API
triptych classify IMAGES --labels ...              zero-shot classification   (= triptych-classify)
triptych caption IMAGES                            captions                   (= triptych-caption)
triptych ask IMAGES --question "..."               answers                    (= triptych-caption --ask)
triptych generate PROMPTS                          text-to-image              (= triptych-generate)
triptych variations IMAGE                          unCLIP variations          (= triptych-generate --variations)
triptych interpolate PROMPTS [--image FILE] --weights ...
                                                   blends                     (= triptych-generate --interpolate)
triptych presets | download PRESET [--to DIR]     real weights: list them, fetch one
triptych evaluate | benchmark ...                  scores and speed tables
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import triptych
from triptych.core.extras import MissingExtraError, require


def _module(name: str):
    """A command's module, imported only when run (so `triptych --help` stays fast)."""
    return importlib.import_module(f"triptych.apps.{name}")


def _run(module: str, prefix: tuple[str, ...] = ()) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        return _module(module).main([*prefix, *argv])

    return run


def _serve(argv: list[str]) -> int:
    require("gradio", "app", "triptych serve")
    return _run("serve.app")(argv)


def _ask(argv: list[str]) -> int:
    """`ask IMAGES --question Q` -> `caption IMAGES --ask Q` (the caption script's own flag)."""
    argv = ["--ask" if arg == "--question" else arg for arg in argv]
    return _run("cli.caption")(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "serve": (_serve, "serve every capability in one Gradio app (HTTP API included)"),
    "classify": (_run("cli.classify"), "zero-shot classification of images against labels"),
    "caption": (_run("cli.caption"), "caption images"),
    "ask": (_ask, "answer a question about images (--question)"),
    "generate": (_run("cli.generate"), "text-to-image"),
    "variations": (_run("cli.generate", ("--variations",)), "unCLIP variations of an image"),
    "interpolate": (_run("cli.generate", ("--interpolate",)), "blend prompts and --image files (--weights)"),
    "presets": (lambda argv: _module("cli.presets").list_main(argv), "list the named presets of real weights"),
    "download": (lambda argv: _module("cli.presets").download_main(argv), "fetch a preset's weights"),
    "batch": (_run("batch.main"), "classify, caption, ask or embed whole datasets into Parquet (--ray: on Ray)"),
    "search": (_run("batch.search"), "text -> images or image -> images over `triptych batch embed` output"),
    "evaluate": (_run("evaluation.main"), "scores on the shapes world"),
    "benchmark": (_run("benchmarks.main"), "speed and memory tables against the peers"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: triptych COMMAND [ARGS]   (triptych COMMAND --help for its flags)\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"triptych {triptych.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"triptych: unknown command {command!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command][0](rest)
    except MissingExtraError as err:
        print(f"triptych {command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
