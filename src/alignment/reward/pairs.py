"""Reward-model rows: the preference-pair schema plus an optional `margin`, and pairs as the token ids a reward is
read from (prompt + reply up to the end-of-turn token, never truncated: pairs over `max_length` are dropped)."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Sequence

import pyarrow.compute as pc
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.chat.templates import ChatTemplateError
from alignment.chat.turns import encode_prompt_replies
from alignment.data.encoding import encode_rows, padding_fraction
from alignment.data.pairs import encode_pair, preference_row_problem
from alignment.data.rows import RowProblem

logger = logging.getLogger(__name__)


def reward_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator: a valid preference row (`preference_row_problem`) whose optional `margin` is a
    number (it is subtracted inside the loss: `-logsigmoid(r_chosen - r_rejected - margin)`)."""
    problem = preference_row_problem(row)
    if problem is not None:
        return problem
    margin = row.get("margin")
    if "margin" in row and (not isinstance(margin, numbers.Real) or isinstance(margin, bool)):
        return RowProblem("bad margin", f"margin is {margin!r}, expected a number")
    return None


def conversation_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """The ids a reward model scores: the prompt's inference ids, then the last assistant reply's ids up to its
    end-of-turn token, exactly as `encode_pair` encodes prompt + reply in training."""
    encoded = encode_prompt_replies(tokenizer, messages[:-1], messages[-1:])
    return encoded.prompt_ids + encoded.replies[0]


def tokenize_pairs(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> Dataset:
    """Map preference rows to `chosen_ids`/`rejected_ids` (and `margin` when the rows have one).

    Each side is the prompt's inference ids plus its reply's ids up to the end-of-turn token (`encode_pair`). Pairs
    with either side over `max_length` are dropped and counted. A row without exact ids is an `InvalidRowError`
    naming the source, split, row and reply, or with `skip_invalid_rows` is dropped and counted by reason; so is a
    sequence ending with the pad token, whose reward would be read one token early.
    """
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has no pad token; load it with `alignment.runtime.loading.load_tokenizer`.")
    has_margin = "margin" in dataset.column_names

    def encode(row: dict) -> list[dict]:
        pair = encode_pair(tokenizer, row)
        encoded = {f"{side}_ids": pair["prompt_ids"] + pair[f"{side}_ids"] for side in ("chosen", "rejected")}
        for side in ("chosen", "rejected"):
            if encoded[f"{side}_ids"][-1] == pad_id:
                raise ChatTemplateError(
                    f"the {side} sequence ends with the pad token {tokenizer.pad_token!r} (the chat template's "
                    "end-of-turn token is also the pad token), so the reward would be read from the token before it. "
                    "Use a tokenizer whose pad token differs from the end-of-turn token (`tokenizer_name_or_path`), "
                    "or another `chat_template`.",
                    kind="reply ends with the pad token",
                )
        if has_margin:
            encoded["margin"] = float(row["margin"])
        return [encoded]

    empty = {"chosen_ids": [], "rejected_ids": [], **({"margin": 0.0} if has_margin else {})}
    encoded = encode_rows(
        dataset,
        encode,
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} pairs",
    ).examples.remove_columns("row")
    if max_length is not None:
        chosen, rejected = pair_token_lengths(encoded)
        keep = [i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if max(c, r) <= max_length]
        if len(keep) < len(encoded):
            logger.warning(
                "%s split: dropped %d/%d pairs longer than max_length=%d tokens (a reward is read from the last "
                "token, so they cannot be truncated)",
                split_name,
                len(encoded) - len(keep),
                len(encoded),
                max_length,
            )
            encoded = encoded.select(keep)
    logger.info("%s split: %d pairs tokenized", split_name, len(encoded))
    return encoded


def pair_token_lengths(dataset: Dataset) -> tuple[list[int], list[int]]:
    """Token counts of every pair's chosen and rejected sequences, in dataset order (read from Arrow, not Python)."""
    chosen, rejected = [], []
    for table in dataset.select_columns(["chosen_ids", "rejected_ids"]).with_format("arrow").iter(batch_size=10_000):
        chosen.extend(pc.list_value_length(table["chosen_ids"]).to_pylist())
        rejected.extend(pc.list_value_length(table["rejected_ids"]).to_pylist())
    return chosen, rejected


def pair_padding_fraction(chosen: Sequence[int], rejected: Sequence[int], order: Sequence[int], batch_size: int):
    """Share of padding in the batches TRL's pair collator builds when pairs come in `order`, `batch_size` pairs per
    batch: each batch holds 2 x `batch_size` rows all padded to its longest chosen or rejected sequence."""
    interleaved = [length for i in order for length in (chosen[i], rejected[i])]
    return padding_fraction(interleaved, 2 * batch_size)
