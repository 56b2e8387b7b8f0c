"""Calling models that live in Ray Serve deployments as if they were in this process.

`RemoteEncoder` stands where the VLM and the generator expect an Encoder: patch tokens, text states and
embeddings are computed by the encoder deployment and travel back (as CPU tensors) to the caller's device. Every
call goes through `call`, which turns a deployment's reported failure back into the same TriptychError the
single-process app raises (so users get the same messages), and retries a request whose replica died under it
(inference is idempotent), so losing a replica costs its clients a retry, not an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from triptych.core import errors
from triptych.core.extras import MissingExtraError  # noqa: F401 -- a TriptychError users may be told of
from triptych.core.placement import Placement

from .serving import ServiceStopped  # noqa: F401 -- a TriptychError users may be told of

RETRIES = 4  # attempts of a request whose replica died; Serve routes each retry to a live one
RETRY_WAIT_S = 0.5
REQUEST_TIMEOUT_S = 600.0  # a wedged replica costs its callers an error after this, never a hang
log = logging.getLogger(__name__)


def failure(err: BaseException) -> tuple:
    """An error as an outcome: ("error", its class name, its message)."""
    return ("error", type(err).__name__, str(err))


def outcome(fn, *args, **kwargs) -> tuple:
    """("ok", value) or ("error", exception class name, message): what a deployment returns, so one request's
    failure travels as data (a batch never fails as a whole, and the caller re-raises the same error). Failures
    other than the user's (TriptychError, ValueError) are logged here, in the replica, with their traceback."""
    try:
        return ("ok", fn(*args, **kwargs))
    except (errors.TriptychError, ValueError) as err:
        return failure(err)
    except Exception as err:  # noqa: BLE001 -- out of memory, a model bug: this request's outcome, logged
        log.exception("a model call failed")
        return failure(err)


def _user_errors() -> dict[str, type]:
    """Every TriptychError class by name (the core ones, the server's, the extras')."""
    found, todo = {}, [errors.TriptychError]
    while todo:
        kind = todo.pop()
        found[kind.__name__] = kind
        todo += kind.__subclasses__()
    return found


def unwrap(result: tuple) -> Any:
    """The value of an outcome, or its error raised again: the same TriptychError class and message (what users
    are told), ValueError or out-of-memory as such, anything else as a RuntimeError naming the original."""
    if result[0] == "ok":
        return result[1]
    _, name, message = result
    kind = _user_errors().get(name)
    if kind is not None:
        raise kind(message)
    if name == "ValueError":
        raise ValueError(message)
    if name in ("OutOfMemoryError", "MemoryError"):
        raise torch.OutOfMemoryError(message)
    raise RuntimeError(f"{name} in a deployment: {message}")


def call(method, *args, **kwargs) -> Any:
    """`method.remote(*args, **kwargs)` on a deployment handle, waited for (at most REQUEST_TIMEOUT_S) and
    unwrapped; a request whose replica died under it is sent again, up to RETRIES times. Only this call's own
    replica counts: a death further down (a deployment this one called, which retried already) is an error."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    for attempt in range(RETRIES):
        try:
            return unwrap(method.remote(*args, **kwargs).result(timeout_s=REQUEST_TIMEOUT_S))
        except (ActorDiedError, ActorUnavailableError) as err:
            if isinstance(err, RayTaskError) or attempt == RETRIES - 1:
                raise
            time.sleep(RETRY_WAIT_S * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class EncoderInfo:
    """What users of an encoder read without calling it (from the encoder deployment, once)."""

    name: str
    kind: str
    image_size: int
    vision_width: int
    vision_depth: int | None
    embed_dim: int
    image_mean: tuple[float, float, float]
    pad_id: int
    parameters: int
    device: str
    dtype: str


class RemoteEncoder:
    """An Encoder whose work runs in the encoder deployment: the methods the VLM, the generator and the app's
    classify tab use, with tensors moved to this replica's device and dtype."""

    def __init__(self, handle, info: EncoderInfo, device: torch.device, dtype: torch.dtype) -> None:
        self.handle, self.info = handle, info
        self.name, self.kind, self.image_size = info.name, info.kind, info.image_size
        self.vision_width, self.vision_depth, self.embed_dim = info.vision_width, info.vision_depth, info.embed_dim
        self.image_mean, self.pad_id = info.image_mean, info.pad_id
        self.device, self.dtype = device, dtype
        self.placement = Placement(device)  # for the models of this replica only

    def __repr__(self) -> str:
        return f"RemoteEncoder({self.name!r}, on the encoder deployment)"

    def _here(self, value):
        if isinstance(value, torch.Tensor):
            return value.to(self.device, self.dtype if value.is_floating_point() else value.dtype)
        if hasattr(value, "__dataclass_fields__"):  # TextStates
            return type(value)(**{k: self._here(getattr(value, k)) for k in value.__dataclass_fields__})
        return value

    def _call(self, name: str, *args, **kwargs):
        return self._here(call(getattr(self.handle, name), *args, **kwargs))

    def classify(self, images, labels, templates=None) -> torch.Tensor:
        """(N, C) probabilities, one request per image (the deployment's `@serve.batch` joins them)."""
        from triptych.core.images import load_images

        rows = [call(self.handle.classify, (image, tuple(labels), templates)) for image in load_images(images)]
        return torch.tensor(rows)

    def patch_tokens(self, images, layer: int = -1, normalize: bool = True) -> torch.Tensor:
        return self._call("patch_tokens", images, layer, normalize)

    def zero_image_tokens(self, layer: int = -1, normalize: bool = True) -> torch.Tensor:
        return self._call("zero_image_tokens", layer, normalize)

    def encode_image(self, images, batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
        return self._call("encode_image", images, normalize)

    def encode_text(self, texts, batch_size: int = 256) -> torch.Tensor:
        return self._call("encode_text", texts)

    def text_states(self, texts, allow_empty: bool = False, normalize: bool = False):
        return self._call("text_states", texts, allow_empty, normalize)

    def zero_image_embed(self) -> torch.Tensor:
        return self._call("zero_image_embed")

    def tokenize(self, texts) -> torch.Tensor:
        return self._call("tokenize", texts)
