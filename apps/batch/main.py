"""Batch jobs over whole datasets: classify, caption, ask or embed every image, into Parquet shards.

    triptych batch caption photos/ --out captions/ --sidecars     # photo.jpg -> photo.txt too
    triptych batch classify shards/*.tar --labels cat dog --out labels/
    triptych batch embed images.parquet --out embeddings/          # then: triptych search embeddings/ "a red circle"
    triptych batch caption photos/ --out captions/ --ray           # the same job on Ray (a local instance)
    triptych batch caption s3-list.txt --out captions/ --ray ray://head:10001 --workers 8 --num-gpus-per-worker 1

Inputs: folders (recursive), text files listing image paths, WebDataset tar shards, Parquet files with an image
column (globs allowed). Output: part-*.parquet with key, path, result, score, embedding, error; running the same
command again resumes (keys already written are skipped). A bad image is a row with an error, never a failed job.

Exit codes: 0 done; 1 done, some rows have errors; 2 bad usage or inputs.
"""

from __future__ import annotations

import argparse

from triptych.apps.cli.inputs import fail, writable_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triptych batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("job", choices=("classify", "caption", "ask", "embed"))
    parser.add_argument("inputs", nargs="+", help="folders, path lists (.txt), tar shards, Parquet files; globs")
    parser.add_argument("--out", required=True, help="output folder of Parquet shards (resumed if it exists)")
    parser.add_argument("--model", default="shapes", help="encoder (classify, embed) or VLM (caption, ask)")
    parser.add_argument("--encoder", help="caption/ask: the encoder (default: the VLM's own)")
    parser.add_argument("--labels", nargs="+", help="classify: labels")
    parser.add_argument("--labels-file", help="classify: one label per line")
    parser.add_argument("--templates", nargs="+", help="classify: template ensemble ('world', 'imagenet', ...)")
    parser.add_argument("--question", help="ask: the question put to every image")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="caption/ask")
    parser.add_argument("--image-column", default="image", help="Parquet inputs: the column holding image bytes")
    parser.add_argument("--sidecars", action="store_true", help="caption/ask: write name.txt beside each image file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=1000, help="rows per output shard")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--no-progress", action="store_true")
    cluster = parser.add_argument_group("Ray (pip install 'triptych[distributed]')")
    cluster.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS", help="run on Ray: a cluster address, or none for local Ray"
    )
    cluster.add_argument("--workers", type=int, default=1, help="inference actors (each loads the model once)")
    cluster.add_argument("--num-cpus-per-worker", type=float, default=1.0)
    cluster.add_argument("--num-gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args(argv)
    prog = parser.prog

    from triptych.apps.cli.classify import read_labels
    from triptych.clip.templates import check_templates
    from triptych.core.errors import TriptychError
    from triptych.core.extras import MissingExtraError, require

    try:
        require("pyarrow", "batch", "triptych batch")
        if args.ray is not None:
            require("ray", "distributed", "--ray")
    except MissingExtraError as err:
        return fail(prog, err)
    from .jobs import JobSpec
    from .runner import Placement, run_job

    if min(args.batch_size, args.shard_rows, args.workers, args.max_new_tokens) <= 0:
        return fail(prog, "--batch-size, --shard-rows, --workers and --max-new-tokens must be positive")
    if args.num_cpus_per_worker < 0 or args.num_gpus_per_worker < 0:
        return fail(prog, "--num-cpus-per-worker and --num-gpus-per-worker cannot be negative")
    if args.sidecars and args.job not in ("caption", "ask"):
        return fail(prog, "--sidecars writes captions or answers: use it with caption or ask")
    try:
        labels = tuple(read_labels(args.labels, args.labels_file)) if args.job == "classify" else ()
        templates = None
        if args.templates:
            templates = check_templates(args.templates[0] if len(args.templates) == 1 else args.templates)
        spec = JobSpec(
            args.job,
            args.model,
            args.encoder,
            labels,
            templates,
            args.question,
            args.image_column,
            args.device,
            args.dtype,
            {"max_new_tokens": args.max_new_tokens} if args.job in ("caption", "ask") else {},
        )
        out = writable_folder(args.out, "--out")
        placement = Placement(
            args.ray is not None, args.ray or None, args.workers, args.num_cpus_per_worker, args.num_gpus_per_worker
        )
        summary = run_job(
            spec, args.inputs, out, placement, args.batch_size, args.shard_rows, args.sidecars, not args.no_progress
        )
    except (ValueError, TriptychError) as err:
        return fail(prog, err)
    print(summary.line())
    return 1 if summary.errors else 0
