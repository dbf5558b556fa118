"""Value rows and their tokens: `to_trace` reads a row of any accepted form into one `StepTrace` (it picks the form by
the row's columns; the readers are in `alignment.value.formats`) and `value_row_problem` is its check for
`load_mixture`; each trace is laid out as `input_ids`, `labels` and `Q` (`encode_steps`, `tokenize_trace`,
`tokenize_traces`), and `ValueCollator` pads them. The forms and the layout are described in `alignment.value`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

from alignment.chat.templates import render_prompt
from alignment.chat.turns import IGNORE_INDEX, continuation_ids, inference_ids
from alignment.data.encoding import encode_rows
from alignment.data.rows import RowProblem
from alignment.value.formats import FORMS, Q_IGNORE, StepTrace

logger = logging.getLogger(__name__)


def to_trace(row: dict) -> StepTrace | RowProblem:
    """The row as a `StepTrace`, or the reason it is not a valid step-value row (the forms: see `alignment.value`)."""
    forms = [(name, [c for c in columns if c in row], read) for name, columns, read in FORMS if row.keys() & columns]
    if len(forms) != 1:
        found = " and ".join(f"{_columns(present)} ({name})" for name, present, _ in forms)
        return RowProblem(
            "unknown form",
            "a row needs the columns of exactly one form: "
            + "; ".join(f"{_columns(columns)} ({name})" for name, columns, _ in FORMS)
            + f"; this row has {found or 'none of them'} (the row has: {', '.join(row)})",
        )
    return forms[0][2](row)


def _columns(names: Sequence[str]) -> str:
    return " and ".join(f"`{name}`" for name in names)


def value_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator for value rows: None when the row is a valid step trace."""
    trace = to_trace(row)
    return trace if isinstance(trace, RowProblem) else None


def step_text(step: str) -> str:
    """How a step is written after the prompt: stripped, ending in one newline."""
    return step.strip() + "\n"


