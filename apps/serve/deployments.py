"""The service as Ray Serve deployments: the encoder once per replica, and the VLM and the generator calling it
through deployment handles (patch tokens, text states and embeddings travel between them), each deployment with its
own replicas, autoscaling and GPU share from the YAML config (`ray_serve.yaml`, which `serve deploy` accepts as is).

Model work runs in a worker thread of its replica (a thread may wait on another deployment; the event loop may
not), one call at a time per replica. classify and ask are batched with `@serve.batch`; every request keeps its
own outcome (see remote.outcome), and a batch that fails is retried item by item, so one bad request never fails
its neighbours. Text-to-image requests are batched too, through `generate_many`, which draws each request's noise
from its own seed, so a seed gives the same images whoever else is asking.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator

import torch
from ray import serve
from starlette.requests import Request

from triptych import clip, diffusion, vlm
from triptych.core.devices import precision_name, resolve_device, resolve_dtype
from triptych.core.resolve import resolve

from .remote import EncoderInfo, RemoteEncoder, failure, log, outcome, unwrap

APP_NAME = "triptych"
MAX_BATCH, BATCH_WAIT_S = 16, 0.005
MAX_GENERATE_BATCH, GENERATE_WAIT_S = 8, 0.05  # a generation takes seconds: waiting 50 ms for company is cheap
STREAM_WAIT_S = 0.02  # a streamed caption's first piece waits at most this for others to decode with


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu(value):
    """Tensors leave a replica on the CPU (a GPU tensor would need CUDA wherever it lands)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, clip.TextStates):
        return clip.TextStates(value.embeds.cpu(), value.states.cpu(), value.mask.cpu())
    return value


class _Replica:
    """One model call at a time in this replica, in a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def _run(self, fn, *args, **kwargs):
        def locked():
            with self._lock:
                return fn(*args, **kwargs)

        return await asyncio.to_thread(locked)


def _by_item(run_all, items: list) -> list[tuple]:
    """Outcomes of a whole batch in one call, or item by item when the batch fails (the error reaches only the
    requests that cause it)."""
    whole = outcome(run_all, items)
    if whole[0] == "ok":
        return [("ok", value) for value in whole[1]]
    return [outcome(lambda item: run_all([item])[0], item) for item in items]


@serve.deployment(name="Encoder")
class EncoderServer(_Replica):
    """The shared CLIP/SigLIP encoder: zero-shot classification (batched) and the tensors the other deployments
    read."""

    def __init__(self, preset: str = "shapes", device: str | None = None, dtype: str | None = None) -> None:
        super().__init__()
        self.encoder = clip.load(resolve(preset), device=device, dtype=dtype)

    def info(self) -> tuple:
        e = self.encoder
        return (
            "ok",
            EncoderInfo(
                e.name, e.kind, e.image_size, e.vision_width, e.vision_depth, e.embed_dim, e.image_mean,
                e.pad_id, _count(e.model), str(e.device), precision_name(e.dtype),
            ),
        )  # fmt: skip

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def classify(self, items: list[tuple]) -> list[tuple]:
        """items: (image, labels, templates) -> outcome of that image's probabilities (a list of floats)."""
        return await self._run(_by_item, self._classify_all, items)

    def _classify_all(self, items: list[tuple]) -> list[list[float]]:
        groups: dict[tuple, list[int]] = defaultdict(list)  # requests sharing labels and templates: one call
        for i, (_, labels, templates) in enumerate(items):
            groups[tuple(labels), templates].append(i)
        out: list[list[float]] = [[] for _ in items]
        for (labels, templates), members in groups.items():
            probs = self.encoder.classify([items[i][0] for i in members], labels, templates)
            for row, i in zip(probs.tolist(), members, strict=True):
                out[i] = row
        return out

    async def _tensor(self, method: str, *args) -> tuple:
        return await self._run(lambda: outcome(lambda: _cpu(getattr(self.encoder, method)(*args))))

    async def patch_tokens(self, images, layer: int, normalize: bool) -> tuple:
        return await self._tensor("patch_tokens", images, layer, normalize)

    async def zero_image_tokens(self, layer: int, normalize: bool) -> tuple:
        return await self._tensor("zero_image_tokens", layer, normalize)

    async def encode_image(self, images, normalize: bool) -> tuple:
        return await self._tensor("encode_image", images, 256, normalize)

    async def encode_text(self, texts) -> tuple:
        return await self._tensor("encode_text", texts)

    async def text_states(self, texts, allow_empty: bool, normalize: bool) -> tuple:
        return await self._tensor("text_states", texts, allow_empty, normalize)

    async def zero_image_embed(self) -> tuple:
        return await self._tensor("zero_image_embed")

    async def tokenize(self, texts) -> tuple:
        return await self._tensor("tokenize", texts)


