"""Bring-your-own training data shared by the trainers: captioned image folders and JSONL files, served in
seeded, step-addressed batches (see triptych.core.training.StepBatches)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from .images import load_image


def read_samples(source: str | Path, caption_prompt: str = "caption") -> list[tuple[Path, str, str]]:
    """(image path, prompt, answer) from a folder of images + same-named .txt captions (prompt: `caption_prompt`),
    or a JSONL file of {"image", "prompt", "answer"} (image paths relative to the file)."""
    source = Path(source)
    if source.is_dir():
        samples = [
            (img, caption_prompt, img.with_suffix(".txt").read_text().strip())
            for img in sorted(source.iterdir())
            if img.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"} and img.with_suffix(".txt").is_file()
        ]
    elif source.suffix == ".jsonl":
        samples = []
        for n, line in enumerate(source.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                samples.append((source.parent / row["image"], row.get("prompt", caption_prompt), row["answer"]))
            except (ValueError, KeyError) as err:
                raise ValueError(f"{source}:{n}: expected {{'image', 'prompt', 'answer'}} ({err})") from err
    else:
        raise ValueError(f"{source}: give a folder of images with .txt captions, or a .jsonl file")
    if not samples:
        raise ValueError(f"{source}: no samples found")
    return samples


class FileSamples:
    """Batch k of your own samples: epochs of seeded permutations, so batches are addressed by step."""

    def __init__(self, samples: list[tuple[Path, str, str]], seed: int, batch_size: int) -> None:
        self.samples, self.seed, self.batch_size = samples, seed, batch_size
        self._epoch, self._perm = -1, []

    def _order(self, epoch: int) -> list[int]:
        if self._epoch != epoch:
            self._epoch, self._perm = epoch, list(range(len(self.samples)))
            random.Random(f"files/{self.seed}/{epoch}").shuffle(self._perm)
        return self._perm

    def __call__(self, step: int) -> tuple[list[Image.Image], list[str], list[str]]:
        out = []
        for i in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, index = divmod(i, len(self.samples))
            out.append(self.samples[self._order(epoch)[index]])
        return [load_image(p) for p, _, _ in out], [q for _, q, _ in out], [a for _, _, a in out]
