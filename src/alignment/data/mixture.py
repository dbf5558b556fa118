"""`load_mixture`: a recipe's `dataset_mixer` read, checked, subsampled and mixed into "train" and "test" splits.

It holds the column checks,
the dropping or refusing of invalid rows, the seeded sampling and hold-out, and the reports of what each step did;
both `dataset_mixer` forms are parsed into sources by `alignment.data.sources`.
The steps and their order are described in the `alignment.data` package doc; sources are opened by
`alignment.data.readers`, and rows judged by the validators of `alignment.data.rows` (or a stage's own).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from alignment.data.conversion import (
    PROBLEM_COLUMN,
    ChatRenderer,
    add_optional_columns,
    as_json_where_any,
    convert_source,
    pop_problem,
    target_for,
)
from alignment.data.readers import align_features, concatenate, open_source
from alignment.data.rows import DataError, InvalidRowError, problem_kind
from alignment.data.sources import Source, check_share, parse_mixer

logger = logging.getLogger(__name__)

_VALIDATION_BATCH = 1000


@dataclass
class SourceReport:
    """What happened to one source: rows read per split, invalid rows dropped by kind, and the rows it contributed."""

    source: str
    fraction: float
    read: dict[str, int] = field(default_factory=dict)
    invalid: Counter[str] = field(default_factory=Counter)
    invalid_examples: dict[str, str] = field(default_factory=dict)
    kept: int = 0
    held_out: int = 0
    train: int = 0
    test: int = 0

    def __str__(self) -> str:
        read = ", ".join(f"{split}={count}" for split, count in self.read.items())
        parts = [f"{self.source}: read {read}"]
        if self.invalid:
            by_kind = ", ".join(f"{kind}: {count}" for kind, count in self.invalid.most_common())
            parts.append(f"dropped {sum(self.invalid.values())} invalid ({by_kind})")
        parts.append(f"fraction {self.fraction:g} kept {self.kept} train rows")
        if self.held_out:
            parts.append(f"held out {self.held_out} as test")
        return "; ".join(parts) + f" -> train {self.train}, test {self.test}"


@dataclass
class MixtureReport:
    """The per-source reports of one `load_mixture` call, in recipe order."""

    sources: list[SourceReport]

    @property
    def invalid(self) -> Counter[str]:
        """Invalid rows dropped, by kind, over all sources."""
        return sum((source.invalid for source in self.sources), Counter())


class Mixture(DatasetDict):
    """The `DatasetDict` returned by `load_mixture`, with the counts behind it in `report`.

    Methods such as `map` return a plain `DatasetDict`: keep a reference to the mixture if the report is needed.
    """

    report: MixtureReport
    # Per split, the sources its rows come from, in order: (source, number of rows).
    blocks: dict[str, list[tuple[str, int]]]

    def source_of(self, split: str, row: int) -> str:
        """The source that row `row` (0-based, as in `mixture[split][row]`) of `split` comes from."""
        for source, rows in self.blocks.get(split, []):
            if row < rows:
                return source
            row -= rows
        raise IndexError(f"{split} has no row {row}")


class MixtureSettings(Protocol):
    """The recipe keys `load_mixture` reads (`alignment.recipes.arguments.DataArguments` has them)."""

    dataset_mixer: dict[str, float] | list[dict[str, Any]] | None
    dataset_splits: list[str]
    dataset_config: str | None
    test_split_size: float
    seed: int
    skip_invalid_rows: bool
    txt_documents: str

    def source_names(self) -> list[str]: ...


def load_mixture(
    data_args: MixtureSettings,
    *,
    validate_row: Callable[[dict], str | None] | None = None,
    required_columns: list[str] | None = None,
    render_chat: ChatRenderer | None = None,
) -> Mixture:
    """Load, check, subsample and mix `data_args.dataset_mixer` into "train" and "test" splits (see `alignment.data`).

    `fraction` (Zephyr form) or `weight` (list form) is the share of that source's train rows kept, in (0, 1]:
    `round_half_up(share * rows)` rows, at least one, chosen by `data_args.seed` (the same seed keeps the same rows,
    and a smaller share keeps a subset of a larger one) and left in their original order. Test splits are kept whole.

    A source without a test split holds out `round_half_up(test_split_size * kept)` of its kept train rows (seeded)
    as its test split. Zephyr form: that is a source none of whose `dataset_splits` test splits exist. List form: the
    listed entries are the splits you get, so train entries are held out from only when no entry reads a test split.
    "test" may be empty (0 rows) when no source yields test rows.

    `validate_row(row)` returns None for a good row or a reason (`RowProblem` or a plain string). `required_columns`
    must be present in every source after `columns` selection and format conversion; they also name the stage's
    canonical row (`alignment.data.conversion.target_for`: `messages` for SFT, `chosen`/`rejected` for preferences,
    `text` for raw text), to which each source's format is converted, or for which it is detected. `render_chat`
    turns a chat into one document's text for the `text` row (`alignment.data.conversion.text_target`).
    """
    sources = parse_mixer(data_args.dataset_mixer, data_args.dataset_splits, data_args.dataset_config)
    check_share(data_args.test_split_size, "`test_split_size`", low_inclusive=True, high_inclusive=False)
    hold_out_any = any(not source.explicit for source in sources) or not any(s.test_splits for s in sources)

    target = target_for(required_columns, render_chat)
    loaded = [
        convert_source(
            source.where,
            _read_source(source, data_args.skip_invalid_rows, data_args.txt_documents),
            target,
            source.format,
            source.columns_map,
            source.tags,
        )
        for source in sources
    ]
    if target is not None:
        add_optional_columns(loaded, target)
    _check_columns(sources, loaded, required_columns or [])

    reports, train_parts, test_parts = [], [], []
    for source, splits in zip(sources, loaded, strict=True):
        report = SourceReport(source=source.path, fraction=source.fraction)
        rng = np.random.default_rng(data_args.seed)
        checked = {}
        for split, dataset in splits.items():
            report.read[split] = len(dataset) + len(source.dropped.get(split, []))
            for row, reason in source.dropped.get(split, []):
                _count_invalid(report, split, row, reason)
            checked[split] = _drop_invalid(
                dataset, source.path, split, validate_row, data_args.skip_invalid_rows, report
            )
        train = [checked[split] for split in source.train_splits if split in checked]
        test = [checked[split] for split in source.test_splits if split in checked]
        train = concatenate(train, [source.path] * len(train)) if train else None
        if train is not None:
            train = train.select(_sample(len(train), source.fraction, rng, at_least_one=True))
            report.kept = len(train)
            if not test and hold_out_any and data_args.test_split_size > 0:
                order = rng.permutation(len(train))
                report.held_out = _round_half_up(data_args.test_split_size * len(train))
                test = [train.select(np.sort(order[: report.held_out]))]
                train = train.select(np.sort(order[report.held_out :]))
            report.train = len(train)
            train_parts.append((source.path, train))
        for part in test:
            report.test += len(part)
            test_parts.append((source.path, part))
        logger.info("%s", report)
        for kind, example in report.invalid_examples.items():
            logger.info("%s: first '%s' %s", source.path, kind, example)
        reports.append(report)

    if not any(len(part) for _, part in train_parts):
        raise DataError(f"The mixture has no training rows (sources: {', '.join(data_args.source_names())}).")
    parts = train_parts + test_parts
    aligned = align_features(as_json_where_any([part for _, part in parts]), [label for label, _ in parts])
    train_set = concatenate_datasets(aligned[: len(train_parts)])
    test_set = concatenate_datasets(aligned[len(train_parts) :]) if test_parts else train_set.select([])
    mixture = Mixture({"train": train_set, "test": test_set})
    mixture.report = MixtureReport(reports)
    mixture.blocks = {
        "train": [(label, len(part)) for label, part in train_parts],
        "test": [(label, len(part)) for label, part in test_parts],
    }
    logger.info("Mixture: train %d rows, test %d rows from %d sources", len(train_set), len(test_set), len(reports))
    if not len(test_set):
        logger.warning("The mixture has no test rows: no source has a test split and `test_split_size` held none out")
    return mixture


# Reading sources


def _read_source(source: Source, skip_invalid_rows: bool, txt_documents: str) -> dict[str, Dataset]:
    """The source's requested splits that exist, with `columns` selected; a missing required split is an error."""
    available, lone = open_source(
        source.path,
        source.where,
        name=source.name,
        data_files=source.data_files,
        skip_invalid_rows=skip_invalid_rows,
        txt_documents=txt_documents,
    )
    wanted = source.train_splits + ([] if lone and not source.explicit else source.test_splits)
    reads = {}
    for split in wanted:
        if lone:
            reads[split] = available["train"]()
            break
        if split in available:
            reads[split] = available[split]()
        elif split in source.train_splits or source.explicit:
            raise DataError(f"{source.where}: no split '{split}' (it has: {', '.join(available) or 'none'}).")
    splits = {split: read.dataset for split, read in reads.items()}
    source.dropped = {split: read.dropped for split, read in reads.items()}
    if source.columns is not None:
        for split, dataset in splits.items():
            missing = [column for column in source.columns if column not in dataset.column_names]
            if missing:
                raise DataError(
                    f"{source.where} (split '{split}'): `columns` {missing} not found (it has: "
                    f"{', '.join(dataset.column_names)})."
                )
            splits[split] = dataset.select_columns(source.columns)
    return splits


