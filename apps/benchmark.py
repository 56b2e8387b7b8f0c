"""Benchmark command: our API against the plain library a user would drive instead, side by side in one run; and
the served app under load (`load`) and over a long run (`soak`).

triptych-benchmark classify --batch-size 256 --labels 48
triptych-benchmark soak --requests 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of each call (CUDA synchronised)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def benchmark_classify(
    model: str, batch_size: int, num_labels: int, repeats: int, device: str | None, dtype: str | None
) -> list[tuple[str, str]]:
    """Rows of (what, result) comparing Encoder.classify with plain open_clip on the same weights."""
    import open_clip

    import clip
    from clip.devices import precision_name
    from clip.factory import resolve
    from weights.world import ALL_PAIRS, render, sample_scene

    encoder = clip.load(model, device=device, dtype=dtype)
    dev = encoder.device
    labels = [f"a {c} {s}" for c, s in ALL_PAIRS][:num_labels]
    if len(labels) < num_labels:
        labels += [f"label {i}" for i in range(num_labels - len(labels))]
    images = [render(sample_scene(i)) for i in range(batch_size)]

    # the plain-open_clip path a user would write: preprocess each image, encode both towers, softmax
    name, tag, _ = resolve(model)
    plain, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=tag, device=dev, precision=precision_name(encoder.dtype)
    )
    plain.eval()
    tokenizer = open_clip.get_tokenizer(name)

    @torch.inference_mode()
    def plain_classify(imgs: list) -> torch.Tensor:
        pixels = torch.stack([preprocess(im) for im in imgs]).to(dev, encoder.dtype)
        image_features = plain.encode_image(pixels, normalize=True)
        text_features = plain.encode_text(tokenizer(labels).to(dev), normalize=True)
        return (100.0 * image_features @ text_features.T).softmax(dim=-1)

    ours = lambda: encoder.classify(images, labels)  # noqa: E731
    for fn in (ours, lambda: plain_classify(images)):  # warm-up
        fn()
    t_ours = statistics.median(timed(ours, repeats, dev))
    t_plain = statistics.median(timed(lambda: plain_classify(images), repeats, dev))

    def first_call() -> None:
        encoder.clear_label_cache()
        encoder.classify(images[:1], labels)

    t_first = statistics.median(timed(first_call, repeats, dev))
    encoder.classify(images[:1], labels)
    t_cached = statistics.median(timed(lambda: encoder.classify(images[:1], labels), repeats, dev))
    t_plain_1 = statistics.median(timed(lambda: plain_classify(images[:1]), repeats, dev))
    return [
        ("model / device / dtype", f"{model} / {dev} / {str(encoder.dtype).split('.')[-1]}"),
        (f"batch {batch_size}, {num_labels} labels: plain open_clip", f"{batch_size / t_plain:,.0f} img/s"),
        (f"batch {batch_size}, {num_labels} labels: triptych classify", f"{batch_size / t_ours:,.0f} img/s"),
        ("throughput ratio (triptych / open_clip)", f"{t_plain / t_ours:.2f}x"),
        ("batch 1: plain open_clip", f"{t_plain_1 * 1000:.2f} ms"),
        ("batch 1: triptych, first call (labels encoded)", f"{t_first * 1000:.2f} ms"),
        ("batch 1: triptych, cached label set", f"{t_cached * 1000:.2f} ms"),
        ("cached speed-up (first / cached)", f"{t_first / t_cached:.1f}x"),
    ]


def benchmark_vlm(
    model: str,
    encoder: str | None,
    batch_sizes: tuple[int, ...],
    new_tokens: int,
    repeats: int,
    device: str | None,
    dtype: str | None,
    compile: bool = True,
) -> list[tuple[str, str]]:
    """Our generation vs transformers' LlamaForCausalLM.generate on the same decoder weights and prefixes;
    ours with vs without the KV cache; and (`compile`) ours with the torch.compile'd static-shape step. Every
    run decodes exactly `new_tokens` tokens (EOS ignored)."""
    import tempfile

    from transformers import LlamaForCausalLM

    import clip
    import vlm
    from vlm.generate import Generator
    from weights.world import render, sample_scene

    enc = clip.load(encoder, device=device, dtype=dtype) if encoder else None
    captioner = vlm.load(model, encoder=enc, device=device, dtype=dtype)
    dev, dt = captioner.encoder.device, next(captioner.vlm.parameters()).dtype
    with tempfile.TemporaryDirectory() as tmp:
        captioner.vlm.decoder.save_pretrained(tmp)
        hf = LlamaForCausalLM.from_pretrained(tmp, dtype=dt).to(dev).eval()
    images = [render(sample_scene(i)) for i in range(max(batch_sizes))]
    prompt = captioner.vlm.config.caption_prompt
    rows = [
        ("model / device / dtype", f"{model} / {dev} / {str(dt).split('.')[-1]}"),
        ("new tokens per caption", str(new_tokens)),
    ]
    codec = captioner.codec
    compiled = Generator(captioner.vlm.decoder, codec.eos_id, codec.decode, compiled=True) if compile else None
    for bs in batch_sizes:
        embeds, valid = captioner._prefixes(images[:bs], [prompt] * bs, new_tokens)
        runs = _vlm_runs(captioner.generator, hf, embeds, valid, new_tokens, compiled)
        with torch.inference_mode():
            for name, (generate, _) in runs.items():
                start = time.perf_counter()
                generate()  # warm-up (for the compiled step: compiling it)
                if "compiled" in name:
                    rows.append((f"batch {bs}: compile time (first call)", f"{time.perf_counter() - start:.1f} s"))
            # round-robin, one call of each per round: a shared machine's drifting speed hits every row alike
            times: dict[str, list[float]] = {name: [] for name in runs}
            firsts: dict[str, list[float]] = {name: [] for name, (_, first) in runs.items() if first}
            for _ in range(repeats):
                for name, (generate, first) in runs.items():
                    times[name] += timed(generate, 1, dev)
                    if first:
                        firsts[name] += timed(first, 1, dev)
        for name in runs:
            t = statistics.median(times[name])
            ttft = f", first token {statistics.median(firsts[name]) * 1000:.1f} ms" if name in firsts else ""
            rows.append((f"batch {bs}: {name}", f"{bs * new_tokens / t:,.0f} tok/s, {bs / t:,.1f} captions/s{ttft}"))
    return rows


def _vlm_runs(generator, hf, embeds: torch.Tensor, valid: torch.Tensor, n: int, compiled=None) -> dict:
    """name -> (decode n tokens, decode the first token only or None) for one batch of prefixes; `compiled`, a
    Generator with the torch.compile'd step, adds its row."""
    from vlm.generate import GenerationConfig

    full = GenerationConfig(max_new_tokens=n, ignore_eos=True)
    mask = valid.long()

    def hf_generate(tokens: int):
        return hf.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
        )

    runs = {
        "triptych (KV cache)": (
            lambda: generator.generate(embeds, valid, full),
            lambda: generator.generate(embeds, valid, GenerationConfig(1)),
        ),
        "triptych (no cache)": (lambda: generator.generate(embeds, valid, replace(full, use_cache=False)), None),
        "transformers generate": (lambda: hf_generate(n), lambda: hf_generate(1)),
    }
    if compiled is not None:
        runs["triptych (KV cache, compiled)"] = (lambda: compiled.generate(embeds, valid, full), None)
    return runs


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
    soak = sub.add_parser("soak", help="mixed requests, each a new session, against `triptych serve`: memory growth")
    soak.add_argument("--requests", type=int, default=2000)
    soak.add_argument("--warmup", type=int, default=200, help="requests before the first memory reading")
    soak.add_argument("--clients", type=int, default=4, help="requests sent at a time")
    soak.add_argument("--max-growth", type=float, default=50.0, help="MiB the server's RSS may grow after warm-up")
    soak.add_argument("--url", help="an app already running (give --pid too; default: start one on --port)")
    soak.add_argument("--pid", type=int, help="the process id of the server at --url")
    soak.add_argument("--preset", default="shapes")
    soak.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)
    if args.what == "memory":
        from .bench_memory import benchmark_memory

        rows = benchmark_memory(args.preset, args.device, args.dtype)
    elif args.what == "load":
        return _load(parser, args)
    elif args.what == "soak":
        return _soak(parser, args)
    elif args.what == "diffusion":
        from .bench_diffusion import benchmark_generator

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


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .load_test import run_load, serve_in_background

    if args.clients <= 0 or not args.seconds > 0:
        parser.error("--clients and --seconds must be positive")
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
    from .load_test import run_soak, serve_in_background

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
