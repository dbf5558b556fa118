"""dSFT rows: the chat row check and the chat tokenizer (every assistant turn in its inference context).

Truncation happens here, not in TRL, so that every example cut short and every example left with no trained token
is counted and logged instead of silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

from alignment.chat.turns import IGNORE_INDEX, HistoryRewrite, encode_chat
from alignment.data.encoding import encode_rows
from alignment.data.formats import chat_tools
from alignment.data.rows import RowProblem, conversation_problem

logger = logging.getLogger(__name__)


def sft_row_problem(row: dict) -> RowProblem | None:
    """The SFT row validator for `load_mixture`: `conversation_problem` of the row's `messages` column, and its
    `tools` column (the functions the chat may call, `alignment.data.chat_tools`) when it has one."""
    if "messages" not in row:
        return RowProblem("no messages column", f"no 'messages' column (the row has: {', '.join(row)})")
    tools = chat_tools(row.get("tools"))
    return tools if isinstance(tools, RowProblem) else conversation_problem(row["messages"])


def chat_template_kwargs(row: dict) -> dict | None:
    """What the chat template is given besides the messages of a checked SFT row: its `tools`, when it has any."""
    tools = chat_tools(row.get("tools"))
    if isinstance(tools, RowProblem):
        raise ValueError(f"unchecked SFT row (check it with `sft_row_problem`): {tools}")
    return {"tools": tools} if tools else None


# The columns `tokenize_chats` returns, typed as `datasets` infers them from a non-empty split.
TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32")), "labels": List(Value("int64"))})


@dataclass
class TruncationReport:
    """What tokenization did to one split: chats expanded into one example per turn context, rows the template
    refused (dropped with `skip_invalid_rows`), and what `max_length` cut."""

    examples: int
    truncated: int
    lost_all_trained_tokens: int
    expanded_rows: int = 0
    last_turn_rows: int = 0
    refused_rows: int = 0

    def __str__(self) -> str:
        parts = []
        if self.expanded_rows:
            parts.append(f"{self.expanded_rows} chats expanded into one example per exact inference context")
        if self.last_turn_rows:
            parts.append(f"{self.last_turn_rows} chats trained on their last turn only (history_rewrite: last_turn)")
        if self.refused_rows:
            parts.append(f"{self.refused_rows} chats refused by the template and dropped")
        parts.append(
            f"{self.truncated}/{self.examples} examples truncated to max_length, {self.lost_all_trained_tokens} of "
            "them lost every trained token and were dropped"
        )
        return "; ".join(parts)


def tokenize_chats(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
    history_rewrite: HistoryRewrite = "expand",
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, TruncationReport]:
    """Map a `messages` dataset to `input_ids`/`labels` (`alignment.turns.encode_chat`), cut to `max_length` keeping
    the start.

    A chat that one sequence cannot hold in every turn's inference context becomes several examples, as
    `history_rewrite` says; each is counted. Examples whose trained tokens all fall beyond `max_length` teach
    nothing and are dropped; the report counts them. An empty split gives an empty result. A chat the template
    cannot encode exactly is an `InvalidRowError` naming the source (`source_of(row)`), split, row, turn and reason,
    or with `skip_invalid_rows` is dropped and counted by reason.
    """
    if not len(dataset):
        report = TruncationReport(0, 0, 0)
        logger.info("%s split: %s", split_name, report)
        return Dataset.from_dict({"input_ids": [], "labels": []}, features=TOKENIZED_FEATURES), report

    def encode(row: dict) -> list[dict]:
        encoding = encode_chat(
            tokenizer,
            row["messages"],
            history_rewrite=history_rewrite,
            train_on_prompt=train_on_prompt,
            template_kwargs=chat_template_kwargs(row),
        )
        examples = []
        for example in encoding.examples:
            length = len(example["input_ids"])
            if max_length is not None and length > max_length:
                example = {key: values[:max_length] for key, values in example.items()}
            has_trained = any(label != IGNORE_INDEX for label in example["labels"])
            examples.append({**example, "full_length": length, "has_trained": has_trained, "layout": encoding.layout})
        return examples

    encoded = encode_rows(
        dataset,
        encode,
        empty={"input_ids": [], "labels": [], "full_length": 0, "has_trained": False, "layout": ""},
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} chats",
    )
    examples = encoded.examples
    rows_and_layouts = list(zip(examples["row"], examples["layout"], strict=True))
    truncated = sum(1 for n in examples["full_length"] if max_length is not None and n > max_length)
    keep = [i for i, ok in enumerate(examples["has_trained"]) if ok]
    report = TruncationReport(
        len(examples),
        truncated,
        len(examples) - len(keep),
        expanded_rows=len({row for row, layout in rows_and_layouts if layout == "expanded"}),
        last_turn_rows=len({row for row, layout in rows_and_layouts if layout == "last_turn"}),
        refused_rows=sum(encoded.refused.values()),
    )
    if len(keep) < len(examples):
        examples = examples.select(keep)
    logger.info("%s split: %s", split_name, report)
    return examples.select_columns(["input_ids", "labels"]), report
