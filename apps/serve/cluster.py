"""`triptych serve --ray`: the same Gradio app and named endpoints, its models in Ray Serve deployments.

The front end is this process: the page, the HTTP API, input checks and error messages are the single-process
app's own (`build_app`), over a `RayService` whose encoder, captioner and generator call the deployments by handle
(remote.py). The deployments come from a YAML file in `serve deploy`'s format (ray_serve.yaml is the default): the
front end deploys it, or attaches to the application already running under that name (`serve deploy FILE` first),
and on exit removes only what it deployed. Several front ends may share one cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from triptych.core.errors import InvalidImageError, InvalidTextError
from triptych.core.extras import MissingExtraError, require
from triptych.core.images import load_images
from triptych.core.resolve import Parts

from .remote import EncoderInfo, RemoteEncoder, call, unwrap
from .service import shown

DEFAULT_CONFIG = Path(__file__).with_name("ray_serve.yaml")
APP_NAME = "triptych"


def read_config(path: str | Path = DEFAULT_CONFIG) -> dict:
    """The triptych application of a `serve deploy` YAML file (the one named triptych, else the only one)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the Ray Serve config {path}: {err}") from err
    apps = data.get("applications") if isinstance(data, dict) else None
    if not isinstance(apps, list) or not apps or not all(isinstance(a, dict) for a in apps):
        raise ValueError(f"{path}: expected `applications:`, a list with the triptych application")
    named = [a for a in apps if a.get("name") == APP_NAME]
    if not named and len(apps) != 1:
        raise ValueError(f"{path}: no application named {APP_NAME!r}")
    return (named or apps)[0]


