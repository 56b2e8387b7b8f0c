"""The four batch jobs as one code path: items -> decoded images (`decode_items`, the readers' work) -> result
rows (`Worker`, the model's work), as Arrow tables of one schema. The local runner calls both in turn; under Ray
the first runs as stateless tasks and the second as actors, each loading the model once."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from triptych.core.errors import InvalidImageError
from triptych.core.images import load_image

from .sources import Item, read_item

JOBS = ("classify", "caption", "ask", "embed")
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("result", pa.string()),  # label, caption or answer (embed: null)
        ("score", pa.float32()),  # classify: the label's probability
        ("embedding", pa.list_(pa.float32())),  # embed: the L2-normalised image embedding
        ("error", pa.string()),  # why the row has no result (a bad image); null when it has one
    ]
)


@dataclass(frozen=True)
class JobSpec:
    """What a job computes: `job` (one of JOBS) with the model and the job's own settings."""

    job: str
    model: str = "shapes"
    encoder: str | None = None
    labels: tuple[str, ...] = ()
    templates: tuple[str, ...] | str | None = None
    question: str | None = None
    image_column: str = "image"
    device: str | None = None
    dtype: str | None = None
    generation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise ValueError(f"unknown job {self.job!r}; expected one of {JOBS}")
        if self.job == "classify" and len(self.labels) < 2:
            raise ValueError("classify needs at least two labels (--labels or --labels-file)")
        if self.job == "ask" and not (self.question or "").strip():
            raise ValueError("ask needs a question (--question)")


def decode_items(batch: dict[str, np.ndarray], image_column: str = "image") -> dict[str, np.ndarray]:
    """Read and decode a batch of items (columns of Item fields): `image` holds (H, W, 3) uint8 arrays, or None
    where `error` says why the image could not be read."""
    images, errors = [], []
    for fields in _rows(batch):
        item = Item(**fields)
        try:
            image = load_image(read_item(item, image_column), item.key)
            images.append(np.asarray(image, dtype=np.uint8))
            errors.append(None)
        except (InvalidImageError, OSError, ValueError) as err:
            images.append(None)
            errors.append(str(err) or type(err).__name__)
    out = {name: np.asarray(batch[name], dtype=object) for name in ("key", "path")}
    out["image"] = _objects(images)
    out["error"] = np.asarray(errors, dtype=object)
    return out


class Worker:
    """The model, loaded once, turning decoded batches into result tables (SCHEMA)."""

    def __init__(self, spec: JobSpec) -> None:
        from triptych import clip, vlm

        self.spec = spec
        if spec.job in ("caption", "ask"):
            encoder = clip.load(spec.encoder, device=spec.device, dtype=spec.dtype) if spec.encoder else None
            self.captioner = vlm.load(spec.model, encoder=encoder, device=spec.device, dtype=spec.dtype)
        else:
            self.encoder = clip.load(spec.model, device=spec.device, dtype=spec.dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from PIL import Image

        n = len(batch["key"])
        # Ray hands an all-null column over as NaN floats: an error is a message or nothing
        errors = [e if isinstance(e, str) else None for e in batch["error"]]
        good = [i for i in range(n) if errors[i] is None]
        result, score, embedding = [None] * n, [None] * n, [None] * n
        if good:
            images = [Image.fromarray(batch["image"][i]) for i in good]
            for i, (r, s, e) in zip(good, self._run(images)):
                result[i], score[i], embedding[i] = r, s, e
        columns = {
            "key": [str(k) for k in batch["key"]],
            "path": [str(p) for p in batch["path"]],
            "result": result,
            "score": score,
            "embedding": embedding,
            "error": errors,
        }
        return pa.table(columns, schema=SCHEMA)

    def _run(self, images: list) -> list[tuple]:
        """(result, score, embedding) per image."""
        spec = self.spec
        if spec.job == "embed":
            vectors = self.encoder.encode_image(images).float().cpu().numpy()
            return [(None, None, v.tolist()) for v in vectors]
        if spec.job == "classify":
            probs = self.encoder.classify(images, list(spec.labels), spec.templates).float().cpu()
            best = probs.max(dim=-1)
            return [(spec.labels[i], float(p), None) for p, i in zip(best.values.tolist(), best.indices.tolist())]
        if spec.job == "caption":
            texts = self.captioner.caption(images, **spec.generation)
        else:
            texts = self.captioner.ask(images, spec.question, **spec.generation)
        return [(t, None, None) for t in texts]


def _rows(batch: dict[str, np.ndarray]) -> list[dict]:
    """Columns of Item fields -> one dict per row (Ray hands missing values over as None or NaN)."""
    n = len(batch["key"])
    rows = []
    for i in range(n):
        member, row = batch["member"][i], batch["row"][i]
        rows.append(
            {
                "key": str(batch["key"][i]),
                "path": str(batch["path"][i]),
                "member": None if member is None or member != member else str(member),
                "row": None if row is None or row != row else int(row),
            }
        )
    return rows


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of arbitrary values (np.asarray would try to stack equal-shaped arrays)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out