async def _remote_encoder(handle, device: str | None, dtype: str | None) -> RemoteEncoder:
    info = unwrap(await handle.info.remote())
    dev = resolve_device(device)
    return RemoteEncoder(handle, info, dev, resolve_dtype(dtype, dev))


@serve.deployment(name="Captioner")
class CaptionServer(_Replica):
    """The VLM (projector + decoder) on the encoder deployment's patch tokens: ask (batched) and streamed
    captions."""

    async def __init__(self, encoder, preset: str = "shapes", device: str | None = None, dtype: str | None = None):
        super().__init__()
        remote = await _remote_encoder(encoder, device, dtype)
        self.captioner = await asyncio.to_thread(vlm.load, resolve(preset), remote)
        self.stream_batches: deque[int] = deque(maxlen=1000)  # the latest streamed batches, for monitoring and tests

    def recent_batches(self) -> tuple:
        return ("ok", list(self.stream_batches))

    def info(self) -> tuple:
        return ("ok", {"parameters": _count(self.captioner.vlm), "device": str(self.captioner.encoder.device)})

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def ask(self, items: list[tuple]) -> list[tuple]:
        """items: (image, question, generation settings) -> outcome of the answer."""
        return await self._run(_by_item, self._ask_all, items)

    def _ask_all(self, items: list[tuple]) -> list[str]:
        groups: dict[tuple, list[int]] = defaultdict(list)  # the same generation settings: one call
        for i, (_, _, settings) in enumerate(items):
            groups[tuple(sorted(settings.items()))].append(i)
        out = [""] * len(items)
        for key, members in groups.items():
            answers = self.captioner.ask([items[i][0] for i in members], [items[i][1] for i in members], **dict(key))
            for answer, i in zip(answers, members, strict=True):
                out[i] = answer
        return out

    async def stream(self, item: tuple) -> AsyncIterator[tuple]:
        """(image, prompt or None for the caption, settings) -> outcomes of the answer's pieces as decoded (a
        streaming handle's entry: Serve's batched generators are called from a method, not by handle)."""
        async for piece in self._stream_batch(item):
            yield piece

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=STREAM_WAIT_S)
    async def _stream_batch(self, items: list[tuple]) -> AsyncIterator[list]:
        """items: (image, prompt or None for the caption, settings) -> per request, the outcomes of its answer's
        pieces as they are decoded, the batch decoded together (requests sharing settings). A request whose input
        is refused gets its error alone; a failure while decoding ends the streams of its group with it."""
        self.stream_batches.append(len(items))
        loop, updates = asyncio.get_running_loop(), asyncio.Queue()
        checked = [
            outcome(self.captioner.stream_many, [image], [prompt], **settings) for image, prompt, settings in items
        ]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (_, _, settings) in enumerate(items):
            if checked[i][0] == "ok":
                groups[tuple(sorted(settings.items()))].append(i)

        def produce() -> None:  # in a worker thread, holding the replica's model
            try:
                with self._lock:
                    for key, members in groups.items():
                        try:
                            texts = self.captioner.stream_many(
                                [items[i][0] for i in members], [items[i][1] for i in members], **dict(key)
                            )
                            for step in texts:
                                loop.call_soon_threadsafe(updates.put_nowait, (members, step))
                        except Exception as err:  # noqa: BLE001 -- the group's callers get it as their outcome
                            log.exception("a streamed caption batch failed")
                            loop.call_soon_threadsafe(updates.put_nowait, (members, failure(err)))
            finally:  # whatever happens, the streams end
                loop.call_soon_threadsafe(updates.put_nowait, None)

        shown, done = [""] * len(items), [False] * len(items)
        first = [("ok", "")] * len(items)
        for i, result in enumerate(checked):
            if result[0] != "ok":
                first[i], done[i] = result, True
        yield first
        worker = asyncio.create_task(asyncio.to_thread(produce))
        while (update := await updates.get()) is not None:
            members, step = update
            out: list = [StopIteration if d else ("ok", "") for d in done]
            for j, i in enumerate(members):
                if isinstance(step, tuple):  # an error outcome: the group's streams end with it
                    out[i], done[i] = step, True
                elif step[j].startswith(shown[i]) and len(step[j]) > len(shown[i]):
                    out[i], shown[i] = ("ok", step[j][len(shown[i]) :]), step[j]
            yield out
        await worker


