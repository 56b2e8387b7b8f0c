"""Checks for the numbers every entry point takes (counts, steps, seeds, scales): one place, one wording.

A bool is never a number here, a float is never a count, and NaN or infinity is never a setting: each check
raises InvalidSettingError naming the argument and the value it got.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import InvalidSettingError

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
