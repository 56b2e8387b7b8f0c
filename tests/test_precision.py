"""Reduced precision end to end: bf16 on CPU here, fp16 on CUDA where a GPU is present. Every part must give
finite outputs that agree with fp32."""

from __future__ import annotations

import pytest
import torch

from tests.hf_models import make_kandinsky_decoder_repo, make_kandinsky_prior_repo
from triptych import diffusion
from triptych.apps.serve.service import Service
from triptych.world import render, sample_scene

LABELS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a purple cross"]


def check_against_fp32(low: Service, full: Service) -> None:
    scenes = [render(sample_scene(900 + i)) for i in range(8)]
    p_low, p_full = low.encoder.classify(scenes, LABELS), full.encoder.classify(scenes, LABELS)
    assert torch.isfinite(p_low).all()
    assert (p_low.cpu() - p_full).abs().max() < 0.05
    captions_low, captions_full = low.captioner.caption(scenes), full.captioner.caption(scenes)
    assert sum(a == b for a, b in zip(captions_low, captions_full)) >= 7
    pixels = low.generator.generate("a red circle", steps=8, prior_steps=8, output_type="pt", progress=False)
    assert pixels.dtype == torch.float32 and torch.isfinite(pixels).all() and pixels.std() > 0.05


def test_bf16_on_cpu_agrees_with_fp32(service):
    low = Service.load("shapes", device="cpu", dtype="bf16")
    assert low.encoder.dtype == low.generator.decoder.unet.dtype == torch.bfloat16
    assert next(low.captioner.vlm.parameters()).dtype == torch.bfloat16
    check_against_fp32(low, service)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked on the lent GPU)")
def test_fp16_on_cuda_agrees_with_fp32(service):
    low = Service.load("shapes")
    assert low.device.type == "cuda" and low.dtype == torch.float16
    check_against_fp32(low, service)


def test_kandinsky_layout_in_bf16_stays_close(tmp_path):
    make_kandinsky_prior_repo(tmp_path / "prior")
    make_kandinsky_decoder_repo(tmp_path / "decoder")
    settings = dict(seed=2, steps=4, prior_steps=4, output_type="pt", progress=False)
    full = diffusion.load(str(tmp_path), device="cpu").generate("a red circle", **settings)
    low_gen = diffusion.load(str(tmp_path), device="cpu", dtype="bf16")
    assert low_gen.encoder.dtype == low_gen.prior.prior.dtype == torch.bfloat16
    low = low_gen.generate("a red circle", **settings)
    assert torch.isfinite(low).all()
    assert (low - full).abs().mean() < 0.05


# ---------------------------------------------------------------------- model offload
def _trace_uses(service: Service) -> list[str]:
    """Record every model the placement switches to (consecutive repeats folded)."""
    placement, seen = service.encoder.placement, []
    original = placement.use

    def use(name: str) -> None:
        if not seen or seen[-1] != name:
            seen.append(name)
        original(name)

    placement.use = use
    return seen


def test_offload_brings_each_model_in_turn_and_changes_no_output(service):
    off = Service.load("shapes", device="cpu", offload=True)
    assert off.captioner.encoder.placement is off.encoder.placement is off.generator.encoder.placement
    assert set(off.encoder.placement.models) == {"encoder", "vlm", "prior", "unet", "movq"}
    assert "offloaded; runs on cpu" in off.about()
    seen = _trace_uses(off)
    scenes = [render(sample_scene(950 + i)) for i in range(3)]
    assert off.captioner.caption(scenes) == service.captioner.caption(scenes)
    assert seen[-2:] == ["encoder", "vlm"]
    seen.clear()
    settings = dict(seed=4, steps=4, prior_steps=4, output_type="pt", progress=False)
    assert torch.equal(
        off.generator.generate("a red circle", **settings), service.generator.generate("a red circle", **settings)
    )
    assert seen == ["encoder", "prior", "unet", "movq"]
    seen.clear()
    assert torch.equal(off.encoder.classify(scenes, LABELS), service.encoder.classify(scenes, LABELS))
    assert seen == ["encoder"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked on the lent GPU)")
def test_offload_on_cuda_keeps_one_model_on_the_gpu():
    full = Service.load("shapes")
    settings = dict(seed=4, steps=4, prior_steps=4, output_type="pt", progress=False)
    expected = full.generator.generate("a red circle", **settings)
    del full
    torch.cuda.empty_cache()
    off = Service.load("shapes", offload=True)
    assert torch.cuda.memory_allocated() < 2**20  # nothing resident before the first call
    got = off.generator.generate("a red circle", **settings)
    assert (got - expected).abs().max() < 1e-2
    on_gpu = [name for name, model in off.encoder.placement.models.items() if next(model.parameters()).is_cuda]
    assert on_gpu == ["movq"]  # the last model used; every other waits on the CPU
