"""Gradio glue shared by the app's tabs: validated image uploads, user-facing errors, number and label parsing."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, before gradio is imported

import gradio as gr  # noqa: E402

from clip import InvalidImageError, TriptychError, load_image  # noqa: E402
from clip.errors import InvalidLabelsError, InvalidSettingError  # noqa: E402

MAX_LABELS = 1000

class UploadedImage(gr.Image):
    """A gr.Image whose uploads go through `clip.load_image`: corrupt, truncated, empty, huge or odd-mode files
    get a clear error naming the upload (not a temp path), and the function receives an RGB PIL image."""

    is_template = True  # rendered by the stock Image front end...

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Image.get_component_class_id()  # ...which the page finds by this id

    def __init__(self, **kwargs) -> None:
        super().__init__(type="pil", **kwargs)

    def preprocess(self, payload):
        if payload is None:
            return None
        name = payload.orig_name or "the uploaded file"
        try:
            if payload.path is None:  # a data: URL; gradio decodes it
                return load_image(super().preprocess(payload), name=name)
            return load_image(Path(payload.path).read_bytes(), name=name)
        except InvalidImageError as err:
            raise gr.Error(str(err)) from err
        except Exception as err:  # gradio's own decoding of a data: URL
            raise gr.Error(f"{name}: not a readable image ({type(err).__name__})") from err
    from collections.abc import Callable, Sequence
    from typing import TYPE_CHECKING, Any, Literal

    from gradio.blocks import Block

    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

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

def parse_labels(text: str | None) -> list[str]:
    """Labels typed one per line or separated by commas; blanks dropped."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidLabelsError("no labels given: type at least two, separated by commas or new lines")
    separator = "\n" if "\n" in text.strip() else ","
    labels = [label.strip() for label in text.split(separator) if label.strip()]
    if len(labels) > MAX_LABELS:
        raise InvalidLabelsError(f"{len(labels)} labels given; the limit is {MAX_LABELS}")
    return labels
