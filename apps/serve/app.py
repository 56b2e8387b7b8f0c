"""The Gradio app: one process, one shared encoder, a tab per capability, and named HTTP endpoints.

Endpoints (gradio_client): /classify and /ask (micro-batched), /caption (streamed), /generate, /variations,
/interpolate. Every model call holds the service's lock, one at a time: on a GPU that is the accelerator, on a CPU
torch already uses every core for one call.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from collections import defaultdict

from PIL import Image

from triptych.core.checks import check_texts
from triptych.core.errors import InvalidTextError
from triptych.diffusion.settings import DECODER_SCHEDULERS

from .batching import MicroBatcher
from .gradio_parts import (
    Blocks,
    gr,
    parse_labels,
    require_image,
    typed_input,
    uploaded_image,
    user_errors,
    whole_number,
)
from .service import Service, example_prompts, example_scenes
from .serving import cancellable

MODEL_GROUP = "model"  # generation and streamed captions: one at a time
BATCHED_GROUP = "batched"  # classify and ask: up to MAX_BATCH at once, joined into batches by a MicroBatcher
QUEUE_SIZE = 64  # requests waiting beyond this are refused at once ("queue is full"), never hang
MAX_BATCH = 16
MAX_UPLOAD = "10mb"
# Gradio keeps each session's copy of the page config (~130 KiB for this app) and drops the oldest only past
# `state_session_capacity`, 10,000 by default: every API client that connects anew costs 130 KiB for good (1.3 GiB
# at the cap). The app keeps no per-session state (no gr.State, no component updates), so a few queues' worth will do.
SESSIONS_KEPT = 2 * QUEUE_SIZE
DELETE_CACHE = (3600, 3600)  # uploads and generated images leave Gradio's cache folder after an hour
GRACE_S, STOP_S, FLUSH_S = 2.0, 1.5, 1.5  # SIGTERM: for requests in flight to finish, to stop, to be told
TOP_LABELS = 10
TEMPLATE_CHOICES = ("world", "imagenet", "none")

SHAPES_NOTICE = """**These bundled models know only the shapes world**: 64×64 pictures of 1–3 flat shapes (circle,
square, triangle, diamond, cross, star) in 8 colours on a white or black 3×3 grid. Photos and free text are outside
what they learned. For real images, start the app on real weights, e.g. `triptych download kandinsky-2.2 --to k22`
then `triptych serve --preset k22` (`triptych presets` lists them), as the README's *Use real weights* shows."""


def notice(service: Service) -> str:
    """What the page says about the loaded models."""
    if service.preset.name == "shapes":
        return SHAPES_NOTICE
    parts = ["classification"] + ["captions and answers"] * (service.captioner is not None)
    parts += ["text-to-image, variations and interpolation"] * (service.generator is not None)
    return f"**Preset `{service.public_name}`**: {', '.join(parts)}. The examples are shapes-world pictures."


