"""Score an encoder on every zero-shot task of world.md, in-distribution and on held-out pairs."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from triptych.clip import Encoder
from triptych.world import render

from .zero_shot_tasks import TASKS, task_scenes


def evaluate_encoder(encoder: Encoder, count: int = 1000, seed: int = 1234, batch_size: int = 250) -> dict:
    """{"in_distribution": {task: accuracy}, "held_out": {task: accuracy}} over `count` fresh scenes each."""
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
    return results
