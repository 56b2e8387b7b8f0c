"""Search the embeddings a `triptych batch embed` job wrote: text -> images, or image -> images, by exact cosine
similarity (the rows are L2-normalised, so a dot product), top-k over the whole matrix in chunks.

    triptych search embeddings/ "a red circle" --top-k 10
    triptych search embeddings/ --image query.png --top-k 5 --format json

The query is embedded with the model the job recorded (or --model).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_ROWS = 1 << 18  # rows scored at once: bounds the temporary (chunk,) score buffers


@dataclass(frozen=True)
class Hit:
    key: str
    path: str
    score: float


class EmbeddingIndex:
    """The (N, D) float32 matrix of an embed job's rows (rows with errors left out), with their keys and paths."""

    def __init__(self, vectors: np.ndarray, keys: list[str], paths: list[str], model: str | None = None) -> None:
        self.vectors, self.keys, self.paths, self.model = vectors, keys, paths, model

    @classmethod
    def load(cls, out: str | Path) -> EmbeddingIndex:
        from .output import job_info, read_rows

        info = job_info(out)
        if info.get("job") != "embed":
            raise ValueError(f"{out} holds a {info.get('job')} job; search reads `triptych batch embed` output")
        table = read_rows(out, ["key", "path", "embedding", "error"])
        table = table.filter(table.column("error").is_null())
        column = table.column("embedding").combine_chunks()
        dim = len(column[0]) if len(column) else 0
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), dim)
        return cls(vectors, table.column("key").to_pylist(), table.column("path").to_pylist(), info.get("model"))

    def search(self, query: np.ndarray, top_k: int = 10) -> list[Hit]:
        """The `top_k` rows most similar to the (D,) query vector, best first."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.vectors.shape[1]:
            raise ValueError(f"the query has {query.shape[0]} dimensions; the embeddings have {self.vectors.shape[1]}")
        k = min(top_k, len(self.vectors))
        best_scores, best_rows = np.empty(0, np.float32), np.empty(0, np.int64)
        for start in range(0, len(self.vectors), CHUNK_ROWS):
            scores = self.vectors[start : start + CHUNK_ROWS] @ query  # (chunk,)
            top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k] if len(scores) > k else np.arange(len(scores))
            best_scores = np.concatenate([best_scores, scores[top]])
            best_rows = np.concatenate([best_rows, top + start])
            keep = np.argsort(-best_scores, kind="stable")[:k]
            best_scores, best_rows = best_scores[keep], best_rows[keep]
        return [Hit(self.keys[r], self.paths[r], float(s)) for r, s in zip(best_rows.tolist(), best_scores.tolist())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triptych search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("embeddings", help="a `triptych batch embed` output folder (or one of its shards)")
    parser.add_argument("query", nargs="?", help="the text to search for")
    parser.add_argument("--image", help="search by this image file instead of text")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--model", help="the encoder for the query (default: the one the job used)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--device")
    args = parser.parse_args(argv)

    from triptych.apps.cli.inputs import fail, printable
    from triptych.core.errors import TriptychError
    from triptych.core.extras import MissingExtraError, require

    prog = parser.prog
    if (args.query is None) == (args.image is None):
        return fail(prog, "give a text query or --image FILE (one of them)")
    if args.top_k <= 0:
        return fail(prog, "--top-k must be positive")
    try:
        require("pyarrow", "batch", "triptych search")
        from triptych import clip
        from triptych.core.checks import check_texts

        index = EmbeddingIndex.load(args.embeddings)
        encoder = clip.load(args.model or index.model or "shapes", device=args.device)
        if args.image:
            query = encoder.encode_image(clip.load_image(Path(args.image), printable(args.image)))[0]
        else:
            query = encoder.encode_text(check_texts(args.query, "query"))[0]
        hits = index.search(query.float().cpu().numpy(), args.top_k)
    except (ValueError, OSError, TriptychError, MissingExtraError) as err:
        return fail(prog, err)
    if args.format == "json":
        print(json.dumps([hit.__dict__ for hit in hits], indent=1))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>3}  {hit.score:.4f}  {hit.key}")
    return 0
