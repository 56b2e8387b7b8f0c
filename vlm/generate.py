"""Text generation over a prefix of embeddings ([image | prompt]) with a preallocated KV cache.

Greedy, temperature/top-k/top-p sampling and beam search; stops on EOS, stop strings or max_new_tokens.
Batches are left-padded: positions count real tokens only and padding is masked, so a row decodes exactly as
it would alone. `stream` yields text pieces as they are decoded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace

import torch

from triptych.core.checks import check_int, check_real, check_seed
from triptych.core.errors import InvalidSettingError

from .compiled_step import CompiledStep, bucketed
from .decoder import Decoder
from .masks import positions_from_valid, prefix_lm_mask

MAX_NEW_TOKENS_LIMIT = 1024
MAX_BEAMS = 32  # each beam holds a KV cache of its own
MAX_TOP_K = 1 << 31


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. temperature 0 means greedy; num_beams > 1 means beam search (deterministic)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    stop_strings: str | tuple[str, ...] = ()  # one string is one stop string, as in transformers' generate
    seed: int | None = None
    use_cache: bool = True  # False recomputes the whole sequence every step (for benchmarks)
    ignore_eos: bool = False  # always generate max_new_tokens (for benchmarks)

    @classmethod
    def from_kwargs(cls, **settings: object) -> GenerationConfig:
        """A checked config from keyword settings; an unknown name is an InvalidSettingError listing the known."""
        known = {f.name for f in fields(cls)}
        unknown = set(settings) - known
        if unknown:
            raise InvalidSettingError(f"unknown generation settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**settings).checked()

    def checked(self) -> GenerationConfig:
        """Validated copy (numbers as int / float, stop strings as a tuple); InvalidSettingError naming the bad
        setting."""
        for name in ("use_cache", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidSettingError(f"{name} must be True or False, got {getattr(self, name)!r}")
        cfg = replace(
            self,
            max_new_tokens=check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT),
            temperature=check_real("temperature", self.temperature, 0.0, math.inf),
            top_k=check_int("top_k", self.top_k, 0, MAX_TOP_K),
            top_p=check_real("top_p", self.top_p, 0.0, 1.0),
            num_beams=check_int("num_beams", self.num_beams, 1, MAX_BEAMS),
            length_penalty=check_real("length_penalty", self.length_penalty, -math.inf, math.inf),
            stop_strings=_stop_strings(self.stop_strings),
            seed=None if self.seed is None else check_seed(self.seed),
        )
        if cfg.top_p == 0:
            raise InvalidSettingError("top_p must be above 0 (1 keeps every token)")
        if cfg.num_beams > 1 and cfg.temperature > 0:
            raise InvalidSettingError("beam search does not sample: with num_beams > 1, temperature must be 0")
        if cfg.num_beams > 1 and not cfg.use_cache:
            raise InvalidSettingError("beam search needs the KV cache (use_cache=True)")
        return cfg


def _stop_strings(stops: object) -> tuple[str, ...]:
    """A str is one stop string; a list gives several; empty strings are dropped (they would stop at once)."""
    if isinstance(stops, str):
        stops = (stops,)
    if isinstance(stops, (bytes, bytearray)) or not isinstance(stops, Iterable):
        raise InvalidSettingError(f"stop_strings must be a string or a list of strings, got {type(stops).__name__}")
    stops = tuple(stops)
    for i, stop in enumerate(stops):
        if not isinstance(stop, str):
            raise InvalidSettingError(f"stop_strings #{i} must be a string, got {type(stop).__name__}")
    return tuple(stop for stop in stops if stop)


def _pick(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class Generator:
    """Decodes continuations of embedded prefixes with one decoder. `decode` maps token ids to text."""

    def __init__(
        self,
        decoder: Decoder,
        eos_id: int,
        decode: Callable[[list[int]], str],
        compiled: bool = False,
        prefix: bool = True,
    ) -> None:
        """`compiled`: greedy and sampled steps run a torch.compile'd static-shape step (CompiledStep); the
        first call per (batch, cache length bucket) compiles it (tens of seconds on a CPU). `prefix`: the
        embedded prefix attends to itself whole (prefix-LM); False: causally (LLaVA)."""
        self.decoder, self.eos_id, self.decode, self.prefix = decoder, eos_id, decode, prefix
        self.compiled_step = CompiledStep(decoder) if compiled else None

    def _prefill(self, embeds: torch.Tensor, valid: torch.Tensor, max_new: int, length: int | None = None):
        b, p, _ = embeds.shape
        cache = self.decoder.new_cache(b, length or p + max_new, device=embeds.device, dtype=embeds.dtype)
        positions = positions_from_valid(valid)
        # prefix-LM: the whole prefix attends to itself, so without padding no mask is needed at all; causal:
        # the decoder's own causal mask, unless padding needs the full one
        mask = None if bool(valid.all()) else prefix_lm_mask(valid, self._prefix_lengths(b, p, valid.device))
        logits = self.decoder(
            inputs_embeds=embeds, positions=positions, mask=mask, cache=cache, last_only=True, causal=not self.prefix
        )
        return cache, logits[:, -1], positions[:, -1]

    def _prefix_lengths(self, b: int, p: int, device: torch.device) -> torch.Tensor:
        """(B,) the span that attends bidirectionally: the whole prefix, or nothing under causal attention."""
        return torch.full((b,), p if self.prefix else 0, device=device)

    def _step(
        self, tokens: torch.Tensor, cache, valid: torch.Tensor, prev_pos: torch.Tensor, start: int, unpadded: bool
    ):
        """Feed one token per row at cache slot `start`, RoPE position prev_pos + 1; valid (B, start + 1)."""
        embeds = self.decoder.model.embed_tokens(tokens[:, None])  # (B, 1, H)
        mask = None if unpadded else valid[:, None, None, :]  # (B, 1, 1, S): all real tokens so far
        return self.decoder(
            inputs_embeds=embeds, positions=(prev_pos + 1)[:, None], mask=mask, cache=cache, start=start, last_only=True
        )[:, -1]

    def _stopped(self, ids: list[int], cfg: GenerationConfig) -> tuple[bool, str]:
        text = self.decode(ids)
        for stop in cfg.stop_strings:
            at = text.find(stop)
            if at >= 0:
                return True, text[:at]
        return False, text

    @torch.inference_mode()
    def stream_ids(self, embeds: torch.Tensor, valid: torch.Tensor, cfg: GenerationConfig) -> Iterator[list[list[int]]]:
        """Yields, after every step, each row's tokens so far (EOS excluded); sampling or greedy."""
        cfg = cfg.checked()
        gen = None
        if cfg.seed is not None:
            gen = torch.Generator(device=embeds.device).manual_seed(cfg.seed)
        b, p, _ = embeds.shape
        unpadded = bool(valid.all())
        static = self.compiled_step is not None and cfg.use_cache
        length = bucketed(p + cfg.max_new_tokens) if static else None
        cache, logits, last_pos = self._prefill(embeds, valid, cfg.max_new_tokens, length)
        if static:  # (B, S): what each row may attend to in the whole preallocated cache
            allowed = torch.zeros(b, cache.max_len, dtype=torch.bool, device=valid.device)
            allowed[:, :p] = valid
            # the cache slot of step t: separate tensors, never views (a compiled graph may assume no offset)
            slots = [torch.tensor(p + t, device=valid.device) for t in range(cfg.max_new_tokens)]
        if not cfg.use_cache:
            cache, seq = None, embeds
        out: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        for t in range(cfg.max_new_tokens):
            tokens = _pick(logits, cfg, gen)
            for i, token in enumerate(tokens.tolist()):  # one device sync per step
                if done[i]:
                    continue
                if token == self.eos_id and not cfg.ignore_eos:
                    done[i] = True
                else:
                    out[i].append(token)
                    done[i] = bool(cfg.stop_strings) and self._stopped(out[i], cfg)[0]
            yield out
            if all(done) or t == cfg.max_new_tokens - 1:
                return
            if static:
                allowed[:, p + t] = True
                logits = self.compiled_step(tokens, last_pos + (t + 1), slots[t], allowed, cache.k, cache.v)
                continue
            valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=valid.device)], 1)
            if cache is None:  # recompute everything: [prefix | generated], prefix-LM mask
                seq = torch.cat([seq, self.decoder.model.embed_tokens(tokens[:, None])], 1)
                mask = prefix_lm_mask(valid, self._prefix_lengths(b, p, valid.device))
                logits = self.decoder(
                    inputs_embeds=seq, positions=positions_from_valid(valid), mask=mask, last_only=True
                )[:, -1]
            else:
                logits = self._step(tokens, cache, valid, last_pos + t, p + t, unpadded)

    def generate(self, embeds: torch.Tensor, valid: torch.Tensor, cfg: GenerationConfig) -> list[str]:
        """Texts for a left-padded batch of prefixes (B, P, H) with validity (B, P)."""
        cfg = cfg.checked()
        if cfg.num_beams > 1:
            return [self._beam(embeds[i : i + 1], valid[i : i + 1], cfg) for i in range(embeds.shape[0])]
        *_, final = self.stream_ids(embeds, valid, cfg)  # each row's tokens after the last step
        return [self._stopped(ids, cfg)[1] for ids in final]

    def stream_texts(self, embeds: torch.Tensor, valid: torch.Tensor, cfg: GenerationConfig) -> Iterator[list[str]]:
        """Each row's text so far (stop strings applied), after every step: several prefixes streamed at once."""
        cfg = cfg.checked()
        if cfg.num_beams > 1:
            raise InvalidSettingError("beam search cannot stream: its best sequence is known only at the end")
        for ids in self.stream_ids(embeds, valid, cfg):
            yield [self._stopped(row, cfg)[1] for row in ids]

    def stream(self, embeds: torch.Tensor, valid: torch.Tensor, cfg: GenerationConfig) -> Iterator[str]:
        """Text pieces of one prefix, as decoded."""
        cfg, shown = cfg.checked(), ""
        for ids in self.stream_ids(embeds[:1], valid[:1], cfg):
            text = self._stopped(ids[0], cfg)[1]
            if len(text) > len(shown) and text.startswith(shown):
                yield text[len(shown) :]
                shown = text

    @torch.inference_mode()
    def _beam(self, embeds: torch.Tensor, valid: torch.Tensor, cfg: GenerationConfig) -> str:
        """Beam search for one prefix; hypotheses ranked by log-probability / length^length_penalty."""
        k = cfg.num_beams
        embeds, valid = embeds.expand(k, -1, -1), valid.expand(k, -1)
        unpadded = bool(valid.all())
        _, p, _ = embeds.shape
        cache, logits, last_pos = self._prefill(embeds, valid, cfg.max_new_tokens)
        scores = torch.zeros(k, device=embeds.device)
        scores[1:] = -math.inf  # all beams start identical: expand from the first only
        beams: list[list[int]] = [[] for _ in range(k)]
        finished: list[tuple[float, list[int]]] = []
        for t in range(cfg.max_new_tokens):
            logp = logits.float().log_softmax(-1) + scores[:, None]  # (k, V)
            top = logp.view(-1).topk(2 * k)
            vocab = logits.shape[-1]
            next_beams, next_scores, rows, tokens = [], [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, token = divmod(flat, vocab)
                seq = beams[row] + ([] if token == self.eos_id else [token])
                stopped = token == self.eos_id or (cfg.stop_strings and self._stopped(seq, cfg)[0])
                if stopped:
                    finished.append((score / max(1, len(seq)) ** cfg.length_penalty, seq))
                elif len(next_beams) < k:
                    next_beams.append(seq)
                    next_scores.append(score)
                    rows.append(row)
                    tokens.append(token)
                if len(next_beams) == k:
                    break
            best_open = max(next_scores) / max(1, t + 1) ** cfg.length_penalty if next_scores else -math.inf
            if len(finished) >= k and max(f[0] for f in finished) >= best_open or not next_beams:
                break
            if t == cfg.max_new_tokens - 1:
                finished.extend((s / max(1, len(b)) ** cfg.length_penalty, b) for s, b in zip(next_scores, next_beams))
                break
            index = torch.tensor(rows, device=embeds.device)
            cache.reorder(index)
            beams, scores = next_beams, torch.tensor(next_scores, device=embeds.device)
            valid = torch.cat([valid, torch.ones(k, 1, dtype=torch.bool, device=valid.device)], 1)
            logits = self._step(torch.tensor(tokens, device=embeds.device), cache, valid, last_pos + t, p + t, unpadded)
        best = max(finished, key=lambda f: f[0])[1]
        return self._stopped(best, cfg)[1]
