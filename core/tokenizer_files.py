"""The files transformers' AutoTokenizer reads beside a `tokenizer.json`: `tokenizer_config.json` (which tokens are
bos/eos/pad/unk, the length limit) and a chat template (inline, or as `chat_template.jinja`). Written for every
folder we export, read (checked JSON, never code) where a decoder's chat template is needed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tokenizers import Tokenizer

from .errors import WeightsError
from .weights_files import read_json

TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
PROCESSOR_CHAT_TEMPLATE = "chat_template.json"
MAX_TEMPLATE_BYTES = 1024 * 1024


def save_for_transformers(
    tok: Tokenizer,
    folder: str | Path,
    max_length: int,
    special_tokens: Mapping[str, str],
    chat_template: str | None = None,
) -> None:
    """Write tokenizer.json and tokenizer_config.json (and the chat template inline, as transformers does when
    there is one), so AutoTokenizer (and open_clip's HFTokenizer) loads the folder offline with the same ids.
    `special_tokens`: {"bos": "<bos>", "eos": ..., "pad": ..., "unk": ...}, any subset."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length}
    config |= {f"{role}_token": token for role, token in special_tokens.items()}
    config |= {"padding_side": "right", "truncation_side": "right"}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (folder / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=1) + "\n")


def read_chat_template(folder: str | Path) -> str | None:
    """The folder's chat template (`chat_template.jinja`, else tokenizer_config.json's "chat_template", else a
    processor's `chat_template.json`), or None.
    Only a single template string is taken; named template lists are refused rather than one guessed."""
    folder = Path(folder)
    file = folder / CHAT_TEMPLATE_FILE
    if file.is_file():
        if file.stat().st_size > MAX_TEMPLATE_BYTES:
            raise WeightsError(f"{file} is {file.stat().st_size} bytes: too large for a chat template")
        return file.read_text(encoding="utf-8")
    config = folder / TOKENIZER_CONFIG
    template = read_json(config).get("chat_template") if config.is_file() else None
    processor = folder / PROCESSOR_CHAT_TEMPLATE  # where transformers' processors (LLaVA's) keep theirs
    if template is None and processor.is_file():
        config, template = processor, read_json(processor).get("chat_template")
    if template is not None and not isinstance(template, str):
        raise WeightsError(f"{config}: 'chat_template' must be one template string, got {type(template).__name__}")
    return template
