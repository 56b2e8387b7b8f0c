"""Score a Captioner on fresh world scenes: caption exact match and object F1, per-question-type accuracy,
in-distribution and on scenes holding held-out pairs."""

from __future__ import annotations

import random

from tqdm.auto import tqdm

from triptych.world import QUESTION_TYPES, caption, caption_objects, question_answers, render, sample_scene


def object_f1(predicted: list[str], scenes: list) -> float:
    """Micro-averaged F1 over (size, colour, shape, cell) tuples."""
    hits = n_pred = n_true = 0
    for text, scene in zip(predicted, scenes, strict=True):
        pred, true = caption_objects(text), scene.keys()
        hits, n_pred, n_true = hits + len(pred & true), n_pred + len(pred), n_true + len(true)
    return 2 * hits / max(1, n_pred + n_true)


def evaluate_captioner(captioner, count: int = 1000, seed: int = 1234, batch_size: int = 64) -> dict:
    """{"in_distribution": {...}, "held_out": {...}} with caption_exact, object_f1 and one accuracy per question."""
    results: dict[str, dict[str, float]] = {}
    for split, mode in (("in_distribution", "exclude"), ("held_out", "only")):
        rng = random.Random(f"{seed}/vlm/{split}")
        scenes = [sample_scene(rng, held_out=mode) for _ in range(count)]
        predicted = []
        for i in tqdm(range(0, count, batch_size), desc=f"captions {split}", leave=False):
            predicted += captioner.caption([render(s) for s in scenes[i : i + batch_size]])
        scores = {
            "caption_exact": sum(p == caption(s) for p, s in zip(predicted, scenes, strict=True)) / count,
            "object_f1": object_f1(predicted, scenes),
        }
        for qtype in QUESTION_TYPES:
            items = []
            while len(items) < count:
                scene = sample_scene(rng, held_out=mode)
                try:
                    items.append((scene, *question_answers(scene, qtype, rng, held_out=mode)))
                except LookupError:
                    continue
            correct = 0
            for i in range(0, count, batch_size):
                chunk = items[i : i + batch_size]
                answers = captioner.ask([render(s) for s, _, _ in chunk], [q for _, q, _ in chunk])
                correct += sum(a == truth for a, (_, _, truth) in zip(answers, chunk, strict=True))
            scores[f"q_{qtype}"] = correct / count
        results[split] = scores
    return results
