"""Chats to training tensors: tokenize with the loss mask, truncate, and account for everything truncation did.

TRL's SFTTrainer receives the result already tokenized (`input_ids` and `labels`, -100 where no loss is taken), so
the mask is ours (`alignment.templates`) and TRL keeps doing what it does well: packing, padding-free batches,
collation and the training loop. Truncation happens here, not in TRL, so that every example cut short and every
example left with no trained token is counted and logged instead of silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

from alignment.templates import IGNORE_INDEX, ChatTemplateError, tokenize_conversation

logger = logging.getLogger(__name__)

# The columns `tokenize_chats` returns, typed as `datasets` infers them from a non-empty split.
TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32")), "labels": List(Value("int64"))})


@dataclass
class TruncationReport:
    """What `max_length` did to one split."""

    examples: int
    truncated: int
    lost_all_trained_tokens: int

    def __str__(self) -> str:
        return (
            f"{self.truncated}/{self.examples} examples truncated to max_length, {self.lost_all_trained_tokens} of "
            "them lost every trained token and were dropped"
        )


def tokenize_chats(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, TruncationReport]:
    """Map a `messages` dataset to `input_ids`/`labels`, cut to `max_length` keeping the start.

    Examples whose trained tokens all fall beyond `max_length` teach nothing and are dropped; the report counts them.
    An empty split (a mixture with no test rows) gives an empty result. A chat the template cannot mask exactly
    raises `ChatTemplateError` naming the split and row (0-based, as in `dataset[row]`).
    """
    if not len(dataset):
        report = TruncationReport(0, 0, 0)
        logger.info("%s split: %s", split_name, report)
        return Dataset.from_dict({"input_ids": [], "labels": []}, features=TOKENIZED_FEATURES), report

    def encode(row: dict, index: int) -> dict:
        try:
            encoded = tokenize_conversation(tokenizer, row["messages"], train_on_prompt=train_on_prompt)
        except ChatTemplateError as err:
            raise ChatTemplateError(f"{split_name} row {index}: {err}") from err
        length = len(encoded["input_ids"])
        if max_length is not None and length > max_length:
            encoded = {key: values[:max_length] for key, values in encoded.items()}
        has_trained = any(label != IGNORE_INDEX for label in encoded["labels"])
        return {**encoded, "full_length": length, "has_trained": has_trained}

    encoded = dataset.map(
        encode,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} chats",
    )
    truncated = sum(1 for n in encoded["full_length"] if max_length is not None and n > max_length)
    keep = [i for i, ok in enumerate(encoded["has_trained"]) if ok]
    report = TruncationReport(len(encoded), truncated, len(encoded) - len(keep))
    if len(keep) < len(encoded):
        encoded = encoded.select(keep)
    logger.info("%s split: %s", split_name, report)
    return encoded.remove_columns(["full_length", "has_trained"]), report


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of positions that would be padding if `lengths` were batched in order, `batch_size` at a time."""
    padded = real = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0
