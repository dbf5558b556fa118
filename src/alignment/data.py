"""Read a recipe's `dataset_mixer` into one `DatasetDict` with "train" and "test" splits, checking every row.

Sources are hub ids or local paths: a .json/.jsonl/.parquet file (a JSON file holds JSON Lines or one array of rows,
as UTF-8 with or without a byte-order mark, whatever its extension), a folder written by `save_to_disk` (a `Dataset`
or a `DatasetDict`), or a folder of such files, where a file's name is its split (`train.jsonl`, `test_sft.parquet`,
`train-00000-of-00002.parquet`). A lone file or saved `Dataset` has no split names of its own: in the Zephyr form it
is the source's train split, in the list form it is the entry's split. A JSON file is parsed strictly before anything
else reads it: invalid JSON, bytes that are not UTF-8 or an empty file stop with the file, line (and byte) named.

Each source is processed on its own, in this order, so that every count and every error names the source:

1. read the requested splits and select `columns` (list form);
2. check `required_columns`, then that all sources have the same columns (mixing needs one schema);
3. check every row with `validate_row` (train and test splits, before any subsampling, so a bad row is named by its
   index in the source as written): raise `InvalidRowError` at the first bad row, or with `skip_invalid_rows` drop
   it and count it by kind;
4. keep the source's `fraction`/`weight` of its train rows, sampled by `seed` (test splits are always kept whole, as
   in the original handbook: evaluation should not depend on how the training mixture is weighted);
5. when the source has no test split, hold out `test_split_size` of those kept train rows as its test split.

The counts of every step are logged at INFO, one line per source, and returned in `Mixture.report`.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from alignment.configs import DataArguments

logger = logging.getLogger(__name__)

ENTRY_KEYS = ("path", "split", "columns", "weight", "name", "data_files")
VALID_ROLES = ("system", "user", "assistant")
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
_VALIDATION_BATCH = 1000
_JSON_WHITESPACE = " \t\r\n"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # where a lone surrogate may hide
_LONE_SURROGATE = "a string holds {}, half of a UTF-16 surrogate pair without its other half (not text)"


class InvalidRowError(ValueError):
    """A row that `validate_row` refused, named by source, split and 0-based row index (as in `dataset[row]`)."""

    def __init__(self, source: str, split: str, row: int, reason: str):
        self.source, self.split, self.row, self.reason = source, split, row, reason
        super().__init__(
            f"{source} (split '{split}') row {row}: {str(reason).rstrip('.')}. Fix the data, or set "
            "`skip_invalid_rows: true` to drop such rows and log a count per reason."
        )


class RowProblem(str):
    """A reason a row is invalid: the full message (the string itself) plus `kind`, its stable class.

    Counts of dropped rows are keyed by `kind` ("unknown role"), so that one bad role name per row does not make one
    count per row; the message ("unknown role 'bot' at message 2 ...") goes into errors and logged examples. A
    validator may return a plain string instead: it is then its own kind.
    """

    kind: str

    def __new__(cls, kind: str, message: str) -> RowProblem:
        problem = super().__new__(cls, message)
        problem.kind = kind
        return problem


def problem_kind(reason: str) -> str:
    """The count key of a validator's reason: its `kind` for a `RowProblem`, else the reason itself."""
    return getattr(reason, "kind", str(reason))


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