def build_app(service: Service) -> gr.Blocks:
    """The Blocks app over a loaded Service; tabs for the capabilities the service has."""
    with Blocks(title="triptych", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# triptych — one encoder, three jobs")
        gr.Markdown(notice(service))
        scenes = example_scenes()
        _classify_tab(service, scenes)
        if service.captioner is not None:
            _caption_tab(service, scenes)
        if service.generator is not None:
            _generate_tab(service)
            _variations_tab(service, scenes)
        with gr.Tab("About"):
            gr.Markdown(service.about(), elem_id="about")
            gr.Markdown(notice(service))
    return app


def _batcher(service: Service, fn):
    """item -> result through a MicroBatcher (one process: concurrent requests share a model call), or straight
    to `fn([item])` where the service batches elsewhere (Ray Serve's `@serve.batch`, in its replicas)."""
    if getattr(service, "micro_batch", True):
        return MicroBatcher(fn, service.lock, max_batch=MAX_BATCH)
    return lambda item: fn([item])[0]


# ---------------------------------------------------------------- classify
def _classify_tab(service: Service, scenes: list[tuple[Image.Image, str]]) -> None:
    from triptych.world import ALL_PAIRS

    default_labels = ", ".join(f"a {color} {shape}" for color, shape in ALL_PAIRS)

    def classify_batch(items: list[tuple[Image.Image, tuple[str, ...], str]]) -> list[dict[str, float]]:
        """Items that share labels and templates are classified in one call."""
        groups: dict[tuple[tuple[str, ...], str], list[int]] = defaultdict(list)
        for i, (_, names, template) in enumerate(items):
            groups[names, template].append(i)
        out: list[dict[str, float]] = [{} for _ in items]
        for (names, template), members in groups.items():
            probs = service.encoder.classify([items[i][0] for i in members], names, template)  # (n, C)
            for row, i in zip(probs.tolist(), members):
                out[i] = dict(zip(names, row))
        return out

    batcher = _batcher(service, classify_batch)

    def classify(image: Image.Image, labels: str, templates: str) -> dict[str, float]:
        require_image(image)  # templates: the Radio refuses anything but its choices
        return batcher((image, parse_labels(labels), templates))

    with gr.Tab("Classify"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(label="Image", height=256, elem_id="classify-image")
                labels = gr.Textbox(default_labels, label="Labels (commas or one per line)", lines=3)
                templates = gr.Radio(list(TEMPLATE_CHOICES), value="world", label="Prompt templates")
                button = gr.Button("Classify", variant="primary")
            result = gr.Label(num_top_classes=TOP_LABELS, label="Probabilities", elem_id="classify-result")
        gr.Examples([[img] for img, _ in scenes], inputs=[image], label="World examples")
        _endpoint(
            service,
            button,
            classify,
            dict(
                image=image,
                labels=typed_input(labels, "labels", "text"),
                templates=typed_input(templates, "templates", "text"),
            ),
            result,
            concurrency_id=BATCHED_GROUP,
            concurrency_limit=MAX_BATCH,
        )


# ---------------------------------------------------------------- caption and ask
def _caption_tab(service: Service, scenes: list[tuple[Image.Image, str]]) -> None:
    captioner = service.captioner

    def caption(image: Image.Image):
        """The caption, streamed: each update is the text so far. The lock is taken per token, so other
        requests run between the tokens of a long caption, and a client that leaves frees it at once."""
        require_image(image)
        pieces, text = iter(captioner.stream(image)), ""
        while True:
            with service.lock:
                service.gate.check()
                piece = next(pieces, None)
            if piece is None:
                return
            text += piece
            yield text

    batcher = _batcher(service, lambda items: captioner.ask([i for i, _ in items], [q for _, q in items]))

    def ask(image: Image.Image, question: str) -> str:
        require_image(image)
        return batcher((image, check_texts(question, "question")[0]))

    with gr.Tab("Caption & Ask"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(label="Image", height=256, elem_id="caption-image")
                caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                question = gr.Textbox("how many objects are there?", label="Question", elem_id="question")
                ask_button = gr.Button("Ask", elem_id="ask-button")
            with gr.Column():
                caption_box = gr.Textbox(label="Caption", elem_id="caption-text", interactive=False)
                answer_box = gr.Textbox(label="Answer", elem_id="answer-text", interactive=False)
        gr.Examples(
            [[img, "what is in the center?"] for img, _ in scenes],
            inputs=[image, question],
            label="World examples",
        )
        _endpoint(service, caption_button, caption, dict(image=image), caption_box, concurrency_id=MODEL_GROUP)
        _endpoint(
            service,
            ask_button,
            ask,
            dict(image=image, question=typed_input(question, "question", "text")),
            answer_box,
            concurrency_id=BATCHED_GROUP,
            concurrency_limit=MAX_BATCH,
        )


# ---------------------------------------------------------------- generate
async def _draw(service: Service, method: str, *args, num_images, progress: gr.Progress, settings: dict, **extra):
    """One generator call (generate, variations or interpolate) in a worker thread under the model lock,
    reporting each step. It stops at its next step when its client cancels or the server shuts down."""
    count = whole_number(num_images, "number of images")

    def work(cancelled) -> list[Image.Image]:
        def report(step: int, timestep: int, latents) -> None:
            service.gate.check(cancelled)
            progress((step + 1, settings["steps"]), desc="denoising", unit="steps")

        with service.lock:
            service.gate.check(cancelled)  # cancelled while it waited for the lock
            run = getattr(service.generator, method)
            return run(*args, num_images=count, callback=report, progress=False, **settings, **extra)

    return await cancellable(work)


def _settings_inputs(service: Service) -> dict[str, gr.components.Component]:
    """The Settings accordion, by the name each endpoint's API gives the value."""
    d = service.generator.defaults
    with gr.Accordion("Settings", open=False):
        with gr.Row():
            seed = gr.Number(d.seed, label="Seed", precision=0, minimum=0)
            steps = gr.Slider(1, 200, d.steps, step=1, label="Decoder steps")
            guidance = gr.Slider(0, 20, d.guidance, step=0.5, label="Decoder guidance")
        with gr.Row():
            prior_steps = gr.Slider(1, 200, d.prior_steps, step=1, label="Prior steps")
            prior_guidance = gr.Slider(0, 20, d.prior_guidance, step=0.5, label="Prior guidance")
            scheduler = gr.Dropdown(list(DECODER_SCHEDULERS), value=d.scheduler, label="Scheduler")
    return dict(
        seed=typed_input(seed, "seed"),
        steps=typed_input(steps, "steps"),
        guidance=typed_input(guidance, "guidance"),
        prior_steps=typed_input(prior_steps, "prior_steps"),
        prior_guidance=typed_input(prior_guidance, "prior_guidance"),
        scheduler=typed_input(scheduler, "scheduler", "text"),
    )


def _settings(*, seed, steps, guidance, prior_steps, prior_guidance, scheduler) -> dict:
    """The generator's keywords from the Settings values (Gradio passes them by name, see _settings_inputs)."""
    return dict(
        seed=whole_number(seed, "seed"),
        steps=whole_number(steps, "steps"),
        guidance=guidance,
        prior_steps=whole_number(prior_steps, "prior steps"),
        prior_guidance=prior_guidance,
        scheduler=scheduler,
    )


def _generate_tab(service: Service) -> None:
    async def generate(prompt, negative_prompt, num_images, best_of, progress=gr.Progress(), **settings):
        return await _draw(
            service,
            "generate",
            prompt,
            num_images=num_images,
            progress=progress,
            settings=_settings(**settings),
            negative_prompt=negative_prompt or None,
            best_of=whole_number(best_of, "best of"),
        )

    with gr.Tab("Generate"):
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox("a red circle to the left of a blue square", label="Prompt", elem_id="prompt")
                negative = gr.Textbox("", label="Negative prompt")
                with gr.Row():
                    num_images = gr.Slider(1, 8, 4, step=1, label="Images")
                    best_of = gr.Slider(1, 8, 1, step=1, label="Best of N (rerank by the encoder)")
                settings = _settings_inputs(service)
                button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            gallery = gr.Gallery(label="Images", columns=4, height=320, elem_id="generate-gallery")
        gr.Examples([[p] for p in example_prompts()], inputs=[prompt], label="World prompts")
        inputs = dict(
            prompt=typed_input(prompt, "prompt", "text"),
            negative_prompt=typed_input(negative, "negative_prompt", "text"),
            num_images=typed_input(num_images, "num_images"),
            best_of=typed_input(best_of, "best_of"),
        )
        _endpoint(service, button, generate, {**inputs, **settings}, gallery, concurrency_id=MODEL_GROUP)


# ---------------------------------------------------------------- variations and interpolation
def _variations_tab(service: Service, scenes: list[tuple[Image.Image, str]]) -> None:
    async def variations(image, num_images, progress=gr.Progress(), **settings):
        require_image(image)
        return await _draw(
            service, "variations", image, num_images=num_images, progress=progress, settings=_settings(**settings)
        )

    async def interpolate(
        prompt_a, prompt_b, image, weight_a, weight_b, weight_image, num_images, progress=gr.Progress(), **settings
    ):
        items, weights = [], []
        for item, weight in ((prompt_a, weight_a), (prompt_b, weight_b), (image, weight_image)):
            if item.strip() if isinstance(item, str) else item is not None:  # blank prompts and no image: skipped
                items.append(item)
                weights.append(weight)
        if not items:
            raise InvalidTextError("nothing to blend: give at least one prompt or an image")
        return await _draw(
            service,
            "interpolate",
            items,
            weights,
            num_images=num_images,
            progress=progress,
            settings=_settings(**settings),
        )

    with gr.Tab("Variations & Interpolate"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(label="Image", height=256, elem_id="variations-image")
                prompt_a = gr.Textbox("a large red circle in the top left", label="Prompt A")
                prompt_b = gr.Textbox("a large blue square in the bottom right", label="Prompt B")
                with gr.Row():
                    weight_a = gr.Slider(0, 1, 0.5, step=0.05, label="Weight A")
                    weight_b = gr.Slider(0, 1, 0.5, step=0.05, label="Weight B")
                    weight_image = gr.Slider(0, 1, 0.0, step=0.05, label="Weight of the image")
                num_images = gr.Slider(1, 8, 4, step=1, label="Images")
                settings = _settings_inputs(service)
                with gr.Row():
                    variations_button = gr.Button("Variations of the image", variant="primary")
                    interpolate_button = gr.Button("Interpolate")
            gallery = gr.Gallery(label="Images", columns=4, height=320, elem_id="variations-gallery")
        gr.Examples([[img] for img, _ in scenes], inputs=[image], label="World examples")
        num_images = typed_input(num_images, "num_images")
        _endpoint(
            service,
            variations_button,
            variations,
            dict(image=image, num_images=num_images, **settings),
            gallery,
            concurrency_id=MODEL_GROUP,
        )
        blend = dict(
            prompt_a=typed_input(prompt_a, "prompt_a", "text"),
            prompt_b=typed_input(prompt_b, "prompt_b", "text"),
            image=image,
            weight_a=typed_input(weight_a, "weight_a"),
            weight_b=typed_input(weight_b, "weight_b"),
            weight_image=typed_input(weight_image, "weight_image"),
            num_images=num_images,
        )
        _endpoint(service, interpolate_button, interpolate, {**blend, **settings}, gallery, concurrency_id=MODEL_GROUP)


def _endpoint(service: Service, button: gr.Button, fn, inputs: dict, output, **options) -> None:
    """`button` runs `fn` as the endpoint /<fn's name>. Inputs reach `fn` by name (the dict's keys, which are also
    the API's parameter names, in the dict's order); every failure becomes a message, and the service's gate
    counts the request (and refuses it once the server is shutting down)."""
    if options.get("concurrency_id") == MODEL_GROUP and not getattr(service, "micro_batch", True):
        options["concurrency_limit"] = MAX_BATCH  # the deployments schedule (and batch) model calls, not this process
    button.click(
        user_errors(fn, guard=service.gate.request),
        inputs_kwargs=inputs,
        outputs=output,
        api_name=fn.__name__,
        **options,
    )


# ---------------------------------------------------------------- serving
def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Queue with one model at a time and a bounded wait list, capped uploads, no extra filesystem access."""
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app.launch(
        server_name=host,
        server_port=port,
        max_file_size=MAX_UPLOAD,
        show_error=False,  # only gr.Error messages reach users (user_errors makes one of every failure), not internals
        ssr_mode=False,
        mcp_server=False,
        state_session_capacity=SESSIONS_KEPT,
        prevent_thread_lock=not block,
        quiet=not block,
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="shapes",
        help="'shapes' (bundled), a preset name (triptych presets), a folder `triptych download --to` wrote, "
        "or a folder with clip/ and any of vlm/ diffusion/",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--dtype", help="fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument(
        "--offload", action="store_true", help="keep models on the CPU, each on the GPU only while it runs"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="models on Ray Serve: a running cluster's address (ray://HOST:10001 or HOST:6379), or none to start "
        "Ray here; needs the [distributed] extra",
    )
    parser.add_argument(
        "--config", help="with --ray: a `serve deploy` YAML (default: the bundled ray_serve.yaml, two encoders)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triptych serve", description="Serve every capability in one Gradio app.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    # A private upload cache (unless one is set): Gradio names cached files by their content and deletes its own on
    # shutdown (delete_cache), so servers sharing /tmp/gradio would delete each other's uploads mid-request.
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="triptych-uploads-"))
    if args.ray is not None or args.config is not None:
        return _serve_on_ray(parser, args)
    service = Service.load(args.preset, device=args.device, dtype=args.dtype, offload=args.offload)
    print(f"triptych: loaded {args.preset} on {service.device} in {service.load_seconds:.1f} s", flush=True)
    for name, place in service.encoder.placement.where().items():
        print(f"  {name}: {place}", flush=True)
    serve(build_app(service), service, host=args.host, port=args.port)
    return 0


def _serve_on_ray(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from triptych.core.extras import MissingExtraError

    from . import cluster

    if args.ray is None:
        parser.error("--config goes with --ray")
    if args.offload or args.device or args.dtype:
        parser.error("with --ray, devices and precision are the config file's (args.device, args.dtype)")
    try:
        config = cluster.read_config(args.config or cluster.DEFAULT_CONFIG)
        address = None if args.ray == "local" else args.ray
        service, deployed = cluster.deploy(config, cluster.preset_override(args.preset, config), address)
    except (MissingExtraError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: {err}\n")
    print(f"triptych: {'deployed' if deployed else 'attached to'} {cluster.APP_NAME} on Ray Serve", flush=True)
    try:
        serve(build_app(service), service, host=args.host, port=args.port)
    finally:
        if deployed:
            cluster.undeploy()
    return 0


def serve(app: gr.Blocks, service: Service, host: str, port: int | None) -> None:
    """Serve until SIGTERM or SIGINT (Ctrl-C), then shut down in order (see `shut_down`); the process then exits
    with status 0, within 10 s of the signal."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    launch(app, host=host, port=port, block=False)
    print(f"triptych: serving on {app.local_url} (Ctrl-C or SIGTERM stops it)", flush=True)
    while not stop.wait(0.5):
        pass
    print("triptych: shutting down", flush=True)
    finished = shut_down(app, service)
    print(f"triptych: stopped ({'every request finished' if finished else 'unfinished requests were told why'})")


def shut_down(app: gr.Blocks, service: Service) -> bool:
    """New requests are refused with a message; those in flight get GRACE_S to finish and STOP_S more to stop at
    their next step, with a message; requests still waiting in Gradio's queue reach their handler and are refused
    (the queue's size is what its /queue/status endpoint reports); their messages get FLUSH_S to leave; then the
    server closes without waiting on idle connections. True if every request in flight finished."""
    finished = service.gate.close(GRACE_S, STOP_S)
    deadline = time.monotonic() + FLUSH_S
    while (app._queue.get_status().queue_size or service.gate.active) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(min(0.3, max(deadline - time.monotonic(), 0)))  # the last messages, on their way to clients
    app.server.force_exit = True  # uvicorn: close connections (heartbeats, idle streams) instead of waiting on them
    app.close(verbose=False)
    return finished


if __name__ == "__main__":
    raise SystemExit(main())
