"""Memory benchmark: the app with every capability in one process (one shared encoder) against three separate
apps that each load their own encoder — the way a user stitching three tools together would run them.

Each configuration runs in a fresh child process that builds the Gradio app, runs one request per capability it
has, and reports its peak resident memory (and peak CUDA memory on a GPU).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from triptych.apps.serve.app import build_app
from triptych.apps.serve.service import Service
from triptych.world import render, sample_scene

CONFIGS: dict[str, tuple[str, ...]] = {
    "one app, all three": ("classify", "caption", "generate"),
    "classify app": ("classify",),
    "caption app": ("classify", "caption"),  # every app has the encoder; this one adds the VLM
    "generate app": ("classify", "generate"),
}


def child(capabilities: tuple[str, ...], preset: str, device: str | None, dtype: str | None) -> dict:
    """Load, build the app, exercise each capability once; peak memory in MiB."""
    service = Service.load(preset, device=device, dtype=dtype, capabilities=capabilities)
    build_app(service)
    image = render(sample_scene(0))
    service.encoder.classify(image, ["a red circle", "a blue square"])
    if service.captioner is not None:
        service.captioner.caption(image)
    if service.generator is not None:
        service.generator.generate("a red circle", steps=10, prior_steps=10, progress=False)
    report = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if service.device.type == "cuda":
        report["cuda_mib"] = torch.cuda.max_memory_allocated(service.device) / 2**20
    return report


def benchmark_memory(preset: str, device: str | None, dtype: str | None) -> list[tuple[str, str]]:
    """Rows of (configuration, peak memory); the separate apps' sum against the one app."""
    reports = {}
    for name, capabilities in CONFIGS.items():
        command = [
            sys.executable,
            "-m",
            "triptych.apps.benchmarks.memory",
            preset,
            device or "",
            dtype or "",
            *capabilities,
        ]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        reports[name] = json.loads(out.strip().splitlines()[-1])
    keys = ["rss_mib"] + (["cuda_mib"] if "cuda_mib" in reports["one app, all three"] else [])
    rows = []
    for key in keys:
        what = "peak RSS" if key == "rss_mib" else "peak CUDA memory"
        separate = [reports[name][key] for name in CONFIGS if name != "one app, all three"]
        one = reports["one app, all three"][key]
        rows += [(f"{what}: {name}", f"{reports[name][key]:,.0f} MiB") for name in CONFIGS]
        rows.append((f"{what}: three separate apps, summed", f"{sum(separate):,.0f} MiB"))
        rows.append((f"{what}: one app / three apps", f"{one / sum(separate):.2f}x"))
    return rows


if __name__ == "__main__":  # the child process: preset device dtype capability...
    preset, device, dtype, *caps = sys.argv[1:]
    print(json.dumps(child(tuple(caps), preset, device or None, dtype or None)))
