"""Caption images or answer a question about them from the command line.

    triptych-caption photo.png                       # caption
    triptych-caption images/ --format json           # a folder, as JSON
    triptych-caption photo.png --ask "how many objects are there?"
    triptych-caption photo.png --stream              # print the caption as it is decoded
    triptych-caption photo.jpg --model llava-1.5-7b  # real photos: LLaVA-1.5 (fp16 on a GPU; --offload if small)

Exit codes: 0 all done; 1 some files were skipped (each is reported); 2 bad usage or no usable input.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from .inputs import batches, expand_inputs, fail, load_error, printable, read_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triptych-caption", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--ask", help="a question to ask of every image (default: caption)")
    parser.add_argument("--stream", action="store_true", help="print the answer as it is decoded (one image)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--model", default="shapes", help="'shapes', a preset (llava-1.5-7b) or a VLM folder")
    parser.add_argument("--encoder", help="encoder (default: the one the VLM was trained with)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--offload", action="store_true", help="models on the CPU, each on the GPU while it runs")
    parser.add_argument("--recursive", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the decode step: faster per token, slow first batch"
    )
    args = parser.parse_args(argv)
    prog = parser.prog

    from triptych import clip, vlm
    from triptych.core.checks import check_texts

    generation = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.beams,
        seed=args.seed,
    )
    try:
        vlm.GenerationConfig.from_kwargs(**generation)
        if args.batch_size <= 0:
            raise ValueError("--batch-size must be positive")
        if args.ask is not None:
            check_texts(args.ask, "question")
        files = expand_inputs(args.inputs, args.recursive)
        if not files:
            raise ValueError("no image files found in the given inputs")
        if args.stream and len(files) != 1:
            raise ValueError("--stream takes exactly one image")
        streamed = clip.load_image(files[0][0], printable(files[0][0])) if args.stream else None
    except (ValueError, clip.TriptychError) as err:
        return fail(prog, err)
    try:
        encoder = (
            clip.load(args.encoder, device=args.device, dtype=args.dtype, offload=args.offload)
            if args.encoder
            else None
        )
    except Exception as err:  # a corrupt folder may fail inside any library: one line, never a traceback
        return fail(prog, load_error("encoder", args.encoder, err))
    try:
        captioner = vlm.load(
            args.model, encoder, device=args.device, dtype=args.dtype, compile=args.compile, offload=args.offload
        )
    except Exception as err:
        return fail(prog, load_error("VLM", args.model, err))

    if streamed is not None:
        try:
            for piece in captioner.stream(streamed, args.ask, **generation):
                print(piece, end="", flush=True)
        except clip.TriptychError as err:
            return fail(prog, err)
        print()
        return 0

    rows: list[dict] = []
    progress = tqdm(
        total=len(files),
        desc="caption",
        unit="img",
        file=sys.stderr,
        disable=not any(folder for _, folder in files) or len(files) < 2,
    )
    for batch in batches(files, args.batch_size):
        good, images, errors = read_batch(batch, prog)
        rows += errors
        if images:
            try:
                texts = (
                    captioner.ask(images, args.ask, **generation)
                    if args.ask
                    else captioner.caption(images, **generation)
                )
            except clip.TriptychError as err:
                return fail(prog, err)
            rows += [{"image": printable(p), "text": t} for p, t in zip(good, texts, strict=True)]
        progress.update(len(batch))
    progress.close()
    order = {printable(path): i for i, (path, _) in enumerate(files)}
    rows.sort(key=lambda r: order[r["image"]])
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(f"{row['image']}\t{row.get('text', 'error: ' + row.get('error', ''))}")
    failed = sum("error" in r for r in rows)
    return 2 if failed == len(rows) else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
