"""KTO rows: one prompt, one completion and its label (desirable or not), checked and turned into token ids.

Accepted forms of a row (`alignment.data.formats` converts LLaMA-Factory's `kto_tag` rows and split preference pairs
to the second): TRL's strings, `{"prompt": "2 + 2?", "completion": "4", "label": true}` (the prompt one user turn,
the completion the assistant's reply), or conversations, `prompt` a list of messages ending with a user turn and
`completion` a list holding one assistant message.

Token ids follow the inference invariant (`alignment.chat.turns`): `prompt_ids` are what inference feeds the model,
generation prompt included, and `completion_ids` exactly the ids it generates after them, up to and including the
end-of-turn token. The completion keeps its start and is cut to `max_length - prompt length`; a row whose prompt
leaves no room for a completion token is dropped; both are counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.chat.turns import encode_prompt_replies
from alignment.data.encoding import encode_rows
from alignment.data.rows import RowProblem, conversation_problem, describe

logger = logging.getLogger(__name__)

UNPAIRED_COLUMNS = ("prompt", "completion", "label")


@dataclass
class UnpairedRow:
    """One KTO row in the common form: the prompt turns, the assistant's completion and whether it is desirable."""

    prompt: list[dict]
    completion: dict
    label: bool


def to_unpaired(row: dict) -> UnpairedRow | RowProblem:
    """The row as an `UnpairedRow`, or the reason it is not a valid KTO row."""
    missing = [column for column in UNPAIRED_COLUMNS if column not in row]
    if missing:
        return RowProblem("missing column", f"no {' or '.join(missing)} column (the row has: {', '.join(row)})")
    prompt, completion, label = row["prompt"], row["completion"], row["label"]
    if not isinstance(label, bool):
        return RowProblem("malformed label", f"label is {describe(label)}, expected true or false")
    if isinstance(prompt, str) and isinstance(completion, str):
        prompt, completion = [{"role": "user", "content": prompt}], [{"role": "assistant", "content": completion}]
    elif not (isinstance(prompt, list) and isinstance(completion, list)):
        return RowProblem(
            "malformed row",
            f"prompt and completion must both be strings or both be message lists, got {type(prompt).__name__} and "
            f"{type(completion).__name__}",
        )
    problem = conversation_problem([*prompt, *completion])
    if problem is not None:
        return problem
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        return RowProblem("malformed completion", "completion must be exactly one assistant message")
    if not prompt or prompt[-1]["role"] != "user":
        return RowProblem("malformed prompt", "the prompt must end with a user turn")
    return UnpairedRow(prompt, completion[0], label)


def unpaired_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator for KTO rows: None when the row is valid."""
    unpaired = to_unpaired(row)
    return unpaired if isinstance(unpaired, RowProblem) else None


@dataclass
class UnpairedTruncationReport:
    """What tokenization and truncation did to one split of KTO rows, and its label counts (after dropping)."""

    rows: int
    completions_truncated: int = 0
    dropped_no_completion_room: int = 0
    desirable: int = 0
    undesirable: int = 0

    def __str__(self) -> str:
        return (
            f"{self.rows} rows: {self.completions_truncated} completions cut (max_length), dropped "
            f"{self.dropped_no_completion_room} whose prompt left no room for a completion token -> "
            f"{self.desirable} desirable and {self.undesirable} undesirable rows"
        )


def _encode_unpaired(tokenizer: PreTrainedTokenizerBase, row: dict, max_length: int | None) -> dict:
    unpaired = to_unpaired(row)
    if isinstance(unpaired, RowProblem):
        raise ValueError(f"unchecked KTO row (check it with `unpaired_row_problem`): {unpaired}")
    encoded = encode_prompt_replies(tokenizer, unpaired.prompt, [unpaired.completion])
    prompt_ids, (completion_ids,) = encoded.prompt_ids, encoded.replies
    room = None if max_length is None else max_length - len(prompt_ids)
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids if room is None else completion_ids[: max(room, 0)],
        "label": unpaired.label,
        "cut": room is not None and len(completion_ids) > room,
        "no_room": room is not None and room <= 0,
    }


def tokenize_unpaired(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, UnpairedTruncationReport]:
    """Map checked KTO rows to `prompt_ids`, `completion_ids` and `label` (module doc). A row without exact ids is
    an `InvalidRowError` naming its source, split and row, or with `skip_invalid_rows` is dropped and counted."""
    empty = {"prompt_ids": [], "completion_ids": [], "label": False, "cut": False, "no_room": False}
    encoded = encode_rows(
        dataset,
        lambda row: [_encode_unpaired(tokenizer, row, max_length)],
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} KTO rows",
    ).examples.remove_columns("row")
    report = UnpairedTruncationReport(
        rows=len(encoded),
        completions_truncated=sum(a and not b for a, b in zip(encoded["cut"], encoded["no_room"], strict=True)),
        dropped_no_completion_room=sum(encoded["no_room"]),
    )
    if report.dropped_no_completion_room:
        encoded = encoded.select([i for i, no_room in enumerate(encoded["no_room"]) if not no_room])
        logger.warning("%s split: %d rows dropped by truncation", split_name, report.dropped_no_completion_room)
    report.desirable = sum(encoded["label"])
    report.undesirable = len(encoded) - report.desirable
    logger.info("%s split: %s", split_name, report)
    return encoded.remove_columns(["cut", "no_room"]), report
