"""Opening a `dataset_mixer` source, and the strict JSON / JSON Lines reader behind every local JSON file.

A source is a hub id, a local .json/.jsonl/.parquet file, a folder of such files (a file's name is its split, shards
concatenated in name order) or a folder written by `save_to_disk`. `open_source` maps each of its splits to a loader;
which splits to read, and how to check and mix them, is `alignment.data.mixture`'s concern. Every local JSON file is
parsed strictly here before `datasets` reads it (`_read_json` says why), and `read_rows` gives that same parse to
code that wants the rows as dicts rather than a `Dataset` (evaluation files, the demo).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, concatenate_datasets

from alignment.data.rows import clip, describe

logger = logging.getLogger(__name__)

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
_JSON_WHITESPACE = " \t\r\n"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # where a lone surrogate may hide
_LONE_SURROGATE = "a string holds {}, half of a UTF-16 surrogate pair without its other half (not text)"


def open_source(
    source: str, where: str, *, name: str | None = None, data_files: Any = None
) -> tuple[dict[str, Callable[[], Dataset]], bool]:
    """Map each split `source` has to a loader, and say whether it is a lone file or `Dataset` (no split names).

    `source` is a hub id or a local path; `name` (a hub configuration) and `data_files` go to `datasets.load_dataset`,
    and given `data_files` even a local path is read that way. Errors name the source by `where`.
    """
    path = Path(source).expanduser()
    if data_files is not None or not path.exists():
        if not path.exists() and (path.suffix in FILE_FORMATS or source.startswith((".", "/", "~"))):
            raise ValueError(f"{where}: no such file or folder: {source}")
        kwargs = {"name": name, "data_files": data_files}
        names = datasets.get_dataset_split_names(source, config_name=name, data_files=data_files)
        return {split: partial(datasets.load_dataset, source, split=split, **kwargs) for split in names}, False
    if name is not None:
        raise ValueError(f"{where}: `name` selects a hub dataset configuration; a local path has none.")
    if path.is_file():
        return {"train": partial(_read_file, path)}, True
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, Dataset):
            return {"train": lambda: saved}, True
        return {split: partial(saved.__getitem__, split) for split in saved}, False
    files: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in FILE_FORMATS and not file.name.startswith("."):
            files.setdefault(_SHARD_SUFFIX.sub("", file.stem), []).append(file)
    if not files:
        raise ValueError(f"{where}: folder {source} has no {'/'.join(FILE_FORMATS)} files and is not a saved dataset.")
    return {split: partial(_read_files, paths) for split, paths in files.items()}, False


def _read_files(paths: list[Path]) -> Dataset:
    """One split written as several files (shards), concatenated in file-name order."""
    return concatenate([_read_file(path) for path in paths], [str(path) for path in paths])


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


def read_rows(path: str | Path) -> list[dict]:
    """The rows of one local .json/.jsonl file as dicts, parsed by the strict reader `load_mixture` uses.

    The file holds JSON Lines or one JSON document (an array of rows, or one object), as UTF-8 with or without a
    byte-order mark. Invalid JSON, bytes that are not UTF-8, a duplicate key, a lone surrogate, a row that is not an
    object or an empty file is a `ValueError` naming the file and line.
    """
    path = Path(path).expanduser()
    if FILE_FORMATS.get(path.suffix) != "json":
        raise ValueError(f"{path}: not a JSON file (read_rows reads .json and .jsonl files).")
    if not path.is_file():
        raise ValueError(f"No such file: {path}")
    rows = _parse_json_lines(path)
    return _parse_json_document(path) if rows is None else list(rows)


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
    rows = _parse_json_lines(path)
    if rows is None:
        rows = _parse_json_document(path)
        data_file = _json_lines_copy(path, rows)
    else:
        data_file = path
    count, columns = 0, set()
    for row in rows:  # JSON Lines are parsed here one at a time, not held in memory
        count += 1
        columns.update(row)
    if not columns:
        raise ValueError(f"{path} has no columns: every row is an empty object {{}}.")
    dataset = _load_file(path, "json", data_file)
    if len(dataset) != count or set(dataset.column_names) != columns:
        raise ValueError(
            f"Could not read {path}: it holds {count} rows with columns {', '.join(sorted(columns))}, but the "
            f"`datasets` JSON reader returned {len(dataset)} rows with columns {', '.join(dataset.column_names)}."
        )
    return dataset


def _parse_json_lines(path: Path) -> Iterator[dict] | None:
    """A JSON Lines file's rows, each parsed strictly when iteration reaches it; None if the file is one JSON document.

    Lines end at "\\n" only (U+2028 and the like are text inside strings), a UTF-8 byte-order mark before the first
    line is skipped and blank lines are ignored. The file is one document when its first non-blank line opens an
    array, or is a lone "{" (an object written over several lines, as `json.dump(row, indent=2)` writes one).
    """
    lines = _non_blank_lines(path)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{path} is empty: no rows to read.")
    content = first[1].strip(_JSON_WHITESPACE)
    if content.startswith("[") or content == "{":
        lines.close()
        return None
    return (_parse_json_line(path, number, line) for number, line in itertools.chain([first], lines))


def _non_blank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The 1-based number and UTF-8 text (line end stripped) of each non-blank line of `path`, read lazily."""
    offset = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):  # a binary file's lines end at b"\n" only
            skip = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            line = _decode(path, raw[skip:], offset=offset + skip, line=number).rstrip("\r\n")
            offset += len(raw)
            if line.strip(_JSON_WHITESPACE):
                yield number, line


def _parse_json_line(path: Path, number: int, line: str) -> dict:
    """Line `number` of JSON Lines file `path`: one JSON object, parsed strictly."""
    try:
        row = _json_loads(line)
    except json.JSONDecodeError as err:
        content = line.strip(_JSON_WHITESPACE)
        raise ValueError(
            f"{path} line {number}: invalid JSON ({_json_error(err)} at column {err.colno}): {clip(content)}"
        ) from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} line {number}: {err}.") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path} line {number}: expected one JSON object per line, got {describe(row)}.")
    surrogate = _lone_surrogate(row) if _SURROGATE_ESCAPE.search(line) else None
    if surrogate:
        raise ValueError(f"{path} line {number}: {_LONE_SURROGATE.format(surrogate)}.")
    return row


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
            raise ValueError(f"{path}: array element {index} is {describe(row)}, expected an object.")
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


def concatenate(parts: list[Dataset], labels: list[str]) -> Dataset:
    """`parts` as one `Dataset`, each cast to the first one's features (see `align_features`; `labels` name them)."""
    return concatenate_datasets(align_features(parts, labels)) if len(parts) > 1 else parts[0]


def align_features(parts: list[Dataset], labels: list[str]) -> list[Dataset]:
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