def load_mixture(
    data_args: DataArguments,
    *,
    validate_row: Callable[[dict], str | None] | None = None,
    required_columns: list[str] | None = None,
) -> Mixture:
    """Load, check, subsample and mix `data_args.dataset_mixer` into "train" and "test" splits (see the module doc).

    `fraction` (Zephyr form) or `weight` (list form) is the share of that source's train rows kept, in (0, 1]:
    `round_half_up(share * rows)` rows, at least one, chosen by `data_args.seed` (the same seed keeps the same rows,
    and a smaller share keeps a subset of a larger one) and left in their original order. Test splits are kept whole.

    A source without a test split holds out `round_half_up(test_split_size * kept)` of its kept train rows (seeded)
    as its test split. Zephyr form: that is a source none of whose `dataset_splits` test splits exist. List form: the
    listed entries are the splits you get, so train entries are held out from only when no entry reads a test split.
    "test" may be empty (0 rows) when no source yields test rows.

    `validate_row(row)` returns None for a good row or a reason (`RowProblem` or a plain string). `required_columns`
    must be present in every source after `columns` selection.
    """
    sources = _parse_mixer(data_args)
    _check_share(data_args.test_split_size, "`test_split_size`", low_inclusive=True, high_inclusive=False)
    hold_out_any = any(not source.explicit for source in sources) or not any(s.test_splits for s in sources)

    loaded = [_read_source(source) for source in sources]
    _check_columns(sources, loaded, required_columns or [])

    reports, train_parts, test_parts = [], [], []
    for source, splits in zip(sources, loaded, strict=True):
        report = SourceReport(source=source.path, fraction=source.fraction)
        rng = np.random.default_rng(data_args.seed)
        checked = {}
        for split, dataset in splits.items():
            report.read[split] = len(dataset)
            checked[split] = _drop_invalid(
                dataset, source.path, split, validate_row, data_args.skip_invalid_rows, report
            )
        train = [checked[split] for split in source.train_splits if split in checked]
        test = [checked[split] for split in source.test_splits if split in checked]
        train = _concatenate(train, [source.path] * len(train)) if train else None
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
        raise ValueError(f"The mixture has no training rows (sources: {', '.join(data_args.source_names())}).")
    parts = train_parts + test_parts
    aligned = _align_features([part for _, part in parts], [label for label, _ in parts])
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


def conversation_problem(messages: Any) -> RowProblem | None:
    """Why `messages` is not a trainable chat, or None if it is.

    A chat is a non-empty list of `{"role", "content"}` dicts with roles among system, user and assistant and
    non-empty string contents; after an optional leading system message the roles alternate user, assistant, ...
    (starting with user), and at least one assistant turn exists to train on. Messages count from 0.
    """
    if not isinstance(messages, list):
        return RowProblem("messages not a list", f"messages is {_describe(messages)}, expected a list of messages")
    if not messages:
        return RowProblem("no messages", "messages is an empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return RowProblem(
                "malformed message", f"message {index} is not a dict with 'role' and 'content': {_describe(message)}"
            )
        role, content = message["role"], message["content"]
        if role not in VALID_ROLES:
            return RowProblem(
                "unknown role", f"unknown role {role!r} at message {index} (valid: {', '.join(VALID_ROLES)})"
            )
        if not isinstance(content, str):
            return RowProblem("non-string content", f"message {index} ({role}) content is {_describe(content)}")
        if not content.strip():
            return RowProblem("empty content", f"message {index} ({role}) has empty content")
    roles = [message["role"] for message in messages]
    first = 1 if roles[0] == "system" else 0
    for index in range(first, len(roles)):
        expected = "user" if (index - first) % 2 == 0 else "assistant"
        if roles[index] != expected:
            return RowProblem(
                "roles out of order",
                f"message {index} is {roles[index]!r}, expected {expected!r} (after an optional leading system "
                "message, roles alternate user, assistant, ...)",
            )
    if "assistant" not in roles:
        return RowProblem("no assistant turn", "no assistant message to train on")
    return None


def sft_row_problem(row: dict) -> RowProblem | None:
    """The SFT row validator for `load_mixture`: `conversation_problem` of the row's `messages` column."""
    if "messages" not in row:
        return RowProblem("no messages column", f"no 'messages' column (the row has: {', '.join(row)})")
    return conversation_problem(row["messages"])


# Recipe parsing


