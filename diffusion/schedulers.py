"""Swappable diffusers schedulers by name, all built from one model's scheduler config."""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UnCLIPScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from triptych.core.errors import InvalidSettingError

# name -> (class, overrides applied on top of the saved config)
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddpm": (DDPMScheduler, {}),
    "unclip": (UnCLIPScheduler, {}),
}


def make_scheduler(name: str, config: dict) -> SchedulerMixin:
    """A scheduler of kind `name` sharing `config`'s noise schedule (betas, timesteps, prediction type)."""
    if name not in SCHEDULERS:
        raise InvalidSettingError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config({**dict(config), **overrides})


def scheduler_name(scheduler: SchedulerMixin) -> str:
    """The registry name of a scheduler instance ('ddim', 'dpm++', ...), or its class name."""
    for name, (cls, _) in SCHEDULERS.items():
        if type(scheduler) is cls:
            return name
    return type(scheduler).__name__
