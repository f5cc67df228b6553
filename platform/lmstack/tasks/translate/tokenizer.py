"""One tokenizer for both languages: byte-level BPE, optionally with every CJK character its own piece."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmstack.data.tokenizer import EOS
from lmstack.tasks.translate.data import TAGS

PAD = "<pad>"
MASK = "<mask>"
SPECIALS = [PAD, EOS, MASK, *TAGS.values()]
CJK_CHAR = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"


def train_tokenizer(texts: Iterable[str], vocab_size: int, zh_chars: bool) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` (both languages). zh_chars: merges never cross a CJK character,
    so Chinese is character level while English keeps subwords (bytes still cover rare characters)."""
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if zh_chars:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(CJK_CHAR), behavior="isolated"), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        mask_token=MASK,
        additional_special_tokens=list(TAGS.values()),
    )
