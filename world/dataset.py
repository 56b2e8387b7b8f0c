"""Training data rendered on the fly, and an export to a folder of PNG + TXT + JSON files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from .render import render
from .scene import HeldOut, Scene, sample_scene
from .spec import DEFAULT_SIDE, GRID, max_jitter
from .text import caption, random_prompt, random_prompt_spec, random_question

TextKind = Literal["prompt", "caption", "question"]


class ShapesDataset(IterableDataset):
    """Endless (image, text) pairs from the world, seeded per worker and per rank so that no two streams repeat.

    text: "prompt" (a random paraphrase, for contrastive training), "caption" (canonical), or
    "question" (yields (image, question, answer)). `transform` maps the PIL image (e.g. to a tensor).
    with_meta: also yield the Scene, and for prompts the PromptSpec (to decide which texts match which images).
    twins: probability that a scene is followed by its twin, the same objects in other cells: hard negatives
    that teach position to models whose features do not otherwise change with it.
    """

    def __init__(
        self,
        seed: int = 0,
        side: int = DEFAULT_SIDE,
        text: TextKind = "prompt",
        held_out: HeldOut = "exclude",
        transform: Callable[[Image.Image], Any] | None = None,
        rank: int = 0,
        with_meta: bool = False,
        twins: float = 0.0,
    ) -> None:
        if text not in ("prompt", "caption", "question"):
            raise ValueError(f"text must be 'prompt', 'caption' or 'question', not {text!r}")
        self.seed, self.side, self.text, self.held_out = seed, side, text, held_out
        self.transform, self.rank, self.with_meta, self.twins = transform, rank, with_meta, twins

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker = info.id if info else 0
        rng = random.Random(f"{self.seed}/{self.rank}/{worker}")
        for scene in scene_stream(rng, self.held_out, self.side, self.twins):
            image = render(scene)
            image = self.transform(image) if self.transform else image
            if self.text == "prompt":
                text, spec = random_prompt_spec(scene, rng)
                yield (image, text, scene, spec) if self.with_meta else (image, text)
            elif self.text == "caption":
                yield (image, caption(scene), scene) if self.with_meta else (image, caption(scene))
            else:
                _, question, answer = random_question(scene, rng, self.held_out)
                yield (image, question, answer, scene) if self.with_meta else (image, question, answer)


def scene_stream(
    rng: random.Random, held_out: HeldOut = "exclude", side: int = DEFAULT_SIDE, twins: float = 0.0
) -> Iterator[Scene]:
    """Endless scenes; with probability `twins` a scene is followed by its moved twin."""
    while True:
        scene = sample_scene(rng, held_out=held_out, side=side)
        yield scene
        if rng.random() < twins:
            yield moved_twin(scene, rng)


def moved_twin(scene: Scene, rng: random.Random) -> Scene:
    """The same objects (and background) in a fresh draw of distinct cells, with fresh jitter."""
    cells = rng.sample(range(GRID * GRID), len(scene.objects))
    j = max_jitter(scene.side)
    objects = tuple(
        replace(o, cell=c, dx=rng.randint(-j, j), dy=rng.randint(-j, j)) for o, c in zip(scene.objects, cells)
    )
    return Scene(objects, scene.background, scene.side)


def export_folder(
    out: str | Path,
    count: int,
    seed: int = 0,
    side: int = DEFAULT_SIDE,
    held_out: HeldOut = "exclude",
) -> Path:
    """Write `count` scenes as NNNNNN.png, NNNNNN.txt (canonical caption) and NNNNNN.json (scene, prompt, QA)."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    width = max(6, len(str(count - 1)))
    for i in tqdm(range(count), desc="export", unit="img"):
        scene = sample_scene(rng, held_out=held_out, side=side)
        stem = out / f"{i:0{width}d}"
        render(scene).save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(caption(scene) + "\n")
        qtype, question, answer = random_question(scene, rng, held_out)
        meta = {
            "scene": scene.to_dict(),
            "caption": caption(scene),
            "prompt": random_prompt(scene, rng),
            "question": {"type": qtype, "question": question, "answer": answer},
        }
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return out