def _parse_mixer(data_args: DataArguments) -> list[_Source]:
    """Check `dataset_mixer` (either form) and turn it into one `_Source` per mixer key or list entry."""
    mixer = data_args.dataset_mixer
    if not mixer:
        raise ValueError(
            "`dataset_mixer` is empty: give `{hub id or local path: fraction}` or a list of "
            f"`{{{', '.join(ENTRY_KEYS)}}}` entries."
        )
    if isinstance(mixer, dict):
        sides = {split: _split_side(split, "`dataset_splits`") for split in data_args.dataset_splits}
        train_splits = [split for split, side in sides.items() if side == "train"]
        if not train_splits:
            raise ValueError(f"`dataset_splits: {data_args.dataset_splits}` names no train split.")
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
        raise ValueError(f"`dataset_mixer` must be a dict or a list, not {_describe(mixer)}.")
    if data_args.dataset_splits != DataArguments().dataset_splits or data_args.dataset_config is not None:
        raise ValueError(
            "`dataset_splits` and `dataset_config` apply to the dict form of `dataset_mixer` only: in the list form "
            "give each entry its own `split` and `name`."
        )
    return [_parse_entry(entry, index) for index, entry in enumerate(mixer)]


def _parse_entry(entry: Any, index: int) -> _Source:
    """Check one list-form entry strictly: known keys only, a path, a split, string columns, a valid weight."""
    where = f"dataset_mixer[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict with keys {', '.join(ENTRY_KEYS)}, not {_describe(entry)}.")
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"{where}: unknown key '{key}' ({hint}valid keys: {', '.join(ENTRY_KEYS)}).")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: `path` (a hub id or a local path) is required.")
    where = f"{where} ({path})"
    split = entry.get("split", "train")
    if not isinstance(split, str):
        raise ValueError(f"{where}: `split` must be one split name, not {_describe(split)}.")
    side = _split_side(split, where)
    columns = entry.get("columns")
    if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
        raise ValueError(f"{where}: `columns` must be a list of column names, not {_describe(columns)}.")
    weight = _check_share(entry.get("weight", 1.0), where)
    if side == "test" and weight != 1:
        raise ValueError(f"{where}: `weight: {weight}` on test split '{split}': test splits are kept whole.")
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
    )


def _split_side(split: str, where: str) -> str:
    """The side a split feeds: "train" if its name contains "train", else "test" if it contains "test"."""
    if "train" in split:
        return "train"
    if "test" in split:
        return "test"
    raise ValueError(f"{where}: split '{split}' is neither a train nor a test split (its name must contain one).")


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
    raise ValueError(f"{where}: {value!r} is not valid; it is {what}, {valid}{hint}.")


# Reading sources


def _read_source(source: _Source) -> dict[str, Dataset]:
    """The source's requested splits that exist, with `columns` selected; a missing required split is an error."""
    available, lone = _open(source)
    wanted = source.train_splits + ([] if lone and not source.explicit else source.test_splits)
    splits = {}
    for split in wanted:
        if lone:
            splits[split] = available["train"]()
            break
        if split in available:
            splits[split] = available[split]()
        elif split in source.train_splits or source.explicit:
            raise ValueError(f"{source.where}: no split '{split}' (it has: {', '.join(available) or 'none'}).")
    if source.columns is not None:
        for split, dataset in splits.items():
            missing = [column for column in source.columns if column not in dataset.column_names]
            if missing:
                raise ValueError(
                    f"{source.where} (split '{split}'): `columns` {missing} not found (it has: "
                    f"{', '.join(dataset.column_names)})."
                )
            splits[split] = dataset.select_columns(source.columns)
    return splits


