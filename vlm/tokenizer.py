"""The VLM's tokenizer: any `tokenizer.json` (tokenizers library), so Llama-family tokenizers work too, with the
decoder's chat template when it has one (instruct decoders are prompted as they were trained)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer

from triptych.core.errors import InvalidTextError, WeightsError
from triptych.core.tokenizer_files import read_chat_template, save_for_transformers
from triptych.core.wordlevel import BOS, EOS, PAD

SEP = "<sep>"  # ends the prompt; the answer follows
IMAGE_SLOT = -1  # in prompt ids: where the image's tokens go (never a real id)
CAPTION_PROMPT = "caption"
GENERATION_CONFIG = "generation_config.json"


class TextCodec:
    """Encodes prompts and answers to ids without special tokens, and decodes ids back to text."""

    def __init__(
        self, tokenizer: Tokenizer, bos: str = BOS, eos: str = EOS, pad: str = PAD, chat_template: str | None = None
    ) -> None:
        self.tokenizer, self.chat_template = tokenizer, chat_template
        ids = {name: tokenizer.token_to_id(name) for name in (bos, eos, pad)}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise WeightsError(f"tokenizer lacks the special tokens {missing}")
        self.bos, self.eos, self.pad = bos, eos, pad
        self.bos_id, self.eos_id, self.pad_id = ids[bos], ids[eos], ids[pad]

    @classmethod
    def load(cls, folder: str | Path, **names: str) -> TextCodec:
        """`folder/tokenizer.json`, and the chat template of its tokenizer_config.json / chat_template.jinja."""
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise WeightsError(f"{path} is missing")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises a bare Exception on a malformed file
            raise WeightsError(f"{path} is not a readable tokenizer ({err})") from err
        return cls(tokenizer, **names, chat_template=read_chat_template(folder))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def prompt_ids(
        self, prompt: str, sep: str, chat: bool, image_token: str | None = None, special_tokens: bool = False
    ) -> list[int]:
        """What precedes the answer: with `chat`, the user turn through the chat template with the assistant's
        turn opened (as transformers' apply_chat_template(..., add_generation_prompt=True)); else
        `<bos> prompt <sep>`.

        `image_token`: the turn holds an image and a text part (LLaVA's conversation format), and the image
        token the template writes comes back as IMAGE_SLOT; a prompt that itself contains that token is refused
        (user text never places images). `special_tokens`: tokenize with the tokenizer's own added tokens, as
        transformers' processors do (LLaVA's leading <s>)."""
        if not chat:
            return [self.bos_id, *self.encode(prompt), *self.encode(sep)]
        content: str | list = prompt
        if image_token is not None:
            if image_token in prompt:
                raise InvalidTextError(f"the prompt may not contain the image token {image_token!r}")
            content = [{"type": "image"}, {"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        text = self._chat.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer.encode(text, add_special_tokens=special_tokens).ids
        if image_token is None:
            return ids
        image_id = self.tokenizer.token_to_id(image_token)
        if image_id is None or ids.count(image_id) != 1:
            raise WeightsError(f"the chat template must place the image token {image_token!r} once in a user turn")
        return [IMAGE_SLOT if i == image_id else i for i in ids]

    def require_chat_template(self, where: str | Path) -> None:
        """WeightsError naming `where` (the config that asks for the template) when the tokenizer has none."""
        if self.chat_template is None:
            raise WeightsError(
                f"{where} prompts the decoder through its chat template, but the tokenizer has none "
                f"(tokenizer_config.json 'chat_template' or chat_template.jinja)"
            )

    @cached_property
    def _chat(self):
        """transformers' tokenizer over ours, for its (sandboxed Jinja) chat-template renderer."""
        self.require_chat_template("the VLM config")
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=self.tokenizer,
            chat_template=self.chat_template,
            bos_token=self.bos,
            eos_token=self.eos,
            pad_token=self.pad,
        )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def save(self, folder: str | Path, max_length: int, max_new_tokens: int = 64) -> None:
        """tokenizer.json, tokenizer_config.json (special tokens, chat template) and generation_config.json (our
        defaults: greedy, `max_new_tokens`), so AutoTokenizer and a transformers model's generate read the folder
        as we do."""
        from transformers import GenerationConfig

        specials = {"bos": self.bos, "eos": self.eos, "pad": self.pad}
        save_for_transformers(self.tokenizer, folder, max_length, specials, self.chat_template)
        config = GenerationConfig(
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
        config.save_pretrained(folder)
