"""Generate images from prompts, variations of an image, blends of prompts and images, or img2img.

    triptych-generate "a red circle" "two stars" --num-images 4 --out generated/ --grid grid.png
    triptych-generate --variations scene.png --num-images 4
    triptych-generate --interpolate "a red circle" scene.png --weights 0.3 0.7
    triptych-generate "a blue star" --init-image scene.png --strength 0.6
    triptych-generate "two stars" --scheduler dpm++ --steps 15 --best-of 4

Files are written atomically as <out>/<index>-<prompt>.png. Exit codes: 0 done; 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from PIL import Image


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


def main(argv: list[str] | None = None) -> int:
    from diffusion.settings import DECODER_SCHEDULERS

    parser = argparse.ArgumentParser(
        prog="triptych-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompts", nargs="*", help="prompts (one image set per prompt)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--variations", metavar="IMAGE", help="variations of this image")
    mode.add_argument("--interpolate", nargs="+", metavar="ITEM", help="prompts and/or image files to blend")
    mode.add_argument("--init-image", metavar="IMAGE", help="img2img: redraw this image toward the one prompt")
    parser.add_argument("--weights", nargs="+", type=float, help="blend weights for --interpolate")
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
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"triptych-generate: error: {message}", file=sys.stderr)
        return 2

    if args.weights and not args.interpolate:
        return fail("--weights goes with --interpolate")
    if args.variations and args.prompts:
        return fail("--variations takes no prompts")
    if args.init_image and len(args.prompts) != 1:
        return fail("--init-image takes exactly one prompt")
    if not (args.prompts or args.variations or args.interpolate):
        return fail("give at least one prompt, --variations IMAGE or --interpolate ITEMS")

    import clip
    import diffusion

    settings = {
        "steps": args.steps,
        "guidance": args.guidance,
        "prior_steps": args.prior_steps,
        "prior_guidance": args.prior_guidance,
        "scheduler": args.scheduler,
        "best_of": args.best_of,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    common = {"seed": args.seed, "num_images": args.num_images, **settings}
    try:
        encoder = (
            clip.load(args.encoder, device=args.device, dtype=args.dtype, offload=args.offload)
            if args.encoder
            else None
        )
        gen = diffusion.load(args.model, encoder=encoder, device=args.device, dtype=args.dtype, offload=args.offload)
        for part, place in gen.encoder.placement.where().items():
            print(f"{part}: {place}", file=sys.stderr)
        if args.variations:
            images, names = gen.variations(args.variations, **common), [Path(args.variations).stem]
        elif args.interpolate:
            weights = args.weights or [1.0] * len(args.interpolate)
            images, names = gen.interpolate(args.interpolate, weights, **common), ["blend"]
        elif args.init_image:
            strength = 0.6 if args.strength is None else args.strength
            images = gen.img2img(
                args.init_image, args.prompts[0], strength, negative_prompt=args.negative_prompt, **common
            )
            names = args.prompts
        else:
            images, names = gen.generate(args.prompts, negative_prompt=args.negative_prompt, **common), args.prompts
    except (clip.TriptychError, RuntimeError, ValueError) as err:
        return fail(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_name = len(images) // len(names)
    for i, image in enumerate(images):
        path = out / f"{i:03d}-{slug(names[i // per_name])}.png"
        save_atomically(image, path)
        print(path)
    if args.grid:
        save_atomically(grid(images, per_name), Path(args.grid))
        print(args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
