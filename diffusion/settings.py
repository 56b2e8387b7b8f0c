"""Generation settings with their limits: one validated dataclass shared by every generator entry point."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from triptych.core.checks import MAX_SEED, check_int, check_real, is_real
from triptych.core.errors import InvalidSettingError

from .schedulers import SCHEDULERS

DECODER_SCHEDULERS: tuple[str, ...] = tuple(name for name in SCHEDULERS if name != "unclip")  # unclip: prior only

MAX_STEPS = 1000  # the schedules are trained on 1000 timesteps
MAX_IMAGES = 16  # per prompt and call: more belongs in a loop, not one batch
MAX_GUIDANCE = 100.0

__all__ = ["DECODER_SCHEDULERS", "MAX_SEED", "GenerationSettings", "is_real"]


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample. Guidance <= 1 turns classifier-free guidance off (one forward per step instead of two)."""

    steps: int = 50  # decoder denoising steps
    guidance: float = 4.0  # decoder classifier-free guidance
    prior_steps: int = 25
    prior_guidance: float = 4.0
    scheduler: str = "ddim"  # decoder scheduler: ddim, dpm++, ddpm
    num_images: int = 1  # images per prompt
    best_of: int = 1  # draw this many per image and keep the one the encoder rates closest to the prompt
    prior_candidates: int = 1  # DALL-E 2: draw this many image embeddings, keep the one closest to the text
    strength: float = 1.0  # img2img: 0 keeps the image, 1 ignores it
    seed: int = 0

    def updated(self, **changes: object) -> GenerationSettings:
        """A validated copy with the non-None `changes` applied."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InvalidSettingError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).checked()

    def checked(self) -> GenerationSettings:
        """A copy with every value checked (whole numbers as int, scales as float), or InvalidSettingError naming
        the first bad one."""
        counts = {
            name: check_int(name, getattr(self, name), low, high)
            for name, low, high in (
                ("steps", 1, MAX_STEPS),
                ("prior_steps", 1, MAX_STEPS),
                ("num_images", 1, MAX_IMAGES),
                ("best_of", 1, MAX_IMAGES),
                ("prior_candidates", 1, MAX_IMAGES),
                ("seed", 0, MAX_SEED),
            )
        }
        scales = {
            name: check_real(name, getattr(self, name), low, high)
            for name, low, high in (
                ("guidance", 0.0, MAX_GUIDANCE),
                ("prior_guidance", 0.0, MAX_GUIDANCE),
                ("strength", 0.0, 1.0),
            )
        }
        if not isinstance(self.scheduler, str) or self.scheduler not in DECODER_SCHEDULERS:
            raise InvalidSettingError(
                f"scheduler must be one of {', '.join(DECODER_SCHEDULERS)}; got {self.scheduler!r}"
            )
        return replace(self, **counts, **scales)
