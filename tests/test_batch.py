"""Batch jobs over datasets on the bundled models: every input form, one row per image exactly once (bad images
as error rows), resume without duplicates, sidecar captions a trainer reads, and search over embeddings. The Ray
runs (a real two-node local cluster) are in test_batch_ray.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from triptych.apps.batch import jobs as jobs_module
from triptych.apps.batch.jobs import JobSpec
from triptych.apps.batch.main import main as batch_main
from triptych.apps.batch.output import read_rows
from triptych.apps.batch.runner import run_job
from triptych.apps.batch.search import EmbeddingIndex
from triptych.apps.batch.search import main as search_main
from triptych.world import caption, render, sample_scene


def png(seed: int) -> bytes:
    out = io.BytesIO()
    render(sample_scene(seed)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    """A folder (nested, one corrupt file), a path list, a WebDataset shard and a Parquet file: 16 images."""
    root = tmp_path_factory.mktemp("data")
    (root / "photos/sub").mkdir(parents=True)
    for i in range(4):
        (root / "photos" / ("sub" if i % 2 else "") / f"p{i}.png").write_bytes(png(i))
    (root / "photos/broken.png").write_bytes(b"\x89PNG not really")
    listed = root / "listed"
    listed.mkdir()
    for i in range(4, 7):
        (listed / f"l{i}.png").write_bytes(png(i))
    (root / "list.txt").write_text("\n".join(str(p) for p in sorted(listed.iterdir())) + "\n")
    with tarfile.open(root / "shard-000.tar", "w") as tar:
        for i in range(7, 11):
            for name, data in ((f"s{i}.png", png(i)), (f"s{i}.txt", caption(sample_scene(i)).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    table = pa.table({"__key__": [f"row{i}" for i in range(11, 15)], "image": [png(i) for i in range(11, 15)]})
    pq.write_table(table, root / "images.parquet")
    inputs = [str(root / "photos"), str(root / "list.txt"), str(root / "shard-*.tar"), str(root / "images.parquet")]
    return root, inputs


def test_every_input_form_gives_one_row_per_image(dataset, tmp_path):
    root, inputs = dataset
    summary = run_job(JobSpec("caption"), inputs, tmp_path / "out", progress=False)
    rows = read_rows(tmp_path / "out").to_pylist()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 16 == summary.rows  # 5 in the folder, 3 listed, 4 in the tar, 4 Parquet
    assert summary.errors == 1
    by_key = {r["key"]: r for r in rows}
    broken = by_key[str(root / "photos/broken.png")]
    assert broken["result"] is None and "not a readable image" in broken["error"]
    assert by_key[f"{root}/shard-000.tar/s8"]["result"] == caption(sample_scene(8))  # the bundled VLM reads it
    assert by_key[f"{root}/images.parquet/row12"]["result"] == caption(sample_scene(12))
    assert by_key[str(root / "listed/l5.png")]["result"] == caption(sample_scene(5))


def test_resume_after_an_interruption_writes_no_duplicates(dataset, tmp_path, monkeypatch):
    _, inputs = dataset
    calls = {"n": 0}
    original = jobs_module.Worker.__call__

    def dies_on_the_third_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the job is killed mid-run
        return original(self, batch)

    monkeypatch.setattr(jobs_module.Worker, "__call__", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_job(JobSpec("embed"), inputs, tmp_path / "out", batch_size=3, shard_rows=2, progress=False)
    first = read_rows(tmp_path / "out").num_rows
    assert first == 6  # two batches of 3 made it, in whole shards of 2
    monkeypatch.setattr(jobs_module.Worker, "__call__", original)
    summary = run_job(JobSpec("embed"), inputs, tmp_path / "out", batch_size=3, shard_rows=2, progress=False)
    keys = read_rows(tmp_path / "out").column("key").to_pylist()
    assert summary.skipped == 6 and summary.rows == 10 and len(keys) == len(set(keys)) == 16
    again = run_job(JobSpec("embed"), inputs, tmp_path / "out", progress=False)  # nothing left: nothing written
    assert again.rows == 0 and read_rows(tmp_path / "out").num_rows == 16
    with pytest.raises(ValueError, match="resume it with the same job"):
        run_job(JobSpec("caption"), inputs, tmp_path / "out", progress=False)


def test_classify_and_ask(dataset, tmp_path):
    root, _ = dataset
    labels = ("one object", "two objects", "three objects")
    run_job(JobSpec("classify", labels=labels), [str(root / "listed")], tmp_path / "cls", progress=False)
    rows = read_rows(tmp_path / "cls").to_pylist()
    truth = {str(root / f"listed/l{i}.png"): labels[len(sample_scene(i).objects) - 1] for i in range(4, 7)}
    assert {r["key"]: r["result"] for r in rows} == truth and all(0.5 < r["score"] <= 1 for r in rows)
    spec = JobSpec("ask", question="how many objects are there?")
    run_job(spec, [str(root / "listed")], tmp_path / "ask", progress=False)
    answers = {r["key"]: r["result"] for r in read_rows(tmp_path / "ask").to_pylist()}
    assert answers == {k: v.split()[0] for k, v in truth.items()}


def test_sidecar_captions_feed_the_vlm_trainer(tmp_path):
    from tests.test_vlm import RECIPE
    from tests.tiny_models import make_tiny_encoder_dir
    from triptych.vlm.train import train

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.png").write_bytes(png(100 + i))
    assert batch_main(["caption", str(photos), "--out", str(tmp_path / "captions"), "--sidecars", "--no-progress"]) == 0
    assert (photos / "p3.txt").read_text().strip() == caption(sample_scene(103))
    recipe = {**RECIPE, "encoder": str(make_tiny_encoder_dir(tmp_path / "enc"))}
    info = train(recipe, tmp_path / "vlm", tmp_path / "work", workers=0, data=str(photos))
    assert info["data"] == str(photos) and (tmp_path / "vlm/model.safetensors").is_file()


def test_search_finds_the_image_a_text_or_an_image_describes(dataset, tmp_path, capsys):
    root, inputs = dataset
    run_job(JobSpec("embed"), inputs, tmp_path / "emb", progress=False)
    index = EmbeddingIndex.load(tmp_path / "emb")
    assert index.vectors.shape == (15, 128)  # the broken image has no embedding
    target = str(root / "listed/l6.png")
    assert search_main([str(tmp_path / "emb"), "--image", target, "--top-k", "3", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["key"] == target and hits[0]["score"] > 0.999 and len(hits) == 3
    assert search_main([str(tmp_path / "emb"), caption(sample_scene(6)), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.split()[-1] == target
    assert search_main([str(tmp_path / "emb")]) == 2  # neither text nor image
    assert search_main([str(root / "nowhere")]) == 2


def test_search_top_k_is_exact_across_chunks(monkeypatch):
    import numpy as np

    from triptych.apps.batch import search

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 16)).astype(np.float32)
    query = rng.standard_normal(16).astype(np.float32)
    monkeypatch.setattr(search, "CHUNK_ROWS", 64)  # many chunks, a top-k spread over them
    hits = EmbeddingIndex(vectors, [str(i) for i in range(1000)], [""] * 1000).search(query, 25)
    expected = np.argsort(-(vectors @ query))[:25]
    assert [int(h.key) for h in hits] == expected.tolist()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["classify", "x", "--out", "o"], "at least two labels"),
        (["ask", "x", "--out", "o"], "question"),
        (["embed", "nowhere/", "--out", "o"], "no such file"),
        (["embed", "x", "--out", "o", "--batch-size", "0"], "must be positive"),
        (["embed", "x", "--out", "o", "--sidecars"], "--sidecars"),
        (["embed", "x.png", "x.png", "--out", "o"], "twice"),
    ],
)
def test_bad_usage_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")  # an input named twice is refused before it is read
    assert batch_main(argv) == 2
    assert message in capsys.readouterr().err


def test_ray_without_the_extra_names_it(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None; from triptych.apps.batch.main import main; "
        f"sys.exit(main(['embed', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}, '--ray']))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "pip install 'triptych[distributed]'" in run.stderr, run.stderr[-400:]
