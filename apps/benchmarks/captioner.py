"""VLM decoding speed: our KV-cache loop (eager and compiled) against transformers' generate and a no-cache
loop, on the same weights."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace

import torch
from transformers import CompileConfig, LlamaForCausalLM

from triptych import clip, vlm
from triptych.vlm.generate import GenerationConfig, Generator
from triptych.world import render, sample_scene

from .timing import timed


def benchmark_vlm(
    model: str,
    encoder: str | None,
    batch_sizes: tuple[int, ...],
    new_tokens: int,
    repeats: int,
    device: str | None,
    dtype: str | None,
    compile: bool = True,
) -> list[tuple[str, str]]:
    """Our generation vs transformers' LlamaForCausalLM.generate on the same decoder weights and prefixes;
    ours with vs without the KV cache; and (`compile`) ours with the torch.compile'd static-shape step. Every
    run decodes exactly `new_tokens` tokens (EOS ignored)."""
    enc = clip.load(encoder, device=device, dtype=dtype) if encoder else None
    captioner = vlm.load(model, encoder=enc, device=device, dtype=dtype)
    dev, dt = captioner.encoder.device, next(captioner.vlm.parameters()).dtype
    with tempfile.TemporaryDirectory() as tmp:
        captioner.vlm.decoder.save_pretrained(tmp)
        hf = LlamaForCausalLM.from_pretrained(tmp, dtype=dt).to(dev).eval()
    images = [render(sample_scene(i)) for i in range(max(batch_sizes))]
    prompt = captioner.vlm.config.caption_prompt
    rows = [
        ("model / device / dtype", f"{model} / {dev} / {str(dt).split('.')[-1]}"),
        ("new tokens per caption", str(new_tokens)),
        (
            "attention (like for like?)",
            "ours prefix-LM over image+prompt, transformers causal: same work per decoded token (one query over "
            "the cache), so tok/s compare; first-token times include each one's own prefill",
        ),
    ]
    codec = captioner.codec
    compiled = Generator(captioner.vlm.decoder, codec.eos_id, codec.decode, compiled=True) if compile else None
    for bs in batch_sizes:
        embeds, valid = captioner._prefixes(images[:bs], [prompt] * bs, new_tokens)
        runs = _vlm_runs(captioner.generator, hf, embeds, valid, new_tokens, compiled)
        with torch.inference_mode():
            for name, (generate, _) in runs.items():
                start = time.perf_counter()
                generate()  # warm-up (for the compiled step: compiling it)
                if "compiled" in name:
                    rows.append((f"batch {bs}: {name}: compile time", f"{time.perf_counter() - start:.1f} s"))
            # round-robin, one call of each per round: a shared machine's drifting speed hits every row alike
            times: dict[str, list[float]] = {name: [] for name in runs}
            firsts: dict[str, list[float]] = {name: [] for name, (_, first) in runs.items() if first}
            for _ in range(repeats):
                for name, (generate, first) in runs.items():
                    times[name] += timed(generate, 1, dev)
                    if first:
                        firsts[name] += timed(first, 1, dev)
        for name in runs:
            t = statistics.median(times[name])
            ttft = f", first token {statistics.median(firsts[name]) * 1000:.1f} ms" if name in firsts else ""
            rows.append((f"batch {bs}: {name}", f"{bs * new_tokens / t:,.0f} tok/s, {bs / t:,.1f} captions/s{ttft}"))
    return rows


def _vlm_runs(generator, hf, embeds: torch.Tensor, valid: torch.Tensor, n: int, compiled=None) -> dict:
    """name -> (decode n tokens, decode the first token only or None) for one batch of prefixes; `compiled`, a
    Generator with the torch.compile'd step, adds its row and transformers' best: a static cache with
    torch.compile forced through its CompileConfig (it compiles only on accelerators by default)."""
    full = GenerationConfig(max_new_tokens=n, ignore_eos=True)
    mask = valid.long()

    forced = CompileConfig()
    forced._compile_all_devices = True  # transformers compiles only on accelerators unless told so (its test hook)

    def hf_generate(tokens: int, **cache):
        return hf.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            **cache,
        )

    static = {"cache_implementation": "static"}
    compiled_static = {**static, "compile_config": forced}

    runs = {
        "triptych (KV cache)": (
            lambda: generator.generate(embeds, valid, full),
            lambda: generator.generate(embeds, valid, GenerationConfig(1)),
        ),
        "triptych (no cache)": (lambda: generator.generate(embeds, valid, replace(full, use_cache=False)), None),
        "transformers generate (dynamic cache)": (lambda: hf_generate(n), lambda: hf_generate(1)),
        "transformers generate (static cache)": (lambda: hf_generate(n, **static), None),
    }
    if compiled is not None:  # both compiled rows, or neither (compiling takes a while)
        runs["transformers generate (static cache, compiled)"] = (lambda: hf_generate(n, **compiled_static), None)
        runs["triptych (KV cache, compiled)"] = (lambda: compiled.generate(embeds, valid, full), None)
    return runs
