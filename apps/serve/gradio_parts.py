"""Gradio glue shared by the app's tabs: validated image uploads, user-facing errors, number and label parsing."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, before gradio is imported

import gradio as gr  # noqa: E402

from triptych.clip import InvalidImageError, TriptychError, load_image  # noqa: E402
from triptych.clip.encoder import check_labels  # noqa: E402
from triptych.core.errors import InvalidLabelsError, InvalidSettingError  # noqa: E402

MAX_LABELS = 1000


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
        raise InvalidImageError("the image must be uploaded with the request; server paths are not read")
    return resolved


def user_errors(fn: Callable) -> Callable:
    """Turn this project's errors (bad input) into gr.Error, which Gradio shows the user and sends API clients.
    Works for plain and generator (streaming) functions; keeps the signature Gradio inspects for gr.Progress."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except TriptychError as err:
                raise gr.Error(str(err)) from err

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TriptychError as err:
            raise gr.Error(str(err)) from err

    return call


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