def _open(source: _Source) -> tuple[dict[str, Callable[[], Dataset]], bool]:
    """Map each split the source has to a loader, and say whether it is a lone file or `Dataset` (no split names)."""
    path = Path(source.path).expanduser()
    if source.data_files is not None or not path.exists():
        if not path.exists() and (path.suffix in FILE_FORMATS or source.path.startswith((".", "/", "~"))):
            raise ValueError(f"{source.where}: no such file or folder: {source.path}")
        kwargs = {"name": source.name, "data_files": source.data_files}
        names = datasets.get_dataset_split_names(source.path, config_name=source.name, data_files=source.data_files)
        return {name: partial(datasets.load_dataset, source.path, split=name, **kwargs) for name in names}, False
    if source.name is not None:
        raise ValueError(f"{source.where}: `name` selects a hub dataset configuration; a local path has none.")
    if path.is_file():
        return {"train": partial(_read_file, path)}, True
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, Dataset):
            return {"train": lambda: saved}, True
        return {name: partial(saved.__getitem__, name) for name in saved}, False
    files: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in FILE_FORMATS and not file.name.startswith("."):
            files.setdefault(_SHARD_SUFFIX.sub("", file.stem), []).append(file)
    if not files:
        raise ValueError(
            f"{source.where}: folder {source.path} has no {'/'.join(FILE_FORMATS)} files and is not a saved dataset."
        )
    return {split: partial(_read_files, paths) for split, paths in files.items()}, False


def _read_files(paths: list[Path]) -> Dataset:
    """One split written as several files (shards), concatenated in file-name order."""
    return _concatenate([_read_file(path) for path in paths], [str(path) for path in paths])


def _read_file(path: Path) -> Dataset:
    """Read one .json/.jsonl/.parquet file, turning a failure into an error that names the file (and JSON line)."""
    if path.suffix not in FILE_FORMATS:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}' (supported: {', '.join(FILE_FORMATS)}).")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: no rows to read.")
    if FILE_FORMATS[path.suffix] == "json":
        return _read_json(path)
    return _load_file(path, "parquet")


def _load_file(path: Path, builder: str, data_file: Path | None = None) -> Dataset:
    """`datasets`' `builder` reader over `data_file` (default: `path`); a failure is an error that names `path`."""
    try:
        return datasets.load_dataset(builder, data_files=str(data_file or path), split="train")
    except Exception as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise ValueError(f"Could not read {path}: {err}{cause}") from err


def _read_json(path: Path) -> Dataset:
    """Read a JSON file (JSON Lines, one array of rows, or one object) after parsing all of it strictly here.

    `datasets`' JSON reader guesses where the input is odd, and some guesses are silently wrong: when pyarrow refuses
    a file (a raw control character, a lone surrogate, a duplicate key) it falls back to pandas, which reads a
    one-line file as one row per message; an array whose first object starts past byte 100 becomes a column of
    strings; bytes that are not UTF-8 stop it with a bare `UnicodeDecodeError`. So the file is first parsed with
    Python's strict `json`, every error naming the file and line. JSON Lines then go to `datasets` as written, a whole
    document (an array, or one object) as a canonical JSON Lines copy, so that `datasets` has nothing to guess. The
    rows it returns must be the rows parsed here, in number and columns, or reading fails: never train on other rows.
    """
    parsed = _parse_json_lines(path)
    if parsed is None:
        rows = _parse_json_document(path)
        data_file, count, columns = _json_lines_copy(path, rows), len(rows), {key for row in rows for key in row}
    else:
        data_file, (count, columns) = path, parsed
    if not columns:
        raise ValueError(f"{path} has no columns: every row is an empty object {{}}.")
    dataset = _load_file(path, "json", data_file)
    if len(dataset) != count or set(dataset.column_names) != columns:
        raise ValueError(
            f"Could not read {path}: it holds {count} rows with columns {', '.join(sorted(columns))}, but the "
            f"`datasets` JSON reader returned {len(dataset)} rows with columns {', '.join(dataset.column_names)}."
        )
    return dataset


