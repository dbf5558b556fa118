"""A recipe's `dataset_mixer`, checked into sources: both forms (`{source: fraction}` and the list of entries).

Every mistake in the mixer itself (an unknown entry key, a weight outside (0, 1], a split that feeds neither side) is
a `DataError` naming the entry, before any data is read; `alignment.data.mixture` then reads the sources.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from alignment.data.rows import DataError, describe

ENTRY_KEYS = ("path", "split", "columns", "weight", "name", "data_files", "format", "columns_map", "tags")
# The splits every source is read on in the Zephyr form (`dataset_splits`' default).
DEFAULT_DATASET_SPLITS = ("train", "test")
# What one row of a .txt source is (`txt_documents`): the whole file (default), or each block of lines between blank
# lines (`alignment.data.readers.read_text`).
TXT_DOCUMENTS = ("file", "blank_lines")


@dataclass
class Source:
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


def parse_mixer(
    mixer: dict[str, float] | list[dict[str, Any]] | None, dataset_splits: list[str], dataset_config: str | None
) -> list[Source]:
    """Check `dataset_mixer` (either form) and turn it into one `Source` per mixer key or list entry."""
    if not mixer:
        raise DataError(
            "`dataset_mixer` is empty: give `{hub id or local path: fraction}` or a list of "
            f"`{{{', '.join(ENTRY_KEYS)}}}` entries."
        )
    if isinstance(mixer, dict):
        sides = {split: _split_side(split, "`dataset_splits`") for split in dataset_splits}
        train_splits = [split for split, side in sides.items() if side == "train"]
        if not train_splits:
            raise DataError(f"`dataset_splits: {dataset_splits}` names no train split.")
        return [
            Source(
                path=str(path),
                where=f"dataset_mixer[{path!r}]",
                fraction=check_share(fraction, f"dataset_mixer[{path!r}]"),
                train_splits=train_splits,
                test_splits=[split for split, side in sides.items() if side == "test"],
                explicit=False,
                name=dataset_config,
            )
            for path, fraction in mixer.items()
        ]
    if not isinstance(mixer, list):
        raise DataError(f"`dataset_mixer` must be a dict or a list, not {describe(mixer)}.")
    if list(dataset_splits) != list(DEFAULT_DATASET_SPLITS) or dataset_config is not None:
        raise DataError(
            "`dataset_splits` and `dataset_config` apply to the dict form of `dataset_mixer` only: in the list form "
            "give each entry its own `split` and `name`."
        )
    return [_parse_entry(entry, index) for index, entry in enumerate(mixer)]


def _parse_entry(entry: Any, index: int) -> Source:
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
    weight = check_share(entry.get("weight", 1.0), where)
    if side == "test" and weight != 1:
        raise DataError(f"{where}: `weight: {weight}` on test split '{split}': test splits are kept whole.")
    return Source(
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


def check_share(value: Any, where: str, *, low_inclusive: bool = False, high_inclusive: bool = True) -> float:
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


def _is_numeric_string(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)
