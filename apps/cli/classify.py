"""Zero-shot classification from the command line: images, or folders of them, against any labels.

    triptych-classify photo.png --labels "a red circle" "a blue star"
    triptych-classify images/ --labels-file labels.txt --templates world --top-k 3 --format csv

Exit codes: 0 all images classified; 1 some files were skipped (each is reported); 2 bad usage or no usable input.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .inputs import batches, expand_inputs, fail, load_error, printable, read_batch


def read_labels(inline: list[str] | None, label_file: str | None) -> list[str]:
    """Labels from --labels, or one per line from --labels-file (blank lines and `#` comments skipped)."""
    if label_file:
        try:
            lines = Path(label_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read labels file {label_file}: {err}") from err
        return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return list(inline or [])


def render_table(rows: list[dict], k: int) -> str:
    lines = []
    for row in rows:
        lines.append(str(row["image"]))
        if "error" in row:
            lines.append(f"  error: {row['error']}")
            continue
        width = max(len(t["label"]) for t in row["top"])
        for rank, top in enumerate(row["top"][:k], start=1):
            lines.append(f"  {rank:>2}. {top['label']:<{width}}  {top['prob']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triptych-classify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--labels", nargs="+", help="labels, each one argument (quote labels with spaces)")
    group.add_argument("--labels-file", help="a text file with one label per line")
    parser.add_argument(
        "--templates",
        nargs="+",
        help="template ensemble: 'world', 'imagenet', 'none', or templates holding '{}' (e.g. 'a photo of a {}.')",
    )
    parser.add_argument("--top-k", type=int, default=5, help="how many labels to show per image (default 5)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--model", default="shapes", help="encoder: shapes, an open_clip name[:tag], local-dir:…")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--dtype", help="fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    args = parser.parse_args(argv)
    prog = parser.prog

    if args.top_k <= 0:
        return fail(prog, "--top-k must be positive")
    if args.batch_size <= 0:
        return fail(prog, "--batch-size must be positive")
    from triptych import clip  # imported late: --help stays fast
    from triptych.clip.templates import check_templates
    from triptych.core.checks import check_labels

    try:
        labels = list(check_labels(read_labels(args.labels, args.labels_file)))
        templates = check_templates(
            args.templates[0] if args.templates and len(args.templates) == 1 else args.templates
        )
        files = expand_inputs(args.inputs, args.recursive)
    except (ValueError, clip.TriptychError) as err:
        return fail(prog, err)
    if not files:
        return fail(prog, "no image files found in the given inputs")
    try:
        encoder = clip.load(args.model, device=args.device, dtype=args.dtype)
    except Exception as err:  # a corrupt folder may fail inside any library: one line, never a traceback
        return fail(prog, load_error("encoder", args.model, err))

    rows: list[dict] = []
    from_folder = any(folder for _, folder in files)
    progress = tqdm(
        total=len(files), desc="classify", unit="img", disable=not from_folder or len(files) < 2, file=sys.stderr
    )
    for batch in batches(files, args.batch_size):
        good, images, errors = read_batch(batch, prog)
        rows += errors
        if images:
            try:
                probs = encoder.classify(images, labels, templates).cpu()
            except clip.TriptychError as err:
                return fail(prog, err)
            for path, p in zip(good, probs):
                top = p.topk(min(args.top_k, len(labels)))
                rows.append(
                    {
                        "image": printable(path),
                        "top": [
                            {"label": labels[i], "prob": round(float(v), 6)} for v, i in zip(top.values, top.indices)
                        ],
                    }
                )
        progress.update(len(batch))
    progress.close()
    order = {printable(path): i for i, (path, _) in enumerate(files)}
    rows.sort(key=lambda r: order[r["image"]])

    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "label", "prob", "error"])
        for row in rows:
            if "error" in row:
                writer.writerow([row["image"], "", "", "", row["error"]])
            for rank, top in enumerate(row.get("top", []), start=1):
                writer.writerow([row["image"], rank, top["label"], f"{top['prob']:.6f}", ""])
    else:
        print(render_table(rows, args.top_k))
    failed = sum("error" in r for r in rows)
    if failed == len(rows):
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
