"""Benchmark command: our API against the plain library a user would drive instead, side by side in one run.

triptych-benchmark classify --batch-size 256 --labels 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

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
        encoder._labels.clear()
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
    args = parser.parse_args(argv)
    if min(args.batch_size, args.labels, args.repeats) <= 0:
        parser.error("--batch-size, --labels and --repeats must be positive")
    print_table(benchmark_classify(args.model, args.batch_size, args.labels, args.repeats, args.device, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
