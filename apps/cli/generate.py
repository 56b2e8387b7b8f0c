"""Generate images from prompts, variations of an image, blends of prompts and images, or img2img.

    triptych-generate "a red circle" "two stars" --num-images 4 --out generated/ --grid grid.png
    triptych-generate --variations scene.png --num-images 4
    triptych-generate --interpolate "a red circle" --image scene.png --weights 0.3 0.7
    triptych-generate --interpolate "a red circle" "two stars" --weights 1 1
    triptych-generate "a blue star" --init-image scene.png --strength 0.6
    triptych-generate "two stars" --scheduler dpm++ --steps 15 --best-of 4

In --interpolate, every argument after the flag is prompt text; images are marked with --image FILE (repeatable).
The --weights follow the items in the order they are written (repeat --interpolate to add a prompt after an
--image). Before any model loads, image files are read, settings checked and the --out folder and --grid
location proven writable. Files are written atomically as <out>/<index>-<prompt>.png. Exit codes: 0 done; 2 bad
usage or input (one line on stderr naming it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .inputs import IMAGE_SUFFIXES, fail, load_error, printable, writable_file, writable_folder


def slug(text: str, limit: int = 40) -> str:
    """A filename-safe piece of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"


def save_atomically(image: Image.Image, path: Path) -> None:
    """Write next to the target, then rename: a crash never leaves half a PNG under the final name."""
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Images tiled row by row, `columns` per row, 2 px apart on grey."""
    w, h = images[0].size
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (w + 2) + 2, rows * (h + 2) + 2), (128, 128, 128))
    for i, image in enumerate(images):
        sheet.paste(image, (2 + (i % columns) * (w + 2), 2 + (i // columns) * (h + 2)))
    return sheet


class _BlendItem(argparse.Action):
    """`--interpolate PROMPT...` and `--image FILE` add to one list, `blend`, in command-line order (so --weights
    follow the items as written); each also records its own values under its dest."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        values = values if isinstance(values, list) else [values]
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *values])
        kind = "image" if self.dest == "images" else "prompt"
        namespace.blend = [*getattr(namespace, "blend", []), *((kind, v) for v in values)]


