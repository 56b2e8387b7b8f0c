"""Prompt-template ensembles (CLIP paper, sec. 3.1.4): a label is embedded under each template and averaged."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidTextError

#: The world's own lead-ins; labels carry their article (`a red circle`).
WORLD: tuple[str, ...] = ("{}", "a picture of {}", "an image of {}", "there is {}")

#: The 7-template ImageNet ensemble the CLIP authors recommend (for bare class names like `dog`).
IMAGENET: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

#: Named ensembles for the CLI's --templates option.
NAMED: dict[str, tuple[str, ...]] = {"none": ("{}",), "world": WORLD, "imagenet": IMAGENET}


def check_templates(templates: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalise a template argument: None -> ('{}',), a name from NAMED, or strings each holding one `{}`."""
    if templates is None:
        return ("{}",)
    if isinstance(templates, str):
        if templates in NAMED:
            return NAMED[templates]
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise InvalidTextError("templates is empty; pass None to use each label as it is")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise InvalidTextError(f"template {t!r} must be a string holding exactly one '{{}}'")
    return templates
