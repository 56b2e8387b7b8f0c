"""Small word-level tokenizers (tokenizer.json) for models trained on a closed vocabulary, like the world's."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
SPECIAL_ROLES = {"pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK}  # as tokenizer_config.json names them


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