class RemoteCaptioner:
    """Captioner calls on the Captioner deployment, one request per image (`@serve.batch` joins them there)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def ask(self, images, questions, **settings) -> list[str]:
        images = load_images(images)
        questions = [questions] * len(images) if isinstance(questions, str) else list(questions)
        if len(questions) != len(images):
            raise InvalidTextError(f"{len(images)} images but {len(questions)} questions")
        return [call(self.handle.ask, (image, q, settings)) for image, q in zip(images, questions, strict=True)]

    def stream(self, image, prompt: str | None = None, **settings) -> Iterator[str]:
        images = load_images(image)
        if len(images) != 1:
            raise InvalidImageError(f"stream takes one image, got {len(images)}; use ask or caption for several")
        for piece in self.handle.options(stream=True).stream.remote((images[0], prompt, settings)):
            text = unwrap(piece)
            if text:  # a batched stream sends every request an update per step, most of them empty
                yield text


class RemoteGenerator:
    """UnCLIPGenerator calls on the Generator deployment. Per-step callbacks stay in the replica (progress bars
    and cancelling a running generation are the single-process app's)."""

    def __init__(self, handle, info: dict) -> None:
        self.handle, self.defaults = handle, info["defaults"]

    def _run(self, method: str, *args, callback=None, progress: bool = False, **kwargs):
        return call(self.handle.run, method, args, kwargs)

    def generate(self, prompt: str, *, callback=None, progress: bool = False, **kwargs):
        """One prompt's images; concurrent requests are batched in the deployment (each keeps its seed's images)."""
        return call(self.handle.generate, (prompt, kwargs))

    def variations(self, *args, **kwargs):
        return self._run("variations", *args, **kwargs)

    def interpolate(self, *args, **kwargs):
        return self._run("interpolate", *args, **kwargs)


@dataclass
class RayService:
    """What `build_app` needs of a Service, with the models on Ray Serve (see the module docstring)."""

    preset: Parts
    encoder: RemoteEncoder
    captioner: RemoteCaptioner | None = None
    generator: RemoteGenerator | None = None
    load_seconds: float = 0.0
    parts_info: dict = field(default_factory=dict)
    lock: nullcontext = field(default_factory=nullcontext)  # the deployments schedule their own model calls
    micro_batch: bool = False  # each request goes to the deployments alone; @serve.batch joins them there

    def __post_init__(self) -> None:
        from .serving import RequestGate

        self.gate = RequestGate()

    @classmethod
    def connect(cls, preset: str, app_name: str = APP_NAME) -> RayService:
        """Handles to the running application's deployments."""
        from ray import serve

        start = time.perf_counter()
        status = serve.status().applications[app_name]
        names = set(status.deployments)
        encoder = serve.get_deployment_handle("Encoder", app_name=app_name)
        info: EncoderInfo = call(encoder.info)
        service = cls(Parts(preset), RemoteEncoder(encoder, info, torch.device("cpu"), torch.float32))
        service.parts_info["encoder"] = {"parameters": info.parameters, "device": info.device}
        if "Captioner" in names:
            handle = serve.get_deployment_handle("Captioner", app_name=app_name)
            service.captioner, service.parts_info["vlm (projector + decoder)"] = (
                RemoteCaptioner(handle),
                call(handle.info),
            )
        if "Generator" in names:
            handle = serve.get_deployment_handle("Generator", app_name=app_name)
            gen_info = call(handle.info)
            service.generator, service.parts_info["prior + decoder"] = RemoteGenerator(handle, gen_info), gen_info
        service.load_seconds = time.perf_counter() - start
        return service

    @property
    def public_name(self) -> str:
        return shown(self.preset.name)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # the front end's; each deployment reports its own in about()

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def about(self) -> str:
        from ray import serve

        deployments = serve.status().applications[APP_NAME].deployments
        rows = "\n".join(
            f"| {name} | {sum(d.replica_states.values())} | {d.status.value} |" for name, d in deployments.items()
        )
        parts = "\n".join(
            f"| {part} | {info['parameters'] / 1e6:.2f} M | {info['device']} |"
            for part, info in self.parts_info.items()
        )
        return (
            f"**Preset:** `{self.public_name}` on **Ray Serve** (application `{APP_NAME}`)\n\n"
            f"**Encoder:** `{shown(self.encoder.name)}` ({self.encoder.kind}, {self.encoder.image_size} px), one "
            f"deployment that the others call.\n\n| deployment | replicas | status |\n|---|---|---|\n{rows}\n\n"
            f"| part | parameters | device |\n|---|---|---|\n{parts}"
        )


def deploy(config: dict, preset: str | None, address: str | None) -> tuple[RayService, bool]:
    """Join (or start) Ray, deploy the application unless it already runs, and connect a RayService to it.
    Returns (service, whether this process deployed it)."""
    require("ray", "distributed", "triptych serve --ray")
    import ray

    try:
        from ray import serve
    except ImportError as err:  # Ray without its serve extra
        message = f"triptych serve --ray needs Ray Serve ({err}): pip install 'triptych[distributed]'"
        raise MissingExtraError(message) from err

    from .deployments import build

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    args = dict(config.get("args") or {})
    if preset is not None:
        args["preset"] = preset
    running = serve.status().applications.get(APP_NAME)
    deployed = running is None or running.status.value not in ("RUNNING", "DEPLOYING")
    if deployed:
        serve.start(http_options={"host": "127.0.0.1"})  # Serve's own HTTP proxy: this machine only
        app = build({**args, "deployments": config.get("deployments") or []})
        serve.run(app, name=APP_NAME, route_prefix=config.get("route_prefix", f"/{APP_NAME}"))
    return RayService.connect(str(args.get("preset", "shapes"))), deployed


def undeploy() -> None:
    """Remove the application (what a front end that deployed it does when it stops)."""
    from ray import serve

    serve.delete(APP_NAME)


def preset_override(preset: str, config: dict) -> str | None:
    """`--preset` replaces the config's preset, unless it is the default and the config names one."""
    return preset if preset != "shapes" or "preset" not in (config.get("args") or {}) else None
