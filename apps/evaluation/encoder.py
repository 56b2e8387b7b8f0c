"""Score an encoder on every zero-shot task of world.md, in-distribution and on held-out pairs: classification,
and the compositional probes (ARO / Winoground style: the true caption against its minimal edit)."""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from triptych.clip import Encoder
from triptych.world import render
from triptych.world.edits import EDIT_KINDS, probe

from .zero_shot_tasks import TASKS, task_scenes


def evaluate_encoder(encoder: Encoder, count: int = 1000, seed: int = 1234, batch_size: int = 250) -> dict:
    """{"in_distribution": {task: accuracy}, "held_out": {task: accuracy}} over `count` fresh scenes each:
    the classification tasks, then one row per minimal-edit kind (chance 0.5)."""
    results: dict[str, dict[str, float]] = {"in_distribution": {}, "held_out": {}}
    for split, held_out in (("in_distribution", False), ("held_out", True)):
        for task in tqdm(TASKS, desc=f"zero-shot {split}", leave=False):
            scenes = task_scenes(task, count, seed, held_out)
            truth = torch.tensor([task.labels.index(task.truth(s)) for s in scenes])
            correct = 0
            for i in range(0, count, batch_size):
                images = [render(s) for s in scenes[i : i + batch_size]]
                probs = encoder.classify(images, task.labels, task.templates)
                correct += (probs.argmax(-1).cpu() == truth[i : i + batch_size]).sum().item()
            results[split][task.name] = correct / count
        results[split].update(evaluate_binding(encoder, count, seed, held_out, batch_size))
    return results


def evaluate_binding(
    encoder: Encoder, count: int = 1000, seed: int = 1234, held_out: bool = False, batch_size: int = 250
) -> dict[str, float]:
    """{edit kind: fraction of `count` fresh probes whose image scores its true caption above the edit}."""
    scores = {}
    for kind in EDIT_KINDS:
        rng = random.Random(f"{seed}/binding/{kind}/{held_out}")
        probes = [probe(kind, rng, held_out=held_out) for _ in range(count)]
        correct = 0
        for i in range(0, count, batch_size):
            chunk = probes[i : i + batch_size]
            images = encoder.encode_image([render(p.scene) for p in chunk])  # (B, D) normalised
            true = encoder.encode_text([p.true for p in chunk])
            edit = encoder.encode_text([p.edit for p in chunk])
            correct += ((images * true).sum(-1) > (images * edit).sum(-1)).sum().item()
        scores[kind] = correct / count
    return scores