def _parse_json_lines(path: Path) -> tuple[int, set[str]] | None:
    """Parse a JSON Lines file line by line: its row count and columns, or None if the file is one JSON document.

    Lines end at "\\n" only (U+2028 and the like are text inside strings), a UTF-8 byte-order mark before the first
    line is skipped and blank lines are ignored. The file is one document when its first non-blank line opens an
    array, or is a lone "{" (an object written over several lines, as `json.dump(row, indent=2)` writes one).
    """
    count, columns, offset = 0, set(), 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):  # a binary file's lines end at b"\n" only
            skip = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            line = _decode(path, raw[skip:], offset=offset + skip, line=number).rstrip("\r\n")
            offset += len(raw)
            content = line.strip(_JSON_WHITESPACE)
            if not content:
                continue
            if not count and (content.startswith("[") or content == "{"):
                return None
            try:
                row = _json_loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path} line {number}: invalid JSON ({_json_error(err)} at column {err.colno}): {_clip(content)}"
                ) from None
            except (ValueError, RecursionError) as err:
                raise ValueError(f"{path} line {number}: {err}.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: expected one JSON object per line, got {_describe(row)}.")
            surrogate = _lone_surrogate(row) if _SURROGATE_ESCAPE.search(line) else None
            if surrogate:
                raise ValueError(f"{path} line {number}: {_LONE_SURROGATE.format(surrogate)}.")
            count += 1
            columns.update(row)
    if not count:
        raise ValueError(f"{path} is empty: no rows to read.")
    return count, columns


