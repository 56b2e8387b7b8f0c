"""Checks for what every entry point takes — counts, steps, seeds, scales, texts and labels: one place, one
wording.

A bool is never a number here, a float is never a count, and NaN or infinity is never a setting: each check
raises InvalidSettingError naming the argument and the value it got.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real

from .errors import InvalidLabelsError, InvalidSettingError, InvalidTextError

MAX_TEXT_CHARS = 4096  # longer text is refused; anything past the model's context is truncated
MAX_BATCH_SIZE = 65536
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def is_real(value: object) -> bool:
    """A finite int or float (numpy scalars included), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: object, low: int, high: int) -> int:
    """`value` as an int if it is a whole number in [low, high]; InvalidSettingError otherwise."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise InvalidSettingError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_real(name: str, value: object, low: float, high: float) -> float:
    """`value` as a float if it is a finite number in [low, high]; InvalidSettingError otherwise."""
    if not is_real(value) or not low <= value <= high:
        raise InvalidSettingError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return float(value)


def check_seed(value: object, name: str = "seed") -> int:
    """A seed torch accepts: an integer in [0, 2**63 - 1]."""
    return check_int(name, value, 0, MAX_SEED)


def check_texts(texts: str | Iterable[str], what: str = "text", allow_empty: bool = False) -> list[str]:
    """A list of non-empty (unless allow_empty) strings of reasonable length, or InvalidTextError naming the
    problem. One string is a list of one; bytes are not text (decode them first)."""
    if isinstance(texts, str):
        items = [texts]
    elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InvalidTextError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    else:
        items = list(texts)
    if not items:
        raise InvalidTextError(f"no {what} given")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InvalidTextError(f"{what} #{i} must be a string, got {type(t).__name__}")
        if not t.strip() and not allow_empty:
            raise InvalidTextError(f"{what} #{i} is empty")
        if len(t) > MAX_TEXT_CHARS:
            raise InvalidTextError(f"{what} #{i} is {len(t)} characters long; the limit is {MAX_TEXT_CHARS}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate: no tokenizer reads it, no UTF-8 channel carries it
            raise InvalidTextError(f"{what} #{i} is not valid Unicode ({err.reason} at character {err.start})") from err
    return items


def check_labels(labels: str | Sequence[str]) -> tuple[str, ...]:
    """Labels for classification: at least one, none blank, none repeated (after stripping spaces)."""
    if isinstance(labels, str):
        raise InvalidLabelsError("labels must be a list of strings, not one string")
    if isinstance(labels, (bytes, bytearray)) or not isinstance(labels, Iterable):
        raise InvalidLabelsError(f"labels must be a list of strings, got {type(labels).__name__}")
    items = tuple(labels)
    if not items:
        raise InvalidLabelsError("the label list is empty")
    for i, label in enumerate(items):
        if not isinstance(label, str) or not label.strip():
            raise InvalidLabelsError(f"label #{i} is empty or not a string: {label!r}")
        if len(label) > MAX_TEXT_CHARS:
            raise InvalidLabelsError(f"label #{i} is {len(label)} characters long; the limit is {MAX_TEXT_CHARS}")
    seen: dict[str, int] = {}
    for i, label in enumerate(items):
        key = label.strip()
        if key in seen:
            raise InvalidLabelsError(f"label {label!r} appears twice (#{seen[key]} and #{i})")
        seen[key] = i
    return tuple(label.strip() for label in items)


def check_batch_size(batch_size: object) -> int:
    """A batch size: a whole number from 1 to MAX_BATCH_SIZE."""
    return check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
