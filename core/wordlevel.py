"""Small word-level tokenizers (tokenizer.json) for models trained on a closed vocabulary, like the world's."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


def build_word_tokenizer(words: list[str], extra_specials: tuple[str, ...] = ()) -> Tokenizer:
    """Lower-cased, NFKC-normalised word-level tokenizer: `<bos> words <eos>`, `<pad>` = 0, unknown -> `<unk>`."""
    specials = SPECIALS + tuple(extra_specials)
    vocab = {tok: i for i, tok in enumerate(specials + tuple(w for w in words if w not in specials))}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # decode "left , a" as "left, a"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return tok


def save_for_transformers(tok: Tokenizer, folder: str | Path, max_length: int) -> None:
    """Write tokenizer.json plus the tokenizer_config.json that lets transformers' AutoTokenizer (and open_clip's
    HFTokenizer) load the folder offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "pad_token": PAD,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "padding_side": "right",
        "truncation_side": "right",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