# Checking, sampling and mixing


def _check_columns(sources: list[Source], loaded: list[dict[str, Dataset]], required: list[str]) -> None:
    """Every source must have the required columns, and all sources exactly the same columns."""
    seen = []
    for source, splits in zip(sources, loaded, strict=True):
        for split, dataset in splits.items():
            columns = [column for column in dataset.column_names if column != PROBLEM_COLUMN]
            missing = [column for column in required if column not in columns]
            if missing:
                raise DataError(
                    f"{source.where} (split '{split}'): missing required column {', '.join(map(repr, missing))} "
                    f"(it has: {', '.join(columns) or 'no columns'})."
                )
            seen.append((f"{source.path} ({split})", columns))
    if len({frozenset(columns) for _, columns in seen}) > 1:
        listing = "\n".join(f"  {label}: {', '.join(columns)}" for label, columns in seen)
        raise DataError(
            "Sources have different columns, so they cannot be mixed (select the shared ones with `columns` in the "
            f"list form of `dataset_mixer`):\n{listing}"
        )


def _drop_invalid(
    dataset: Dataset,
    source: str,
    split: str,
    validate_row: Callable[[dict], str | None] | None,
    skip: bool,
    report: SourceReport,
) -> Dataset:
    """Check each row; raise `InvalidRowError` at the first bad one, or (with `skip`) drop and count them by kind.

    A converted row's own problem (`PROBLEM_COLUMN`, removed here) comes first: such a row has no canonical form to
    validate.
    """
    converted = PROBLEM_COLUMN in dataset.column_names
    if validate_row is None and not converted:
        return dataset
    keep, index = [], 0
    for batch in dataset.iter(batch_size=_VALIDATION_BATCH):
        for values in zip(*batch.values(), strict=True):
            row = dict(zip(batch, values, strict=True))
            reason = pop_problem(row)
            if reason is None and validate_row is not None:
                reason = validate_row(row)
            if reason is None:
                keep.append(index)
            elif not skip:
                raise InvalidRowError(source, split, index, reason)
            else:
                _count_invalid(report, split, index, reason)
            index += 1
    dataset = dataset if len(keep) == len(dataset) else dataset.select(keep)
    return dataset.remove_columns(PROBLEM_COLUMN) if converted else dataset


def _count_invalid(report: SourceReport, split: str, row: int, reason: str) -> None:
    """Count dropped row `row` of `split` in `report` by its kind, keeping each kind's first one as its example."""
    kind = problem_kind(reason)
    report.invalid[kind] += 1
    report.invalid_examples.setdefault(kind, f"row {row} (split '{split}'): {reason}")


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _sample(rows: int, share: float, rng: np.random.Generator, *, at_least_one: bool) -> np.ndarray:
    """Sorted indices of `round_half_up(share * rows)` rows drawn without replacement (a seeded permutation prefix)."""
    count = _round_half_up(share * rows)
    if at_least_one and rows:
        count = max(count, 1)
    return np.sort(rng.permutation(rows)[:count])
