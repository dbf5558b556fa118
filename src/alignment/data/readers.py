"""Opening a `dataset_mixer` source, and reading a local JSON file into a `Dataset` after its strict parse.

A source is a hub id, a local .json/.jsonl/.parquet file, a folder of such files (a file's name is its split, shards
concatenated in name order), a folder written by `save_to_disk`, or raw text: a .txt file or a folder of .txt files
(read in name order as one split with a `text` column, one row per document as `txt_documents` says:
`TXT_DOCUMENTS`). `open_source` maps each of its splits to a loader
that returns a `SplitRead`; which splits to read, and how to check and mix them, is `alignment.data.mixture`'s
concern. Every local JSON file is parsed strictly (`alignment.data.strict_json`) before `datasets` reads it
(`_read_json` says why), and `read_rows` gives that same parse to code that wants the rows as dicts rather than a
`Dataset` (evaluation files, the demo). Rows pass one at a time, so that a corpus of any size is read in bounded
memory; a JSON array cut off inside its last record is read without it under `skip_invalid_rows`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, concatenate_datasets
from datasets.exceptions import DatasetGenerationError

from alignment.data.rows import DataError, RowProblem
from alignment.data.sources import TXT_DOCUMENTS
from alignment.data.strict_json import JsonDocument, parse_json_lines

logger = logging.getLogger(__name__)

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TEXT_SUFFIX = ".txt"
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")


@dataclass
class SplitRead:
    """One split as its loader read it: the rows, and the records that could not be rows and were dropped.

    `dropped` holds each dropped record's 0-based index in the split (counting the dropped records too, as the file
    is written) and reason. Only `skip_invalid_rows` drops at reading, and only the record a JSON file is cut off
    inside (kind `alignment.data.strict_json.CUT_OFF`); every other bad row is read, for the stage's row check.
    """

    dataset: Dataset
    dropped: list[tuple[int, RowProblem]] = field(default_factory=list)


def open_source(
    source: str,
    where: str,
    *,
    name: str | None = None,
    data_files: Any = None,
    skip_invalid_rows: bool = False,
    txt_documents: str = "file",
) -> tuple[dict[str, Callable[[], SplitRead]], bool]:
    """Map each split `source` has to a loader, and say whether it is a lone file or `Dataset` (no split names).

    `source` is a hub id or a local path; `name` (a hub configuration) and `data_files` go to `datasets.load_dataset`,
    and given `data_files` even a local path is read that way. Errors name the source by `where`. With
    `skip_invalid_rows`, a local JSON file cut off inside its last record is read without it (see `SplitRead`). A .txt
    file, or a folder holding .txt files and no other data files, is one lone split of documents (`read_text`).
    """
    path = Path(source).expanduser()
    if data_files is not None or not path.exists():
        if not path.exists() and (path.suffix in FILE_FORMATS or source.startswith((".", "/", "~"))):
            raise DataError(f"{where}: no such file or folder: {source}")
        kwargs = {"name": name, "data_files": data_files}
        names = datasets.get_dataset_split_names(source, config_name=name, data_files=data_files)
        return {split: partial(_read_hub, source, split, kwargs) for split in names}, False
    if name is not None:
        raise DataError(f"{where}: `name` selects a hub dataset configuration; a local path has none.")
    if path.is_file() and path.suffix == TEXT_SUFFIX:
        return {"train": partial(read_text, [path], txt_documents)}, True
    if path.is_file():
        return {"train": partial(_read_file, path, skip_invalid_rows)}, True
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, Dataset):
            return {"train": lambda: SplitRead(saved)}, True
        return {split: partial(lambda split: SplitRead(saved[split]), split) for split in saved}, False
    files: dict[str, list[Path]] = {}
    texts: list[Path] = []
    for file in sorted(path.rglob("*")):
        if file.is_file() and not file.name.startswith(".") and file.suffix in (*FILE_FORMATS, TEXT_SUFFIX):
            if file.suffix == TEXT_SUFFIX:
                texts.append(file)
            else:
                files.setdefault(_SHARD_SUFFIX.sub("", file.stem), []).append(file)
    if texts and files:
        raise DataError(
            f"{where}: folder {source} holds both .txt files and {'/'.join(FILE_FORMATS)} files: a folder is either "
            "a text corpus (every .txt file, one split) or a dataset (a file per split). Move one kind out."
        )
    if texts:
        return {"train": partial(read_text, texts, txt_documents)}, True
    if not files:
        raise DataError(
            f"{where}: folder {source} has no {'/'.join((*FILE_FORMATS, TEXT_SUFFIX))} files and is not a saved "
            "dataset."
        )
    return {split: partial(_read_files, paths, skip_invalid_rows) for split, paths in files.items()}, False


def read_text(paths: list[Path], txt_documents: str = "file") -> SplitRead:
    """The documents of .txt files, in the order given, as a `Dataset` with one `text` column (`txt_documents`):

    * `file`: each file is one document, its text exactly as written (an empty file is an empty document, which the
      stage's row check refuses or counts);
    * `blank_lines`: each run of lines between blank lines (lines of whitespace only) is one document, its lines
      joined by "\n" without the last line break; blank lines at the start or end of a file make no document.

    Files are read as UTF-8 (a byte-order mark dropped), a line at a time in `blank_lines` mode, and the rows are
    written to the `datasets` cache as they come, so a corpus of any size is read in bounded memory (a `file`
    document is held whole). Bytes that are not UTF-8 are a `DataError` naming the file. The cache is keyed by each
    file's path, size and modification time, so an edited file is read again.
    """
    if txt_documents not in TXT_DOCUMENTS:
        raise ValueError(f"txt_documents {txt_documents!r} is not one of {', '.join(TXT_DOCUMENTS)}")
    stamps = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in paths]
    try:
        dataset = Dataset.from_generator(
            _text_documents,
            features=datasets.Features({"text": datasets.Value("string")}),
            gen_kwargs={"stamps": stamps, "txt_documents": txt_documents},
        )
    except DatasetGenerationError as err:  # `datasets` wraps what the generator raised
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise
    logger.info("Read %d documents (txt_documents: %s) from %d .txt files", len(dataset), txt_documents, len(paths))
    return SplitRead(dataset)


def _text_documents(stamps: list[tuple[str, int, int]], txt_documents: str) -> Iterator[dict[str, str]]:
    for name, _, _ in stamps:
        try:
            with open(name, encoding="utf-8-sig", newline="") as handle:
                if txt_documents == "file":
                    yield {"text": handle.read()}
                    continue
                block: list[str] = []
                for line in handle:
                    if line.strip():
                        block.append(line.rstrip("\r\n"))
                    elif block:
                        yield {"text": "\n".join(block)}
                        block = []
                if block:
                    yield {"text": "\n".join(block)}
        except UnicodeDecodeError as err:
            raise DataError(
                f"{name}: byte {err.start} is not UTF-8 ({err.reason}): .txt files are read as UTF-8."
            ) from err


def _read_hub(source: str, split: str, kwargs: dict) -> SplitRead:
    """One split of a hub dataset (or of `data_files`), as `datasets.load_dataset` reads it."""
    return SplitRead(datasets.load_dataset(source, split=split, **kwargs))


def _read_files(paths: list[Path], skip_invalid_rows: bool) -> SplitRead:
    """One split written as several files (shards), concatenated in file-name order."""
    reads = [_read_file(path, skip_invalid_rows) for path in paths]
    dropped, before = [], 0
    for read in reads:
        dropped += [(before + row, reason) for row, reason in read.dropped]
        before += len(read.dataset) + len(read.dropped)
    return SplitRead(concatenate([read.dataset for read in reads], [str(path) for path in paths]), dropped)


def _read_file(path: Path, skip_invalid_rows: bool = False) -> SplitRead:
    """Read one .json/.jsonl/.parquet file, turning a failure into an error that names the file (and JSON line)."""
    if path.suffix not in FILE_FORMATS:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}' (supported: {', '.join((*FILE_FORMATS, TEXT_SUFFIX))})."
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: no rows to read.")
    if FILE_FORMATS[path.suffix] == "json":
        return _read_json(path, skip_invalid_rows)
    return SplitRead(_load_file(path, "parquet"))


def _load_file(path: Path, builder: str, data_file: Path | None = None) -> Dataset:
    """`datasets`' `builder` reader over `data_file` (default: `path`); a failure is an error that names `path`."""
    try:
        return datasets.load_dataset(builder, data_files=str(data_file or path), split="train")
    except Exception as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise DataError(f"Could not read {path}: {err}{cause}") from err


def read_rows(path: str | Path) -> list[dict]:
    """The rows of one local .json/.jsonl file as dicts, parsed by the strict reader `load_mixture` uses.

    The file holds JSON Lines or one JSON document (an array of rows, or one object), as UTF-8 with or without a
    byte-order mark. Invalid JSON (a file cut off included), bytes that are not UTF-8, a duplicate key, a lone
    surrogate, a row that is not an object or an empty file is a `DataError` naming the file and line.
    """
    path = Path(path).expanduser()
    if FILE_FORMATS.get(path.suffix) != "json":
        raise DataError(f"{path}: not a JSON file (read_rows reads .json and .jsonl files).")
    if not path.is_file():
        raise DataError(f"No such file: {path}")
    rows = parse_json_lines(path)
    return list(JsonDocument(path) if rows is None else rows)


def _read_json(path: Path, skip_invalid_rows: bool) -> SplitRead:
    """Read a JSON file (JSON Lines, one array of rows, or one object) after parsing all of it strictly here.

    `datasets`' JSON reader guesses where the input is odd, and some guesses are silently wrong: when pyarrow refuses
    a file (a raw control character, a lone surrogate, a duplicate key) it falls back to pandas, which reads a
    one-line file as one row per message; an array whose first object starts past byte 100 becomes a column of
    strings; bytes that are not UTF-8 stop it with a bare `UnicodeDecodeError`. So the file is first parsed with
    Python's strict `json`, every error naming the file and line. JSON Lines then go to `datasets` as written, a whole
    document (an array, or one object) as a canonical JSON Lines copy, so that `datasets` has nothing to guess. The
    rows it returns must be the rows parsed here, in number and columns, or reading fails: never train on other rows.
    Rows pass one at a time (JSON Lines, and an array's elements), never all held in memory.
    """
    shape = _Shape()
    rows = parse_json_lines(path)
    if rows is None:
        document = JsonDocument(path, skip_invalid_rows=skip_invalid_rows)
        data_file = _json_lines_copy(path, shape.count(document))
        dropped = [(shape.rows, reason) for reason in document.dropped]
    else:
        data_file, dropped = path, []
        for _ in shape.count(rows):
            pass
    if not shape.columns:
        raise DataError(f"{path} has no columns: every row is an empty object {{}}.")
    dataset = _load_file(path, "json", data_file)
    if len(dataset) != shape.rows or set(dataset.column_names) != shape.columns:
        raise DataError(
            f"Could not read {path}: it holds {shape.rows} rows with columns {', '.join(sorted(shape.columns))}, but "
            f"the `datasets` JSON reader returned {len(dataset)} rows with columns {', '.join(dataset.column_names)}."
        )
    return SplitRead(dataset, dropped)


class _Shape:
    """The number of rows that passed through `count`, and the union of their columns."""

    def __init__(self) -> None:
        self.rows, self.columns = 0, set()

    def count(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            self.rows += 1
            self.columns.update(row)
            yield row


def _json_lines_copy(path: Path, rows: Iterable[dict]) -> Path:
    """A whole-document JSON file's `rows` as JSON Lines in the `datasets` cache, named by content (safe to share).

    The rows are written as they come (never all in memory), to a file of this call's own, renamed once complete.
    """
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "json_documents"
    folder.mkdir(parents=True, exist_ok=True)
    digest, count = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=".partial", delete=False) as partial:
        try:
            for row in rows:
                line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                partial.write(line)
                count += 1
        except BaseException:
            Path(partial.name).unlink()
            raise
    copy = folder / f"{digest.hexdigest()}.jsonl"
    Path(partial.name).replace(copy)
    logger.info("%s is one JSON document of %d rows: read as JSON Lines from %s", path, count, copy)
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
                raise DataError(f"Sources have different column types, so they cannot be mixed:\n{listing}") from err
        aligned.append(part)
    return aligned
