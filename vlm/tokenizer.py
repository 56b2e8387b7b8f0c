"""The VLM's tokenizer: any `tokenizer.json` (tokenizers library), so Llama-family tokenizers work too."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from triptych.core.errors import WeightsError
from triptych.core.wordlevel import BOS, EOS, PAD

SEP = "<sep>"  # ends the prompt; the answer follows
CAPTION_PROMPT = "caption"


class TextCodec:
    """Encodes prompts and answers to ids without special tokens, and decodes ids back to text."""

    def __init__(self, tokenizer: Tokenizer, bos: str = BOS, eos: str = EOS, pad: str = PAD) -> None:
        self.tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(name) for name in (bos, eos, pad)}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise WeightsError(f"tokenizer lacks the special tokens {missing}")
        self.bos_id, self.eos_id, self.pad_id = ids[bos], ids[eos], ids[pad]

    @classmethod
    def load(cls, folder: str | Path, **names: str) -> TextCodec:
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise WeightsError(f"{path} is missing")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises a bare Exception on a malformed file
            raise WeightsError(f"{path} is not a readable tokenizer ({err})") from err
        return cls(tokenizer, **names)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()
