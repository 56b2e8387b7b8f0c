"""Batch jobs on a real two-node Ray cluster started here on 127.0.0.1: the same rows as the local run, every
row exactly once when an inference actor is killed mid-job, and resume after an interrupted run."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray  # the [distributed] extra, which `make` and CI install (dev)
from ray.cluster_utils import Cluster

from triptych.apps.batch import output as output_module
from triptych.apps.batch.jobs import JobSpec
from triptych.apps.batch.output import read_rows
from triptych.apps.batch.runner import Placement, run_job
from triptych.world import render, sample_scene

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, two logical CPUs each, on this machine."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(15):
        out = io.BytesIO()
        render(sample_scene(300 + i)).save(out, format="PNG")
        (folder / f"p{i:02d}.png").write_bytes(out.getvalue())
    (folder / "broken.png").write_bytes(b"GIF89a broken")
    return folder


def rows_of(folder) -> list[tuple]:
    table = read_rows(folder).sort_by("key")
    return list(zip(*(table.column(c).to_pylist() for c in ("key", "path", "result", "error"))))


def test_ray_gives_the_local_rows(cluster, photos, tmp_path):
    spec = JobSpec("caption")
    run_job(spec, [str(photos)], tmp_path / "local", progress=False)
    summary = run_job(
        spec, [str(photos)], tmp_path / "ray", Placement(ray=True, workers=2), batch_size=8, progress=False
    )
    assert summary.rows == 16 and summary.errors == 1
    assert rows_of(tmp_path / "ray") == rows_of(tmp_path / "local")
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2


def inference_actor_pids() -> list[int]:
    """Processes of Ray Data's inference actors, by the title Ray gives them (ray::MapWorker(MapBatches(Worker)))."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if proc.name.isdigit() and b"ray::MapWorker" in title and b"Worker)" in title:
            pids.append(int(proc.name))
    return pids


def test_a_killed_actor_loses_and_repeats_no_row(cluster, photos, tmp_path):
    killed: list[int] = []

    def kill_one_actor_once_rows_arrive() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if list((tmp_path / "out").glob("part-*.parquet")):
                for pid in inference_actor_pids()[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_once_rows_arrive)
    killer.start()
    placement = Placement(ray=True, workers=2)
    run_job(JobSpec("embed"), [str(photos)], tmp_path / "out", placement, batch_size=2, shard_rows=2, progress=False)
    killer.join()
    assert killed, "no actor was alive to kill while the job ran"
    keys = read_rows(tmp_path / "out").column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 16  # every row, once


def test_resume_after_an_interrupted_ray_run(cluster, photos, tmp_path, monkeypatch):
    original = output_module.ShardWriter.add
    calls = {"n": 0}

    def interrupted(self, table):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the driver stops mid-job
        return original(self, table)

    monkeypatch.setattr(output_module.ShardWriter, "add", interrupted)
    placement = Placement(ray=True, workers=2)
    with pytest.raises(KeyboardInterrupt):
        run_job(
            JobSpec("embed"), [str(photos)], tmp_path / "out", placement, batch_size=4, shard_rows=4, progress=False
        )
    before = read_rows(tmp_path / "out").num_rows
    assert 0 < before < 16
    monkeypatch.setattr(output_module.ShardWriter, "add", original)
    summary = run_job(JobSpec("embed"), [str(photos)], tmp_path / "out", placement, batch_size=4, progress=False)
    keys = read_rows(tmp_path / "out").column("key").to_pylist()
    assert summary.skipped == before and len(keys) == len(set(keys)) == 16


def test_actors_that_would_take_every_cpu_are_refused_not_left_waiting(cluster, photos, tmp_path):
    """Four one-CPU actors on this four-CPU cluster leave no CPU for the decoding tasks: Ray would wait forever
    (found on a two-core machine with two workers); the job is refused at once, naming the way out."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="leave none for decoding.*--num-cpus-per-worker"):
        run_job(JobSpec("caption"), [str(photos)], tmp_path / "out", Placement(ray=True, workers=4), progress=False)
    with pytest.raises(ValueError, match="need 2 GPUs; the Ray cluster has 0"):
        placement = Placement(ray=True, workers=2, gpus_per_worker=1.0)
        run_job(JobSpec("caption"), [str(photos)], tmp_path / "out", placement, progress=False)
    assert time.perf_counter() - start < 30
