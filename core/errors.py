"""Typed errors shared by every package: each names the input and what is wrong with it."""


class TriptychError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidImageError(TriptychError, ValueError):
    """An image that cannot be used: missing, empty, corrupt, truncated, not an image, or too large."""


class InvalidTextError(TriptychError, ValueError):
    """Text that cannot be used: empty, too long, or not a string."""


class InvalidLabelsError(TriptychError, ValueError):
    """A label set that cannot be classified against: empty, duplicated or blank labels."""


class WeightsError(TriptychError, OSError):
    """A weights folder that is missing, incomplete, corrupted or in an unknown format."""


class InvalidSettingError(TriptychError, ValueError):
    """A number or option out of range: steps, guidance, strength, counts, seeds, scheduler names."""