def build_parser() -> argparse.ArgumentParser:
    from triptych.diffusion.settings import DECODER_SCHEDULERS

    parser = argparse.ArgumentParser(
        prog="triptych-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompts", nargs="*", help="prompts (one image set per prompt)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--variations", metavar="IMAGE", help="variations of this image file")
    mode.add_argument(
        "--interpolate", nargs="*", metavar="PROMPT", action=_BlendItem, help="blend these prompts (and any --image)"
    )
    mode.add_argument("--init-image", metavar="IMAGE", help="img2img: redraw this image file toward the one prompt")
    parser.add_argument(
        "--image", dest="images", metavar="FILE", action=_BlendItem, help="an image file to blend (--interpolate)"
    )
    parser.add_argument("--weights", nargs="+", type=float, help="blend weights for --interpolate, one per item")
    parser.add_argument("--strength", type=float, help="img2img: 0 keeps the image, 1 ignores it (default 0.6)")
    parser.add_argument("--negative-prompt")
    parser.add_argument("--num-images", type=int, default=1, help="images per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="decoder steps (default: the model's)")
    parser.add_argument("--guidance", type=float, help="decoder guidance (default: the model's)")
    parser.add_argument("--prior-steps", type=int)
    parser.add_argument("--prior-guidance", type=float)
    parser.add_argument("--scheduler", choices=DECODER_SCHEDULERS)
    parser.add_argument("--best-of", type=int, help="draw N per image, keep the one closest to the prompt")
    parser.add_argument("--out", default="generated", help="folder for the images")
    parser.add_argument("--grid", help="also write all images as one grid PNG here")
    parser.add_argument(
        "--model", default="shapes", help="'shapes', a preset (kandinsky-2.2), a generator or preset folder"
    )
    parser.add_argument("--encoder", help="encoder (default: the one the generator was trained with)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--offload", action="store_true", help="models on the CPU, each on the GPU while it runs")
    parser.set_defaults(blend=[])
    return parser


@dataclass
class Job:
    """What one run draws, checked before any model is loaded: the call, its arguments and the output names."""

    method: str  # generate, variations, interpolate or img2img
    args: list
    names: list[str]
    options: dict = field(default_factory=dict)


def check_flags(args: argparse.Namespace) -> None:
    """Flags that only make sense together, and every prompt: ValueError or InvalidTextError naming the problem."""
    from triptych.core.checks import check_texts

    interpolating = args.interpolate is not None
    if args.images and not interpolating:
        raise ValueError("--image goes with --interpolate (use --variations IMAGE or --init-image IMAGE otherwise)")
    if args.weights and not interpolating:
        raise ValueError("--weights goes with --interpolate")
    if args.strength is not None and not args.init_image:
        raise ValueError("--strength goes with --init-image")
    if args.negative_prompt is not None and (args.variations or interpolating):
        raise ValueError("--negative-prompt goes with prompts or --init-image, not --variations or --interpolate")
    if args.prompts and (args.variations or interpolating):
        raise ValueError(
            f"stray prompt {args.prompts[0]!r}: --variations takes none, and with --interpolate prompts follow "
            "the flag (repeat --interpolate to add one after an --image)"
        )
    for prompt in [*args.prompts, *(v for kind, v in args.blend if kind == "prompt")]:
        check_texts(prompt, "prompt")
        if Path(prompt.strip()).suffix.lower() in IMAGE_SUFFIXES:  # the old `--interpolate TEXT FILE` form
            raise ValueError(
                f"prompt {prompt!r} looks like an image file name; mark images with --image FILE (--interpolate), "
                "--variations FILE or --init-image FILE"
            )
    if args.negative_prompt is not None:
        check_texts(args.negative_prompt, "negative prompt")


def settings_of(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line, checked (InvalidSettingError) before any model loads."""
    from triptych.diffusion.settings import GenerationSettings

    names = ("seed", "num_images", "steps", "guidance", "prior_steps", "prior_guidance", "scheduler", "best_of")
    settings = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    GenerationSettings().updated(**settings, strength=args.strength)
    return settings


def read_image(file: str, flag: str) -> Image.Image:
    """An image file named by a flag, read now (a missing or bad file ends the run before any model loads)."""
    from triptych.clip import load_image

    return load_image(Path(file), f"{flag} {printable(file)}")


def plan(args: argparse.Namespace) -> Job:
    """The generator call the flags ask for, with prompts, settings and image files all checked. ValueError or
    TriptychError naming the problem."""
    check_flags(args)
    settings = settings_of(args)
    if args.variations:
        return Job("variations", [read_image(args.variations, "--variations")], [Path(args.variations).stem], settings)
    if args.interpolate is not None:
        if not args.blend:
            raise ValueError("--interpolate needs at least one prompt or --image FILE")
        weights = args.weights or [1.0] * len(args.blend)
        if len(weights) != len(args.blend):
            raise ValueError(
                f"--weights: {len(weights)} given for {len(args.blend)} items (prompts and images, in the order given)"
            )
        items = [value if kind == "prompt" else read_image(value, "--image") for kind, value in args.blend]
        return Job("interpolate", [items, weights], ["blend"], settings)
    options = {**settings, "negative_prompt": args.negative_prompt}
    if args.init_image:
        if len(args.prompts) != 1:
            raise ValueError("--init-image takes exactly one prompt")
        strength = 0.6 if args.strength is None else args.strength
        init = read_image(args.init_image, "--init-image")
        return Job("img2img", [init, args.prompts[0], strength], args.prompts, options)
    if not args.prompts:
        raise ValueError("give at least one prompt, --variations IMAGE or --interpolate PROMPT... [--image FILE]")
    return Job("generate", [args.prompts], args.prompts, options)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    from triptych import clip

    try:
        job = plan(args)
        out = writable_folder(args.out, "--out")
        grid_path = writable_file(args.grid, "--grid") if args.grid else None
    except (ValueError, clip.TriptychError) as err:
        return fail(prog, err)

    from triptych import diffusion

    try:
        encoder = (
            clip.load(args.encoder, device=args.device, dtype=args.dtype, offload=args.offload)
            if args.encoder
            else None
        )
    except Exception as err:  # a corrupt folder may fail inside any library: one line, never a traceback
        return fail(prog, load_error("encoder", args.encoder, err))
    try:
        gen = diffusion.load(args.model, encoder=encoder, device=args.device, dtype=args.dtype, offload=args.offload)
    except Exception as err:
        return fail(prog, load_error("generator", args.model, err))
    for part, place in gen.encoder.placement.where().items():
        print(f"{part}: {place}", file=sys.stderr)
    try:
        images = getattr(gen, job.method)(*job.args, **job.options)
    except (clip.TriptychError, RuntimeError, ValueError) as err:
        return fail(prog, err)
    per_name = len(images) // len(job.names)
    try:
        for i, image in enumerate(images):
            path = out / f"{i:03d}-{slug(job.names[i // per_name])}.png"
            save_atomically(image, path)
            print(printable(path))
        if grid_path is not None:
            save_atomically(grid(images, per_name), grid_path)
            print(printable(grid_path))
    except OSError as err:  # the disk filled up or the folder went away while drawing
        return fail(prog, f"cannot write the images: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
