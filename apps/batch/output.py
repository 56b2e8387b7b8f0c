"""A batch job's output folder: Parquet shards (`part-00000.parquet`, ...) written as the job goes, each whole
(a temp file renamed into place, so an interrupted run leaves only complete shards), and the resume rule: a key
already in a shard is never computed or written again, so every input row appears exactly once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .jobs import SCHEMA

SHARD = "part-{:05d}.parquet"
META_KEY = b"triptych"  # schema metadata: the job and model that wrote the rows (search reads the model)


def shard_paths(out: str | Path) -> list[Path]:
    return sorted(Path(out).glob("part-*.parquet"))


def read_rows(out: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Every row of a job's output folder (or one shard file), as one table."""
    path = Path(out)
    files = [path] if path.is_file() else shard_paths(path)
    if not files:
        raise ValueError(f"{path}: no part-*.parquet shards (is it a `triptych batch` output folder?)")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def job_info(out: str | Path) -> dict:
    """The job and model recorded in the output's first shard."""
    path = Path(out)
    first = path if path.is_file() else shard_paths(path)[0]
    meta = pq.read_schema(first).metadata or {}
    return json.loads(meta.get(META_KEY, b"{}"))


class ShardWriter:
    """Buffers result tables and writes a shard every `shard_rows` rows (and at `close`). `done` holds the keys
    already written, by this run or an earlier one; a row whose key is done is dropped (a retried Ray task may
    deliver a batch twice)."""

    def __init__(self, out: str | Path, info: dict, shard_rows: int = 1000) -> None:
        self.out, self.shard_rows = Path(out), shard_rows
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob("*.parquet.tmp"):  # a shard an interrupted run did not finish
            stale.unlink()
        existing = shard_paths(self.out)
        if existing:
            recorded = job_info(self.out)
            if recorded and (recorded.get("job"), recorded.get("model")) != (info.get("job"), info.get("model")):
                raise ValueError(
                    f"{self.out} holds a {recorded.get('job')} job on {recorded.get('model')!r}; resume it with the "
                    f"same job and model, or write to another folder"
                )
        self.done: set[str] = set(read_rows(self.out, ["key"]).column("key").to_pylist()) if existing else set()
        self.next_index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self.schema = SCHEMA.with_metadata({META_KEY: json.dumps(info).encode()})
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.written = self.errors = 0

    def add(self, table: pa.Table) -> int:
        """Queue the rows whose keys are new; returns how many were kept."""
        keys = table.column("key").to_pylist()
        keep = [i for i, key in enumerate(keys) if key not in self.done]
        if len(keep) < len(keys):
            table = table.take(keep)
        self.done.update(table.column("key").to_pylist())
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.errors += table.num_rows - table.column("error").null_count
        while self.pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)
        return table.num_rows

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending).cast(self.schema)
        shard, rest = table.slice(0, rows), table.slice(rows)
        path = self.out / SHARD.format(self.next_index)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(shard, tmp)
        os.replace(tmp, path)  # whole or absent
        self.next_index += 1
        self.written += shard.num_rows
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows
