"""Running a batch job: list the inputs, skip what the output already holds, then decode and infer batch by
batch — in this process (the model loaded once), or on a Ray cluster with Ray Data (decoding in stateless read
tasks, inference in actors that each load the model once, sized by CPUs/GPUs per worker) — writing shards as
results arrive. Both paths call the same `decode_items` and `Worker`, so they give the same rows."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from triptych.core.extras import require

from .jobs import JobSpec, Worker, decode_items
from .output import ShardWriter
from .sources import Item, list_items


@dataclass(frozen=True)
class Placement:
    """Where the job runs: locally (`ray` False) or on Ray at `address` (None: start or join a local instance)."""

    ray: bool = False
    address: str | None = None
    workers: int = 1  # inference actors under Ray
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass(frozen=True)
class Summary:
    rows: int  # written by this run
    skipped: int  # already in the output (resumed)
    errors: int  # rows whose image could not be read
    seconds: float

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.rows} rows written ({self.errors} with errors), {self.skipped} already done, "
            f"{self.seconds:.1f} s, {rate:.1f} rows/s"
        )


def run_job(
    spec: JobSpec,
    inputs: list[str],
    out: str | Path,
    placement: Placement = Placement(),
    batch_size: int = 32,
    shard_rows: int = 1000,
    sidecars: bool = False,
    progress: bool = True,
) -> Summary:
    """Run `spec` over every image of `inputs` into the Parquet folder `out` (see output.py), resuming it."""
    start = time.perf_counter()
    items = list_items(inputs, spec.image_column)
    info = {"job": spec.job, "model": spec.model, "encoder": spec.encoder}
    writer = ShardWriter(out, info, shard_rows)
    todo = [item for item in items if item.key not in writer.done]
    files = {item.key: Path(item.path) for item in todo if item.member is None and item.row is None}
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"batch {spec.job}", disable=not progress)
    run_on_ray = placement.ray
    tables = _on_ray(spec, todo, placement, batch_size, progress) if run_on_ray else _locally(spec, todo, batch_size)
    for table in tables:
        kept = writer.add(table)
        bar.update(kept)
        if sidecars:
            _write_sidecars(table, files)
    writer.close()
    bar.close()
    return Summary(writer.written, len(items) - len(todo), writer.errors, time.perf_counter() - start)


def _columns(items: list[Item]) -> dict[str, np.ndarray]:
    rows = [item.as_dict() for item in items]
    return {name: np.asarray([r[name] for r in rows], dtype=object) for name in ("key", "path", "member", "row")}


def _locally(spec: JobSpec, items: list[Item], batch_size: int):
    if not items:
        return
    worker = Worker(spec)
    for i in range(0, len(items), batch_size):
        yield worker(decode_items(_columns(items[i : i + batch_size]), spec.image_column))


def _on_ray(spec: JobSpec, items: list[Item], placement: Placement, batch_size: int, progress: bool):
    require("ray", "distributed", "--ray")
    import ray

    if not items:
        return
    if not ray.is_initialized():
        ray.init(address=placement.address, ignore_reinit_error=True, log_to_driver=False)
    check_room(placement, ray.cluster_resources())
    ray.data.DataContext.get_current().enable_progress_bars = progress  # ours counts rows either way
    dataset = ray.data.from_items([item.as_dict() for item in items])
    decoded = dataset.map_batches(
        decode_items, fn_kwargs={"image_column": spec.image_column}, batch_size=batch_size, batch_format="numpy"
    )
    results = decoded.map_batches(
        Worker,
        fn_constructor_args=(spec,),
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=placement.workers,
        num_cpus=placement.cpus_per_worker,
        num_gpus=placement.gpus_per_worker,
        max_restarts=-1,  # a lost actor is replaced and its batch retried (the writer drops repeats)
        max_task_retries=-1,
    )
    yield from results.iter_batches(batch_format="pyarrow", batch_size=None)


def check_room(placement: Placement, resources: dict[str, float]) -> None:
    """Refuse, rather than wait forever, a job whose actors would take every CPU (the decoding tasks need one
    each and would never be scheduled) or more GPUs than the cluster has. Judged on the cluster as it is now
    (an autoscaling cluster that would grow is refused too: ask for what it holds)."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    actor_cpus = placement.workers * placement.cpus_per_worker
    actor_gpus = placement.workers * placement.gpus_per_worker
    if actor_gpus > gpus:
        raise ValueError(
            f"{placement.workers} workers x {placement.gpus_per_worker} GPUs need {actor_gpus:g} GPUs; the Ray "
            f"cluster has {gpus:g}: lower --workers or --num-gpus-per-worker"
        )
    if cpus - actor_cpus < 1:
        raise ValueError(
            f"{placement.workers} workers x {placement.cpus_per_worker:g} CPUs take {actor_cpus:g} of the Ray "
            f"cluster's {cpus:g} CPUs and leave none for decoding images: lower --workers or "
            f"--num-cpus-per-worker (fractions such as 0.5 are fine)"
        )


def _write_sidecars(table, files: dict[str, Path]) -> None:
    """`name.txt` beside each image file that got a result (the captions layout the trainers read)."""
    for key, result in zip(table.column("key").to_pylist(), table.column("result").to_pylist()):
        if result is not None and key in files:
            files[key].with_suffix(".txt").write_text(result + "\n", encoding="utf-8")
