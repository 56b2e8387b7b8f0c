"""Benchmark command: our API against the plain library a user would drive instead, side by side in one run; and
the served app under load (`load`) and over a long run (`soak`).

triptych-benchmark classify --batch-size 256 --labels 48
triptych-benchmark soak --requests 2000
"""

from __future__ import annotations

import argparse
import sys

from triptych.core.extras import MissingExtraError, require

from .captioner import benchmark_vlm
from .encoder import benchmark_classify
from .generator import benchmark_generator


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(a) for a, _ in rows)
    print(f"| {'measure':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for a, b in rows:
        print(f"| {a:<{width}} | {b} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triptych-benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    cls = sub.add_parser("classify", help="Encoder.classify vs plain open_clip on the same weights")
    cls.add_argument("--model", default="shapes")
    cls.add_argument("--batch-size", type=int, default=256)
    cls.add_argument("--labels", type=int, default=48)
    cls.add_argument("--repeats", type=int, default=10)
    cls.add_argument("--device")
    cls.add_argument("--dtype")
    gen = sub.add_parser("vlm", help="VLM decoding vs transformers' LlamaForCausalLM.generate, cache vs none")
    gen.add_argument("--model", default="shapes")
    gen.add_argument("--encoder")
    gen.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    gen.add_argument("--new-tokens", type=int, default=48)
    gen.add_argument("--repeats", type=int, default=5)
    gen.add_argument("--device")
    gen.add_argument("--dtype")
    gen.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd decoding row")
    dif = sub.add_parser("diffusion", help="decoder vs diffusers' KandinskyV22Pipeline; DPM-Solver++ vs DDIM-50")
    dif.add_argument("--model", default="shapes")
    dif.add_argument("--encoder")
    dif.add_argument("--batch-size", type=int, default=16)
    dif.add_argument("--steps", type=int, nargs="+", default=[25, 50], help="step counts to compare at")
    dif.add_argument("--fast-steps", type=int, nargs="+", default=[10, 15], help="DPM-Solver++ step counts")
    dif.add_argument("--score-count", type=int, default=20, help="prompts per category for scores (0: skip)")
    dif.add_argument("--repeats", type=int, default=3)
    dif.add_argument("--device")
    dif.add_argument("--dtype")
    mem = sub.add_parser("memory", help="the app's peak memory vs three separate apps, each with its own encoder")
    mem.add_argument("--preset", default="shapes")
    mem.add_argument("--device")
    mem.add_argument("--dtype")
    load = sub.add_parser("load", help="concurrent gradio_client users on every endpoint, plus bad uploads")
    load.add_argument("--url", help="an app already running (default: start one on --port)")
    load.add_argument("--preset", default="shapes")
    load.add_argument("--port", type=int, default=7861)
    load.add_argument("--clients", type=int, default=16)
    load.add_argument("--seconds", type=float, default=60.0)
    load.add_argument(
        "--ray", action="store_true", help="compare `triptych serve` with `serve --ray` at 1 and 2 replicas, one run"
    )
    soak = sub.add_parser("soak", help="mixed requests, each a new session, against `triptych serve`: memory growth")
    soak.add_argument("--requests", type=int, default=2000)
    soak.add_argument("--warmup", type=int, default=200, help="requests before the first memory reading")
    soak.add_argument("--clients", type=int, default=4, help="requests sent at a time")
    soak.add_argument("--max-growth", type=float, default=50.0, help="MiB the server's RSS may grow after warm-up")
    soak.add_argument("--url", help="an app already running (give --pid too; default: start one on --port)")
    soak.add_argument("--pid", type=int, help="the process id of the server at --url")
    soak.add_argument("--preset", default="shapes")
    soak.add_argument("--port", type=int, default=7861)
    bat = sub.add_parser("batch", help="triptych batch caption locally and on Ray vs triptych-caption, one folder")
    bat.add_argument("--count", type=int, default=256, help="images in the folder")
    bat.add_argument("--batch-size", type=int, default=32)
    bat.add_argument("--model", default="shapes")
    bat.add_argument("--ray", default=None, metavar="ADDRESS", help="a Ray cluster (default: a local instance)")
    args = parser.parse_args(argv)
    if args.what == "batch":
        if min(args.count, args.batch_size) <= 0:
            parser.error("--count and --batch-size must be positive")
        from .batch import benchmark_batch

        print_table(benchmark_batch(args.count, args.batch_size, args.model, args.ray))
        sys.stdout.flush()  # before Ray's own shutdown at exit
        return 0
    if args.what == "memory":
        _need_the_app_extra(parser)  # it measures the app itself
        from .memory import benchmark_memory

        rows = benchmark_memory(args.preset, args.device, args.dtype)
    elif args.what == "load":
        return _load(parser, args)
    elif args.what == "soak":
        return _soak(parser, args)
    elif args.what == "diffusion":
        if min([args.batch_size, args.repeats, *args.steps, *args.fast_steps]) <= 0 or args.score_count < 0:
            parser.error("--batch-size, --repeats and step counts must be positive, --score-count >= 0")
        rows = benchmark_generator(
            args.model,
            args.encoder,
            args.batch_size,
            tuple(args.steps),
            tuple(args.fast_steps),
            args.score_count,
            args.repeats,
            args.device,
            args.dtype,
        )
    elif args.what == "classify":
        if min(args.batch_size, args.labels, args.repeats) <= 0:
            parser.error("--batch-size, --labels and --repeats must be positive")
        rows = benchmark_classify(args.model, args.batch_size, args.labels, args.repeats, args.device, args.dtype)
    else:
        if min([*args.batch_sizes, args.new_tokens, args.repeats]) <= 0:
            parser.error("--batch-sizes, --new-tokens and --repeats must be positive")
        rows = benchmark_vlm(
            args.model,
            args.encoder,
            tuple(args.batch_sizes),
            args.new_tokens,
            args.repeats,
            args.device,
            args.dtype,
            compile=not args.no_compile,
        )
    print_table(rows)
    return 0


def _need_the_app_extra(parser: argparse.ArgumentParser) -> None:
    """The memory, load and soak benchmarks run the app (and drive it through gradio_client): say how to install
    it."""
    try:
        require("gradio", "app", "this benchmark")
        require("gradio_client", "app", "this benchmark")
    except MissingExtraError as err:
        parser.error(str(err))


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _need_the_app_extra(parser)
    from .load import run_load, serve_in_background

    if args.clients <= 0 or not args.seconds > 0:
        parser.error("--clients and --seconds must be positive")
    if args.ray:
        from .load import compare_serving

        print_table(compare_serving(args.preset, args.port, args.clients, args.seconds))
        return 0
    server = None if args.url else serve_in_background(args.preset, args.port)
    try:
        report = run_load(args.url or f"http://127.0.0.1:{args.port}/", args.clients, args.seconds)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    print_table(report.rows())
    for line in report.errors[:10] + report.bad_unclear[:10]:
        print(f"  {line}", file=sys.stderr)
    return 0 if report.ok else 1


def _soak(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _need_the_app_extra(parser)
    from .load import run_soak, serve_in_background

    if min(args.requests, args.clients) <= 0 or args.warmup < 0 or not args.max_growth > 0:
        parser.error("--requests, --clients and --max-growth must be positive, --warmup >= 0")
    if (args.url is None) != (args.pid is None):
        parser.error("--url and --pid go together (the soak reads the server's memory)")
    server = None if args.url else serve_in_background(args.preset, args.port)
    try:
        url, pid = (args.url, args.pid) if server is None else (f"http://127.0.0.1:{args.port}/", server.pid)
        report = run_soak(url, pid, args.requests, args.warmup, args.clients)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    print_table(report.rows())
    for line in report.errors[:10]:
        print(f"  {line}", file=sys.stderr)
    return 0 if report.ok(args.max_growth) else 1


if __name__ == "__main__":
    sys.exit(main())
