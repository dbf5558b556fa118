"""A throwaway byte-level BPE tokenizer for chat-template tests (offline, built in-process in milliseconds).

Every special-looking literal of a template (``<|im_end|>``, ``<start_of_turn>``, ``<｜User｜>``, ...) is registered as
a special token, and tag-like strings (``<think>``) as plain added tokens, so token boundaries are realistic.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AddedToken, PreTrainedTokenizerFast

_SPECIAL_RES = [
    re.compile(r"<\|[^|<>\s'\"]+\|>"),  # <|im_end|>
    re.compile(r"<｜[^｜<>\s'\"]+｜>"),  # <｜User｜>
    re.compile(r"<\|[a-z_]+>|<[a-z_]+\|>"),  # <|turn> <turn|>
    re.compile(r"<(?:start_of_turn|end_of_turn|bos|eos|end_of_utterance|BOS_TOKEN|EOS_TOKEN)>"),
    re.compile(r"</?s>"),
]
_TAG_RE = re.compile(r"</?[a-z_]+>")
_FILLER = (
    "The quick brown fox jumps over the lazy dog. Hello, how are you today? I am fine, thanks! "
    "Explain photosynthesis in one sentence. Plants turn light, water and CO2 into sugar and oxygen. "
    "system user assistant model tool You are a helpful assistant. Answer briefly.\n\n"
)


def special_literals(template: str) -> tuple[list[str], list[str]]:
    """(special tokens, plain added tokens) written literally in a template's source."""
    special = sorted({m for rx in _SPECIAL_RES for m in rx.findall(template)})
    tags = sorted({m for m in _TAG_RE.findall(template) if m not in special})
    return special, tags


def build_tokenizer(
    template: str | None = None,
    *,
    corpus: list[str] = (),
    bos: str = "<s>",
    eos: str = "</s>",
    extra_special: list[str] = (),
    trim_offsets: bool = False,
    vocab_size: int = 600,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus`` with the template's literals registered as added tokens."""
    special, tags = special_literals(template or "")
    special = sorted(set(special) | set(extra_special) | {bos, eos})
    texts = list(corpus) + [_FILLER]
    for tok in special + tags:  # learn merges of the text around tokens, not of the tokens themselves
        texts = [t.replace(tok, " ") for t in texts]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    if template is not None:
        tok.chat_template = template
    return tok
