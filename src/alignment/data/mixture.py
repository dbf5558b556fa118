"""`load_mixture`: a recipe's `dataset_mixer` read, checked, subsampled and mixed into "train" and "test" splits.

It holds the parsing of both `dataset_mixer` forms (`{source: fraction}` and the list of entries), the column checks,
the dropping or refusing of invalid rows, the seeded sampling and hold-out, and the reports of what each step did.
The steps and their order are described in the `alignment.data` package doc; sources are opened by
`alignment.data.readers`, and rows judged by the validators of `alignment.data.rows` (or a stage's own).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from alignment.configs import DataArguments
from alignment.data.conversion import (
    PROBLEM_COLUMN,
    add_optional_columns,
    as_json_where_any,
    convert_source,
    pop_problem,
    target_for,
)
from alignment.data.readers import align_features, concatenate, open_source
from alignment.data.rows import DataError, InvalidRowError, describe, problem_kind

logger = logging.getLogger(__name__)

ENTRY_KEYS = ("path", "split", "columns", "weight", "name", "data_files", "format", "columns_map", "tags")
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


@dataclass
class _Source:
    """One source of the mixture, as the recipe asks for it (one mixer key, or one list entry)."""

    path: str
    where: str
    fraction: float
    train_splits: list[str]
    test_splits: list[str]
    explicit: bool
    columns: list[str] | None = None
    name: str | None = None
    data_files: Any = None
    format: str | None = None
    columns_map: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    # The records its reader dropped (a JSON file cut off inside one, `skip_invalid_rows`), by split: index, reason.
    dropped: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


def load_mixture(
    data_args: DataArguments,
    *,
    validate_row: Callable[[dict], str | None] | None = None,
    required_columns: list[str] | None = None,
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
    canonical row (`alignment.data.conversion.target_for`: `messages` for SFT, `chosen`/`rejected` for preferences), to
    which each source's format is converted, or for which it is detected.
    """
    sources = _parse_mixer(data_args)
    _check_share(data_args.test_split_size, "`test_split_size`", low_inclusive=True, high_inclusive=False)
    hold_out_any = any(not source.explicit for source in sources) or not any(s.test_splits for s in sources)

    target = target_for(required_columns)
    loaded = [
        convert_source(
            source.where,
            _read_source(source, data_args.skip_invalid_rows),
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


# Recipe parsing


def _parse_mixer(data_args: DataArguments) -> list[_Source]:
    """Check `dataset_mixer` (either form) and turn it into one `_Source` per mixer key or list entry."""
    mixer = data_args.dataset_mixer
    if not mixer:
        raise DataError(
            "`dataset_mixer` is empty: give `{hub id or local path: fraction}` or a list of "
            f"`{{{', '.join(ENTRY_KEYS)}}}` entries."
        )
    if isinstance(mixer, dict):
        sides = {split: _split_side(split, "`dataset_splits`") for split in data_args.dataset_splits}
        train_splits = [split for split, side in sides.items() if side == "train"]
        if not train_splits:
            raise DataError(f"`dataset_splits: {data_args.dataset_splits}` names no train split.")
        return [
            _Source(
                path=str(path),
                where=f"dataset_mixer[{path!r}]",
                fraction=_check_share(fraction, f"dataset_mixer[{path!r}]"),
                train_splits=train_splits,
                test_splits=[split for split, side in sides.items() if side == "test"],
                explicit=False,
                name=data_args.dataset_config,
            )
            for path, fraction in mixer.items()
        ]
    if not isinstance(mixer, list):
        raise DataError(f"`dataset_mixer` must be a dict or a list, not {describe(mixer)}.")
    if data_args.dataset_splits != DataArguments().dataset_splits or data_args.dataset_config is not None:
        raise DataError(
            "`dataset_splits` and `dataset_config` apply to the dict form of `dataset_mixer` only: in the list form "
            "give each entry its own `split` and `name`."
        )
    return [_parse_entry(entry, index) for index, entry in enumerate(mixer)]


def _parse_entry(entry: Any, index: int) -> _Source:
    """Check one list-form entry strictly: known keys only, a path, a split, string columns, a valid weight."""
    where = f"dataset_mixer[{index}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} must be a dict with keys {', '.join(ENTRY_KEYS)}, not {describe(entry)}.")
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(f"{where}: unknown key '{key}' ({hint}valid keys: {', '.join(ENTRY_KEYS)}).")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise DataError(f"{where}: `path` (a hub id or a local path) is required.")
    where = f"{where} ({path})"
    split = entry.get("split", "train")
    if not isinstance(split, str):
        raise DataError(f"{where}: `split` must be one split name, not {describe(split)}.")
    side = _split_side(split, where)
    columns = entry.get("columns")
    if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
        raise DataError(f"{where}: `columns` must be a list of column names, not {describe(columns)}.")
    format_ = entry.get("format")
    if format_ is not None and not isinstance(format_, str):
        raise DataError(f"{where}: `format` must be a format name, not {describe(format_)}.")
    for key, what in (("columns_map", "role: column"), ("tags", "tag: value")):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise DataError(f"{where}: `{key}` must map {what} names (strings), not {describe(value)}.")
        if format_ is None:
            raise DataError(f"{where}: `{key}` names the columns of a format: set `format` too.")
    weight = _check_share(entry.get("weight", 1.0), where)
    if side == "test" and weight != 1:
        raise DataError(f"{where}: `weight: {weight}` on test split '{split}': test splits are kept whole.")
    return _Source(
        path=path,
        where=where,
        fraction=weight,
        train_splits=[split] if side == "train" else [],
        test_splits=[split] if side == "test" else [],
        explicit=True,
        columns=columns,
        name=entry.get("name"),
        data_files=entry.get("data_files"),
        format=format_,
        columns_map=entry.get("columns_map"),
        tags=entry.get("tags"),
    )


def split_side(split: str) -> str | None:
    """The side a split feeds: "train" if its name contains "train", else "test" if it contains "test", else None."""
    return "train" if "train" in split else "test" if "test" in split else None


def _split_side(split: str, where: str) -> str:
    """`split_side`, or a `DataError` naming `where` for a split that feeds neither side."""
    side = split_side(split)
    if side is None:
        raise DataError(f"{where}: split '{split}' is neither a train nor a test split (its name must contain one).")
    return side


def _check_share(value: Any, where: str, *, low_inclusive: bool = False, high_inclusive: bool = True) -> float:
    """Return `value` if it is a number in the range (0, 1] (or as the bounds say), else raise naming `where`."""
    low, high = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
    valid = f"a number in {low}0, 1{high}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        is_number
        and math.isfinite(value)
        and (value >= 0 if low_inclusive else value > 0)
        and (value <= 1 if high_inclusive else value < 1)
    ):
        return value
    what = "the share of the source's rows kept" if not low_inclusive else "the share of train rows held out"
    hint = " (write it as a plain decimal: YAML reads `1e-1` as a string)" if _is_numeric_string(value) else ""
    raise DataError(f"{where}: {value!r} is not valid; it is {what}, {valid}{hint}.")


# Reading sources


def _read_source(source: _Source, skip_invalid_rows: bool) -> dict[str, Dataset]:
    """The source's requested splits that exist, with `columns` selected; a missing required split is an error."""
    available, lone = open_source(
        source.path, source.where, name=source.name, data_files=source.data_files, skip_invalid_rows=skip_invalid_rows
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


def _check_columns(sources: list[_Source], loaded: list[dict[str, Dataset]], required: list[str]) -> None:
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


def _is_numeric_string(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)
