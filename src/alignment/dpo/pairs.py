"""Preference pairs as token ids, truncated, with a count of what truncation did (`tokenize_preferences`).

Rows in any form of `alignment.data.pairs` become token ids here, not in TRL (`encode_pair`): the prompt's
inference ids, then each reply's ids after them (`alignment.chat.turns`), so a template that writes its own BOS gets
one BOS, exactly as in SFT and at inference. The prompt keeps its end (`max_prompt_length`: the last turns and the
generation prompt are what the reply depends on); the replies keep their start and are cut to
`max_length - prompt length`. Every cut is counted and logged; a pair whose prompt leaves no room for a reply token,
or whose replies become identical once cut, is dropped and counted, never trained on silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.data.encoding import encode_rows
from alignment.data.pairs import encode_pair

logger = logging.getLogger(__name__)


@dataclass
class PreferenceTruncationReport:
    """What tokenization and truncation did to one split of preference pairs."""

    pairs: int
    prompts_truncated: int = 0
    replies_truncated: int = 0
    dropped_no_reply_room: int = 0
    dropped_identical_after_truncation: int = 0

    @property
    def kept(self) -> int:
        return self.pairs - self.dropped_no_reply_room - self.dropped_identical_after_truncation

    def __str__(self) -> str:
        return (
            f"{self.pairs} pairs: {self.prompts_truncated} prompts kept only their end (max_prompt_length), "
            f"{self.replies_truncated} pairs had a reply cut (max_length); dropped {self.dropped_no_reply_room} whose "
            f"prompt left no room for a reply token and {self.dropped_identical_after_truncation} whose replies were "
            f"identical once cut -> {self.kept} pairs"
        )


def _encode_pair(
    tokenizer: PreTrainedTokenizerBase, row: dict, max_length: int | None, max_prompt_length: int | None
) -> dict:
    """Token ids of one pair, truncated, with flags saying what truncation did (see the module doc)."""
    encoded = encode_pair(tokenizer, row)
    prompt_ids = encoded["prompt_ids"]
    replies = {name: encoded[f"{name}_ids"] for name in ("chosen", "rejected")}
    prompt_cut = max_prompt_length is not None and len(prompt_ids) > max_prompt_length
    if prompt_cut:
        prompt_ids = prompt_ids[-max_prompt_length:]
    room = None if max_length is None else max_length - len(prompt_ids)
    reply_cut = room is not None and any(len(ids) > room for ids in replies.values())
    if room is not None:
        replies = {name: ids[: max(room, 0)] for name, ids in replies.items()}
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": replies["chosen"],
        "rejected_ids": replies["rejected"],
        "prompt_cut": prompt_cut,
        "reply_cut": reply_cut,
        "no_room": room is not None and room <= 0,
        "identical": room is not None and room > 0 and replies["chosen"] == replies["rejected"],
    }


def tokenize_preferences(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    max_prompt_length: int | None,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, PreferenceTruncationReport]:
    """Map preference rows (any form of `alignment.data.pairs`) to `prompt_ids`, `chosen_ids`, `rejected_ids`.

    The prompt ids are what inference feeds the model, the replies the ids it generates after them up to and
    including the end-of-turn token (`alignment.chat.turns`), cut as the module doc says. Rows must already be valid
    (`load_mixture` with `preference_row_problem`). A row without exact ids is an `InvalidRowError` naming the source
    (`source_of(row)`), split, row and reply, or with `skip_invalid_rows` is dropped and counted by reason.
    """
    empty = {
        "prompt_ids": [],
        "chosen_ids": [],
        "rejected_ids": [],
        "prompt_cut": False,
        "reply_cut": False,
        "no_room": False,
        "identical": False,
    }
    encoded = encode_rows(
        dataset,
        lambda row: [_encode_pair(tokenizer, row, max_length, max_prompt_length)],
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} preference pairs",
    ).examples.remove_columns("row")
    report = PreferenceTruncationReport(
        pairs=len(encoded),
        prompts_truncated=sum(encoded["prompt_cut"]),
        replies_truncated=sum(encoded["reply_cut"]),
        dropped_no_reply_room=sum(encoded["no_room"]),
        dropped_identical_after_truncation=sum(encoded["identical"]),
    )
    if report.kept < report.pairs:
        keep = [i for i, (a, b) in enumerate(zip(encoded["no_room"], encoded["identical"], strict=True)) if not a | b]
        encoded = encoded.select(keep)
        logger.warning("%s split: %d pairs dropped by truncation (see below)", split_name, report.pairs - report.kept)
    logger.info("%s split: %s", split_name, report)
    return encoded.remove_columns(["prompt_cut", "reply_cut", "no_room", "identical"]), report