def encode_steps(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], steps: Sequence[str]
) -> tuple[list[int], int, list[int]]:
    """`(input_ids, prompt_length, step_ends)`: the prompt's inference ids (`alignment.chat.turns`), then each step's
    ids as the continuation of everything before it, and the index of each step's last token. Used by training and by
    `score_steps`, so both read the same positions.

    Each step's ids are those of `prompt + steps[:k + 1]` after the ids of `prompt + steps[:k]`, proved a prefix, so a
    step ends on a token boundary and the ids of the first k steps never depend on later ones (a search scores a
    partial solution, then extends it); where a token straddles two steps, the step is tokenized on its own (as
    generation appends it) and must decode to itself.

    Raises:
        ChatTemplateError: a step has no exact ids after the text before it (names the step).
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = render_prompt(tokenizer, messages)
    input_ids = inference_ids(tokenizer, text)
    prompt_length, step_ends = len(input_ids), []
    for number, step in enumerate(steps):
        ids, _ = continuation_ids(tokenizer, input_ids, text, step_text(step), f"step {number}")
        text += step_text(step)
        input_ids = input_ids + ids
        step_ends.append(len(input_ids) - 1)
    return input_ids, prompt_length, step_ends


def tokenize_trace(
    tokenizer: PreTrainedTokenizerBase,
    trace: StepTrace,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
) -> dict[str, Any]:
    """`input_ids`, `labels`, `Q` and `response_mask` (1 on the steps' tokens; see `alignment.value`), plus `steps` and
    `steps_kept` (step targets before and after the cut) and `truncated`."""
    input_ids, prompt_length, step_ends = encode_steps(tokenizer, trace.prompt, trace.steps)
    response_labels = (
        input_ids[prompt_length:] if trace.positive else [IGNORE_INDEX] * (len(input_ids) - prompt_length)
    )
    prompt_labels = input_ids[:prompt_length] if train_on_prompt else [IGNORE_INDEX] * prompt_length
    labels = prompt_labels + response_labels
    response_mask = [0] * prompt_length + [1] * (len(input_ids) - prompt_length)
    q = [Q_IGNORE] * len(input_ids)
    for end, value in zip(step_ends, trace.q, strict=True):
        q[end] = value
    # Only steps with a Q target count (a released ReST-MCTS* row has one, at its last step).
    target_ends = [end for end, value in zip(step_ends, trace.q, strict=True) if value != Q_IGNORE]
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels, q = input_ids[:max_length], labels[:max_length], q[:max_length]
        response_mask = response_mask[:max_length]
    steps_kept = sum(1 for end in target_ends if not truncated or end < max_length)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "Q": q,
        "response_mask": response_mask,
        "steps": len(target_ends),
        "steps_kept": steps_kept,
        "truncated": truncated,
    }


_TOKENIZED_FEATURES = Features(
    {
        "input_ids": List(Value("int64")),
        "labels": List(Value("int64")),
        "Q": List(Value("float32")),
        "response_mask": List(Value("int64")),
        "steps": Value("int64"),
        "steps_kept": Value("int64"),
        "truncated": Value("bool"),
        "useful": Value("bool"),
    }
)


@dataclass
class ValueTruncationReport:
    """What `max_length` did to one split."""

    examples: int
    truncated: int
    steps: int
    steps_lost: int
    dropped: int

    def __str__(self) -> str:
        return (
            f"{self.truncated}/{self.examples} traces truncated to max_length, {self.steps_lost}/{self.steps} step "
            f"targets lost, {self.dropped} traces left with no target and no label and dropped"
        )

    def metrics(self, split: str) -> dict[str, int]:
        """The counts as metrics named for `split` (written with the run's other metrics)."""
        return {
            f"{split}_traces_truncated": self.truncated,
            f"{split}_steps_lost_to_truncation": self.steps_lost,
            f"{split}_traces_dropped": self.dropped,
        }


def tokenize_traces(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, ValueTruncationReport]:
    """Map value rows to `input_ids`/`labels`/`Q`, cut to `max_length`, and drop rows that teach nothing.

    A trace without exact ids (`encode_steps`) is an `InvalidRowError` naming the source (`source_of(row)`), split,
    row and step, or with `skip_invalid_rows` is dropped and counted by reason.
    """

    def encode(row: dict) -> list[dict]:
        trace = to_trace(row)
        if isinstance(trace, RowProblem):
            raise ValueError(f"Invalid value row ({split_name}): {trace}")
        encoded = tokenize_trace(tokenizer, trace, max_length=max_length, train_on_prompt=train_on_prompt)
        encoded["useful"] = encoded["steps_kept"] > 0 or any(label != IGNORE_INDEX for label in encoded["labels"])
        return [encoded]

    empty = {
        "input_ids": [],
        "labels": [],
        "Q": [],
        "response_mask": [],
        "steps": 0,
        "steps_kept": 0,
        "truncated": False,
        "useful": False,
    }
    encoded = encode_rows(
        dataset,
        encode,
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} traces",
        # Explicit: otherwise `labels` would keep the input's type (TRL stepwise rows have boolean `labels`).
        features=_TOKENIZED_FEATURES,
    ).examples.remove_columns("row")
    keep = [i for i, useful in enumerate(encoded["useful"]) if useful]
    report = ValueTruncationReport(
        examples=len(encoded),
        truncated=sum(encoded["truncated"]),
        steps=sum(encoded["steps"]),
        steps_lost=sum(encoded["steps"]) - sum(encoded["steps_kept"]),
        dropped=len(encoded) - len(keep),
    )
    if len(keep) < len(encoded):
        encoded = encoded.select(keep)
    logger.info("%s split: %s", split_name, report)
    return encoded.select_columns(["input_ids", "labels", "Q", "response_mask"]), report


@dataclass
class ValueCollator:
    """Pad `input_ids` (pad token), `attention_mask` (0), `response_mask` (0), `labels` (-100) and `Q` (`Q_IGNORE`) on
    one side.

    `Q` is padded exactly like `labels`; rows without `labels`/`Q` (scoring) get only ids and the two masks.
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "left"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": self._pad([f["input_ids"] for f in features], self.pad_token_id, width, torch.long),
            "attention_mask": self._pad([[1] * len(f["input_ids"]) for f in features], 0, width, torch.long),
            "response_mask": self._pad([f["response_mask"] for f in features], 0, width, torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = self._pad([f["labels"] for f in features], IGNORE_INDEX, width, torch.long)
        if "Q" in features[0]:
            batch["Q"] = self._pad([f["Q"] for f in features], Q_IGNORE, width, torch.float32)
        return batch

    def _pad(self, rows: list[list], value: float, width: int, dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=dtype)
        for i, row in enumerate(rows):
            if not len(row):
                continue
            if self.padding_side == "left":
                out[i, width - len(row) :] = torch.as_tensor(row, dtype=dtype)
            else:
                out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
        return out
