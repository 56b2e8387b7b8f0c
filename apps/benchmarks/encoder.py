"""Zero-shot classification speed: Encoder.classify against plain open_clip on the same weights."""

from __future__ import annotations

import statistics

import open_clip
import torch

from triptych import clip
from triptych.clip.factory import open_clip_source
from triptych.core.devices import precision_name
from triptych.core.resolve import resolve
from triptych.world import ALL_PAIRS, render, sample_scene

from .timing import timed


def benchmark_classify(
    model: str, batch_size: int, num_labels: int, repeats: int, device: str | None, dtype: str | None
) -> list[tuple[str, str]]:
    """Rows of (what, result) comparing Encoder.classify with plain open_clip on the same weights."""
    encoder = clip.load(model, device=device, dtype=dtype)
    dev = encoder.device
    labels = [f"a {c} {s}" for c, s in ALL_PAIRS][:num_labels]
    if len(labels) < num_labels:
        labels += [f"label {i}" for i in range(num_labels - len(labels))]
    images = [render(sample_scene(i)) for i in range(batch_size)]

    # the plain-open_clip path a user would write: preprocess each image, encode both towers, softmax
    name, tag, _ = open_clip_source(str(resolve(model).require("encoder")))
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
