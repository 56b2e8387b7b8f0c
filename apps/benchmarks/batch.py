"""Batch captioning throughput: `triptych batch caption` locally and on Ray (1 and 2 inference actors) against
today's `triptych-caption` on the same folder, in one run. Every row is wall time for the whole job, model
loading included (what a user waits for); Ray's rows include starting its actors."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from triptych.world import render, sample_scene


def benchmark_batch(count: int, batch_size: int, model: str, ray_address: str | None) -> list[tuple[str, str]]:
    from triptych.apps.batch.jobs import JobSpec
    from triptych.apps.batch.runner import Placement, run_job
    from triptych.apps.cli.caption import main as caption_main
    from triptych.core.extras import require

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(count):
            render(sample_scene(10_000 + i)).save(folder / f"p{i:05d}.png")
        rows = [("images / batch size / model", f"{count} / {batch_size} / {model}")]
        timings: dict[str, float] = {}

        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            caption_main([str(folder), "--model", model, "--batch-size", str(batch_size), "--format", "json"])
        timings["triptych-caption (today's script)"] = time.perf_counter() - start
        spec = JobSpec("caption", model)
        start = time.perf_counter()
        run_job(spec, [str(folder)], Path(tmp) / "local", batch_size=batch_size, progress=False)
        timings["triptych batch caption (local)"] = time.perf_counter() - start
        require("ray", "distributed", "the Ray rows")
        import ray

        # Ray is left to shut down at exit: an explicit ray.shutdown() here aborted the process on this machine
        # (a Ray check failure, "RpcError CANCELLED" in GetDrainingNodes) before the table was printed
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 1.0)
        for workers in (1, 2):
            # one CPU stays free for the decoding tasks (on a two-core machine: 1 x 1 CPU, then 2 x 0.5)
            share = min(1.0, (cpus - 1) / workers)
            start = time.perf_counter()
            placement = Placement(ray=True, address=ray_address, workers=workers, cpus_per_worker=share)
            run_job(spec, [str(folder)], Path(tmp) / f"ray{workers}", placement, batch_size, progress=False)
            timings[f"triptych batch caption --ray, {workers} worker{'s' * (workers > 1)}"] = (
                time.perf_counter() - start
            )
    for name, seconds in timings.items():
        rows.append((name, f"{count / seconds:,.1f} rows/s ({seconds:.1f} s)"))
    local = timings["triptych batch caption (local)"]
    one, two = (timings[f"triptych batch caption --ray, {n} worker{'s' * (n > 1)}"] for n in (1, 2))
    rows.append(("Ray's overhead on one machine (1 worker vs local)", f"{one - local:+.1f} s ({one / local:.2f}x)"))
    rows.append(("per-worker throughput, 2 workers vs 1", f"{(count / two / 2) / (count / one):.2f}x"))
    return rows