@serve.deployment(name="Generator")
class GenerateServer(_Replica):
    """The prior and the decoder on the encoder deployment's text states and embeddings. Text-to-image requests
    are batched (`@serve.batch`): those sharing their settings run as one `generate_many`, each with its own seed,
    so a request's images do not depend on who shares its batch."""

    async def __init__(self, encoder, preset: str = "shapes", device: str | None = None, dtype: str | None = None):
        super().__init__()
        remote = await _remote_encoder(encoder, device, dtype)
        self.generator = await asyncio.to_thread(diffusion.load, resolve(preset), remote)
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the latest batches, for monitoring and tests

    def info(self) -> tuple:
        g = self.generator
        params = _count(g.prior.prior) + _count(g.decoder.unet) + _count(g.decoder.movq)
        return ("ok", {"defaults": g.defaults, "parameters": params, "device": str(g.encoder.device)})

    def recent_batches(self) -> tuple:
        return ("ok", list(self.batch_sizes))

    @serve.batch(max_batch_size=MAX_GENERATE_BATCH, batch_wait_timeout_s=GENERATE_WAIT_S)
    async def generate(self, items: list[tuple]) -> list[tuple]:
        """items: (prompt, settings) -> outcome of that request's images."""
        self.batch_sizes.append(len(items))
        return await self._run(self._generate_all, items)

    def _generate_all(self, items: list[tuple]) -> list[tuple]:
        groups: dict[tuple, list[int]] = defaultdict(list)  # the same settings but seed and negative prompt
        for i, (_, settings) in enumerate(items):
            shared = {k: v for k, v in settings.items() if k not in ("seed", "negative_prompt")}
            groups[tuple(sorted(shared.items())), settings.get("negative_prompt") is None].append(i)
        out: list[tuple] = [()] * len(items)
        gen = self.generator
        for (shared, _), members in groups.items():
            if len(members) > 1:
                prompts = [items[i][0] for i in members]
                seeds = [items[i][1].get("seed", gen.defaults.seed) for i in members]
                negatives = [items[i][1].get("negative_prompt") for i in members]
                negatives = None if negatives[0] is None else negatives
                together = outcome(gen.generate_many, prompts, seeds, negatives, **dict(shared))
                if together[0] == "ok":
                    for i, images in zip(members, together[1], strict=True):
                        out[i] = ("ok", images)
                    continue
            for i in members:  # alone, or after the batch failed: each request its own outcome
                out[i] = outcome(gen.generate, items[i][0], progress=False, **items[i][1])
        return out

    async def run(self, method: str, args: tuple, kwargs: dict) -> tuple:
        """variations or interpolate -> outcome of the images."""
        if method not in ("variations", "interpolate"):
            return ("error", "ValueError", f"unknown generator method {method!r}")
        return await self._run(outcome, getattr(self.generator, method), *args, progress=False, **kwargs)


@serve.deployment(name="Gateway", num_replicas=1, ray_actor_options={"num_cpus": 0})
class Gateway:
    """The application's ingress: `GET /triptych` says which deployments serve; the app's pages and named
    endpoints are the Gradio front end's (`triptych serve --ray`), which calls the deployments by handle."""

    def __init__(self, encoder, captioner=None, generator=None) -> None:
        self.parts = ["encoder"] + ["captioner"] * (captioner is not None) + ["generator"] * (generator is not None)

    async def __call__(self, request: Request) -> dict:
        return {"app": APP_NAME, "deployments": self.parts}


def build(args: dict) -> serve.Application:
    """The application for `serve deploy` / `serve run` (import path triptych.apps.serve.deployments:build):
    args preset, device, dtype, and (for `triptych serve --ray`, which reads the same YAML) `deployments`, the
    options of each deployment by name (`serve deploy` applies its file's own)."""
    preset = str(args.get("preset", "shapes"))
    where = {"device": args.get("device"), "dtype": args.get("dtype")}
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in args.get("deployments", [])}
    parts = resolve(preset)

    def bound(deployment, *init):
        name = deployment.name
        return deployment.options(**options.get(name, {})).bind(*init, preset=preset, **where)

    encoder = bound(EncoderServer)
    captioner = bound(CaptionServer, encoder) if parts.vlm else None
    generator = bound(GenerateServer, encoder) if parts.generator else None
    return Gateway.bind(encoder, captioner, generator)