def _parse_json_document(path: Path) -> list[dict]:
    """The rows of a file that is one JSON document: the objects of its array, or the one object it is."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    text = _decode(path, data[skip:], offset=skip)
    try:
        value = _json_loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno} column {err.colno}: invalid JSON ({_json_error(err)}).") from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: {err}.") from None
    rows = value if isinstance(value, list) else [value]
    if not rows:
        raise ValueError(f"{path} is empty: its JSON array has no rows.")
    has_surrogate_escapes = _SURROGATE_ESCAPE.search(text) is not None
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: array element {index} is {_describe(row)}, expected an object.")
        surrogate = _lone_surrogate(row) if has_surrogate_escapes else None
        if surrogate:
            raise ValueError(f"{path}: array element {index}: {_LONE_SURROGATE.format(surrogate)}.")
    return rows


def _decode(path: Path, data: bytes, *, offset: int, line: int = 1) -> str:
    """`data` (the file's bytes from byte `offset`, on line `line`) as UTF-8 text; naming the first bad byte if not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line += before.count(b"\n")
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        utf16 = offset + err.start == 0 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise ValueError(
            f"{path} line {line} column {column}: not UTF-8 text (byte 0x{data[err.start]:02x} at byte offset "
            f"{offset + err.start}){'; it starts with a UTF-16 byte-order mark' if utf16 else ''}: save it as UTF-8."
        ) from None


def _json_loads(text: str) -> Any:
    """Python's strict JSON parser, refusing duplicate keys (readers disagree on which value wins)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _json_error(err: json.JSONDecodeError) -> str:
    """Python's reason for `err`, naming the character where it is a raw control character inside a string."""
    if err.msg == "Invalid control character at":
        return f"unescaped control character U+{ord(err.doc[err.pos]):04X} in a string"
    return err.msg.removesuffix(" at")  # "Unterminated string starting at": the position follows in our message


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """One JSON object's key-value pairs as a dict; a key given twice is an error."""
    row = dict(pairs)
    if len(row) < len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ValueError(f"duplicate key {duplicate!r} in one object")
    return row


def _lone_surrogate(value: Any) -> str | None:
    """The first unpaired UTF-16 surrogate (a `\\ud83d` escape without its other half) in `value`'s strings, or None.

    Python's `json` accepts such an escape; it is not text, and neither pyarrow nor a tokenizer can take it.
    """
    if isinstance(value, str):
        surrogate = next((char for char in value if "\ud800" <= char <= "\udfff"), None)
        return None if surrogate is None else f"\\u{ord(surrogate):04x}"
    parts = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next(filter(None, map(_lone_surrogate, parts)), None)


def _json_lines_copy(path: Path, rows: list[dict]) -> Path:
    """A whole-document JSON file's `rows` as JSON Lines in the `datasets` cache, named by content (safe to share)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    copy = Path(datasets.config.HF_DATASETS_CACHE) / "json_documents" / f"{digest}.jsonl"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f"{copy.name}.{os.getpid()}.partial")  # each process writes its own, then renames
        partial.write_text(text, encoding="utf-8")
        partial.replace(copy)
    logger.info("%s is one JSON document of %d rows: read as JSON Lines from %s", path, len(rows), copy)
    return copy


# Checking, sampling and mixing


def _check_columns(sources: list[_Source], loaded: list[dict[str, Dataset]], required: list[str]) -> None:
    """Every source must have the required columns, and all sources exactly the same columns."""
    seen = []
    for source, splits in zip(sources, loaded, strict=True):
        for split, dataset in splits.items():
            missing = [column for column in required if column not in dataset.column_names]
            if missing:
                raise ValueError(
                    f"{source.where} (split '{split}'): missing required column {', '.join(map(repr, missing))} "
                    f"(it has: {', '.join(dataset.column_names) or 'no columns'})."
                )
            seen.append((f"{source.path} ({split})", dataset.column_names))
    if len({frozenset(columns) for _, columns in seen}) > 1:
        listing = "\n".join(f"  {label}: {', '.join(columns)}" for label, columns in seen)
        raise ValueError(
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
    """Check each row; raise `InvalidRowError` at the first bad one, or (with `skip`) drop and count them by kind."""
    if validate_row is None:
        return dataset
    keep, index = [], 0
    for batch in dataset.iter(batch_size=_VALIDATION_BATCH):
        for values in zip(*batch.values(), strict=True):
            reason = validate_row(dict(zip(batch, values, strict=True)))
            if reason is None:
                keep.append(index)
            elif not skip:
                raise InvalidRowError(source, split, index, reason)
            else:
                kind = problem_kind(reason)
                report.invalid[kind] += 1
                report.invalid_examples.setdefault(kind, f"row {index} (split '{split}'): {reason}")
            index += 1
    return dataset if len(keep) == len(dataset) else dataset.select(keep)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _sample(rows: int, share: float, rng: np.random.Generator, *, at_least_one: bool) -> np.ndarray:
    """Sorted indices of `round_half_up(share * rows)` rows drawn without replacement (a seeded permutation prefix)."""
    count = _round_half_up(share * rows)
    if at_least_one and rows:
        count = max(count, 1)
    return np.sort(rng.permutation(rows)[:count])


def _concatenate(parts: list[Dataset], labels: list[str]) -> Dataset:
    return concatenate_datasets(_align_features(parts, labels)) if len(parts) > 1 else parts[0]


def _align_features(parts: list[Dataset], labels: list[str]) -> list[Dataset]:
    """Cast every part to the first one's features (int64 vs float64 and the like), or name the columns that differ."""
    reference = parts[0].features
    aligned = [parts[0]]
    for label, part in zip(labels[1:], parts[1:], strict=True):
        if part.features != reference:
            try:
                part = part.cast(reference)
            except (ValueError, TypeError) as err:
                differing = [c for c in reference if part.features.get(c) != reference[c]]
                listing = "\n".join(
                    f"  {c}: {labels[0]} has {reference[c]}, {label} has {part.features.get(c)}" for c in differing
                )
                raise ValueError(f"Sources have different column types, so they cannot be mixed:\n{listing}") from err
        aligned.append(part)
    return aligned


def _describe(value: Any) -> str:
    """A short description of a bad value for error messages: its type and a clipped repr."""
    return "None" if value is None else f"{type(value).__name__} {_clip(value)}"


def _clip(value: Any, limit: int = 80) -> str:
    """`value` for a message: a string as it is, else its repr; unprintable characters (control, zero-width,
    direction overrides) escaped so that the message shows them; cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_numeric_string(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)
