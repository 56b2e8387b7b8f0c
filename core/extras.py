"""Optional extras: what needs a package the core install leaves out says which extra brings it, instead of an
ImportError from deep inside a command."""

from __future__ import annotations

import importlib.util

from .errors import TriptychError


class MissingExtraError(TriptychError, ImportError):
    """A feature's optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> None:
    """Raise MissingExtraError naming `feature`, the missing `module` and the pip command of `extra`."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules as None: its import was blocked
        found = False
    if not found:
        raise MissingExtraError(f"{feature} needs {module}, which is not installed: pip install 'triptych[{extra}]'")
