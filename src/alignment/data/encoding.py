"""Rows to token ids for every stage: one map that turns a row the chat template refuses into a named error or a
counted drop, never a traceback deep inside `datasets`.

Each stage gives `encode_rows` its own encoder (row -> list of examples: one for a pair or a trace, one or more for a
chat that is expanded into its turns' inference contexts). A row whose encoder raises `ChatTemplateError` is, without
`skip_invalid_rows`, an `InvalidRowError` naming the source, split, row and reason (the turn and the template
behaviour are in the reason), exactly as a malformed row is at loading; with it, the row is dropped, counted by the
refusal's kind and logged once per kind with its first example.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset, Features, Value

from alignment.chat.templates import ChatTemplateError
from alignment.data.rows import InvalidRowError

logger = logging.getLogger(__name__)


@dataclass
class EncodedRows:
    """The examples of a split (with a `row` column: the 0-based row each came from) and the refusals dropped."""

    examples: Dataset
    refused: Counter[str]


def encode_rows(
    dataset: Dataset,
    encode: Callable[[dict], list[dict]],
    *,
    empty: dict,
    split_name: str,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    desc: str,
    features: Features | None = None,
) -> EncodedRows:
    """Map every row through `encode` (row -> its examples); settle refusals as the module doc says.

    `empty` is a placeholder example with the encoder's columns (it stands for a refused row until it is dropped).
    `features`, when given, types the encoder's columns (`row` is added).
    """

    def encode_batch(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {key: [] for key in (*empty, "row", "refusal")}
        for position, index in enumerate(indices):
            row = {column: values[position] for column, values in batch.items()}
            try:
                examples, refusal = encode(row), ""
            except ChatTemplateError as err:
                if err.of_every_row:
                    raise
                examples, refusal = [empty], f"{err.kind}\t{err}"
            for example in examples:
                for key in empty:
                    out[key].append(example[key])
                out["row"].append(index)
                out["refusal"].append(refusal)
        return out

    if features is not None:
        features = Features({**features, "row": Value("int64"), "refusal": Value("string")})
    encoded = dataset.map(
        encode_batch,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
        num_proc=num_proc,
        desc=desc,
    )
    refusals = [
        (row, *refusal.split("\t", 1))
        for row, refusal in zip(encoded["row"], encoded["refusal"], strict=True)
        if refusal
    ]
    name = source_of if source_of is not None else (lambda row: "the mixture")
    if refusals and not skip_invalid_rows:
        row, _, reason = refusals[0]
        raise InvalidRowError(name(row), split_name, row, reason)
    counts: Counter[str] = Counter(kind for _, kind, _ in refusals)
    if refusals:
        first: dict[str, str] = {}
        for row, kind, reason in refusals:
            first.setdefault(kind, f"{name(row)} row {row}: {reason}")
        for kind, count in counts.most_common():
            logger.warning(
                "%s split: dropped %d rows the chat template refused (%s); first: %s",
                split_name,
                count,
                kind,
                first[kind],
            )
        encoded = encoded.filter(lambda refusal: not refusal, input_columns="refusal", desc="Dropping refused rows")
    return EncodedRows(encoded.remove_columns("refusal"), counts)


__all__ = ["EncodedRows", "encode_rows"]


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of positions that would be padding if `lengths` were batched in order, `batch_size` at a time."""
    padded = real = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0
