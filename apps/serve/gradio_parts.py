"""Gradio glue shared by the app's tabs: validated image uploads, typed form inputs, user-facing errors, number and
label parsing."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, before gradio is imported

import gradio as gr  # noqa: E402
from gradio.exceptions import InvalidPathError  # noqa: E402

from triptych.clip import InvalidImageError, TriptychError, load_image  # noqa: E402
from triptych.core.checks import check_labels  # noqa: E402
from triptych.core.errors import InvalidLabelsError, InvalidSettingError  # noqa: E402

MAX_LABELS = 1000
SERVER_PATH_REFUSED = "the image must be uploaded with the request; server paths are not read"
logger = logging.getLogger("triptych.app")
C = TypeVar("C", bound="gr.components.Component")


def uploaded_image(**kwargs) -> gr.Image:
    """A stock gr.Image whose uploads go through `clip.load_image`: corrupt, truncated, empty, huge or odd-mode
    files get a clear error naming the upload (not a temp path), and functions receive an RGB PIL image.

    The check replaces this instance's `preprocess` rather than subclassing: the page finds front-end code by the
    component's class, and a subclass of Image is not one it knows."""
    image = gr.Image(type="pil", **kwargs)

    def preprocess(payload):
        if payload is None:
            return None
        name = payload.orig_name or "the uploaded file"
        try:
            if payload.path is None:  # a data: URL; gradio decodes it
                return load_image(gr.Image.preprocess(image, payload), name=name)
            return load_image(Path(upload_path(payload.path)).read_bytes(), name=name)
        except InvalidImageError as err:
            raise gr.Error(str(err)) from err
        except Exception as err:  # gradio's own decoding of a data: URL
            raise gr.Error(f"{name}: not a readable image ({type(err).__name__})") from err

    image.preprocess = preprocess
    return image


def upload_path(path: str) -> Path:
    """The file of an upload, only if it lies in Gradio's upload cache: a client naming any other server path
    gets an error that says nothing about that path (Gradio checks this too; this keeps it true whatever the
    version)."""
    cache = Path(gr.utils.get_upload_folder()).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(cache):
        raise InvalidImageError(SERVER_PATH_REFUSED)
    return resolved


EXPECTED = {"a number": (int, float), "text": (str,)}  # form value kinds -> the JSON types that carry them


def typed_input(component: C, name: str, kind: str = "a number") -> C:
    """`component` refusing a value of the wrong kind (`kind` in EXPECTED; numbers must be finite) with a message
    naming the input: Gradio's own preprocessing turns "10" or None in a number field into a bare `"error": null`
    and quietly reads a list in a text field as its repr. Replaces this instance's `preprocess`, as
    `uploaded_image` does."""
    accepted, stock = EXPECTED[kind], component.preprocess

    def preprocess(payload):
        finite = not isinstance(payload, float) or math.isfinite(payload)
        if isinstance(payload, bool) or not isinstance(payload, accepted) or not finite:
            shown = repr(payload) if len(repr(payload)) <= 40 else f"{type(payload).__name__} {repr(payload)[:37]}..."
            raise gr.Error(f"{name} must be {kind}, got {shown}")
        return stock(payload)

    component.preprocess = preprocess
    return component


class Blocks(gr.Blocks):
    """gr.Blocks whose endpoints answer a call with too few inputs with a message naming them (Gradio's own check
    raises a ValueError, which API clients receive as a bare `"error": null`), and a request naming a server file
    instead of uploading one with the same message as `upload_path` (Gradio refuses it first, with a bare null)."""

    async def preprocess_data(self, block_fn, inputs: list, state, explicit_call: bool = False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError as err:
            raise gr.Error(SERVER_PATH_REFUSED) from err

    def validate_inputs(self, block_fn, inputs: list) -> None:
        if len(inputs) < len(block_fn.inputs):
            names = [name for name in block_fn.input_parameter_names or [] if name] or ["?"] * len(block_fn.inputs)
            raise gr.Error(
                f"/{block_fn.api_name} takes {len(block_fn.inputs)} inputs ({', '.join(names)}), got {len(inputs)}"
            )
        super().validate_inputs(block_fn, inputs)


def user_errors(fn: Callable, guard: Callable[[], AbstractContextManager] = nullcontext) -> Callable:
    """Turn every failure of `fn` into a gr.Error, which Gradio shows the user and sends API clients (anything else
    reaches them as a bare `"error": null`). This project's errors (bad input) keep their message; anything
    unexpected (a bug, the device out of memory) is logged with its traceback and answered with its kind only, and
    fails this request alone. `guard()` is held around each call (the app's request gate). Works for plain,
    generator (streaming) and async functions; keeps the signature Gradio inspects for gr.Progress."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with _as_messages(fn), guard():
                yield from fn(*args, **kwargs)

        return stream

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call_async(*args, **kwargs):
            with _as_messages(fn), guard():
                return await fn(*args, **kwargs)

        return call_async

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with _as_messages(fn), guard():
            return fn(*args, **kwargs)

    return call


@contextmanager
def _as_messages(fn: Callable) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except TriptychError as err:
        raise gr.Error(str(err)) from err
    except Exception as err:
        logger.exception("%s failed", fn.__name__)
        raise gr.Error(failure_message(err)) from err


def failure_message(err: Exception) -> str:
    """What a user is told of an unexpected failure: its kind, never its internals (paths, tensors, code)."""
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(err):
        return "out of memory while running the model: try fewer images or steps; the server carries on"
    return f"the model failed on this request ({type(err).__name__}); the server logged it and carries on"


def require_image(image: object, what: str = "image") -> None:
    if image is None:
        raise InvalidImageError(f"no {what} given: upload one first")


def whole_number(value: object, name: str) -> int:
    """An integer from a form value (Gradio sends numbers as floats); InvalidSettingError for 2.5, NaN, text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise InvalidSettingError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def parse_labels(text: str | None) -> tuple[str, ...]:
    """Checked labels (clip's check_labels) typed one per line or separated by commas; blanks dropped."""
    if not isinstance(text, str):
        raise InvalidLabelsError(f"labels must be text, got {type(text).__name__}")
    separator = "\n" if "\n" in text.strip() else ","
    labels = [label for label in text.split(separator) if label.strip()]
    if len(labels) > MAX_LABELS:
        raise InvalidLabelsError(f"{len(labels)} labels given; the limit is {MAX_LABELS}")
    return check_labels(labels)
