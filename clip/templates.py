"""Prompt-template ensembles (CLIP paper, sec. 3.1.4): a label is embedded under each template and averaged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from string import Formatter

from triptych.core.errors import InvalidTextError

MAX_TEMPLATE_CHARS = 1024  # a label goes into every template; the text limit applies to the result as well

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
    if isinstance(templates, (bytes, bytearray)) or not isinstance(templates, Iterable):
        raise InvalidTextError(f"templates must be a name or a list of strings, got {type(templates).__name__}")
    templates = tuple(templates)
    if not templates:
        raise InvalidTextError("templates is empty; pass None to use each label as it is")
    for t in templates:
        check_template(t)
    return templates


def check_template(template: object) -> None:
    """One template: a string of at most MAX_TEMPLATE_CHARS with exactly one bare `{}` (no field names, numbers,
    conversions or format specs: `{x}` or `{0}` would fail at format time and `{:>99999999}` would pad a label to
    gigabytes). Literal braces are written `{{` and `}}`."""
    if not isinstance(template, str):
        raise InvalidTextError(f"each template must be a string, got {type(template).__name__} {template!r}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidTextError(f"template is {len(template)} characters long; the limit is {MAX_TEMPLATE_CHARS}")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(template) if name is not None]
    except ValueError as err:  # a lone '{' or '}'
        raise InvalidTextError(f"template {template!r} is not a valid format string ({err})") from err
    if fields != [("", "", None)]:
        raise InvalidTextError(
            f"template {template!r} must hold exactly one '{{}}' and no other fields "
            "(no names, numbers or format specs; write a literal brace as '{{' or '}}')"
        )
