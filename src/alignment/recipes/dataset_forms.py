"""The two other ways recipes name their data, read as the list form of `dataset_mixer`.

`alignment.recipes.aliases.canonical_recipe` calls `read_dataset_forms` on every recipe (and command line):

- the alignment-handbook's `dataset_mixture: {datasets: [{id, config, split, columns, weight}], seed,
  test_split_size}` (its `src/alignment/configs.py` and `data.py`): each entry becomes `{path, name, split, columns,
  weight}`, with `weight` (the share of the source's rows kept) and `columns` (the columns selected) meaning what
  they meant there. The handbook pooled every entry, test splits included, and drew `test_split_size` rows (a count,
  or a share) of the pool as its test set; here an entry on a test split is the test set, kept whole, and a source
  without one holds out the `test_split_size` share of its train rows. What cannot be read as the handbook read it
  is refused, naming the entry and the fix.
- TRL's `dataset_name` (+ `dataset_config`, `dataset_train_split`, `dataset_test_split`): one source, read on its
  train split, and on its test split when the recipe evaluates, as TRL's and the handbook's scripts do.

Errors are `ValueError`s naming the key or entry; each conversion logs one warning.
"""

from __future__ import annotations

import difflib
import logging
import math
from typing import Any

import yaml

from alignment.data.sources import split_side

logger = logging.getLogger(__name__)

# The handbook's `dataset_mixture` (its `src/alignment/configs.py`, `DatasetMixtureConfig`/`DatasetConfig`).
MIXTURE_KEYS = ("datasets", "seed", "test_split_size")
MIXTURE_ENTRY_KEYS = ("id", "config", "split", "columns", "weight")
MIXTURE_FORM = "`dataset_mixture: {datasets: [{id, config, split, columns, weight}], seed, test_split_size}`"
# TRL's `ScriptArguments` naming one dataset; `dataset_config` is also the Zephyr form's own key.
DATASET_NAME_KEYS = ("dataset_name", "dataset_train_split", "dataset_test_split")


def read_dataset_forms(recipe: dict[str, Any]) -> None:
    """Replace, in place, the handbook's `dataset_mixture` or TRL's `dataset_name` keys by `dataset_mixer` (list
    form) and the `test_split_size` that keeps their split into train and test rows."""
    _read_dataset_mixture(recipe)
    _read_dataset_name(recipe)


def _read_dataset_mixture(recipe: dict[str, Any]) -> None:
    """The handbook's `dataset_mixture` as the list form of `dataset_mixer` (see the module doc for what changes)."""
    if "dataset_mixture" not in recipe:
        return
    for other in ("dataset_mixer", "dataset_name"):
        if other in recipe:
            raise ValueError(f"`dataset_mixture` and `{other}` both name the data: keep one.")
    mixture = recipe.pop("dataset_mixture")
    _check_keys(mixture, MIXTURE_KEYS, "`dataset_mixture`")
    if not isinstance(mixture.get("datasets"), list) or not mixture["datasets"]:
        raise ValueError(f"`dataset_mixture` must have a non-empty `datasets` list: {MIXTURE_FORM}.")
    entries = [_mixture_entry(entry, index) for index, entry in enumerate(mixture["datasets"])]
    recipe["dataset_mixer"] = entries

    for index, entry in enumerate(entries):
        _check_side(entry, index)
    tests = [entry["split"] for entry in entries if _side(entry["split"]) == "test"]
    size = mixture.get("test_split_size")
    if size is not None and "test_split_size" in recipe:
        raise ValueError("`dataset_mixture.test_split_size` and `test_split_size` are one key: keep one.")
    if tests:
        handbook = (
            f"pooled every entry, test splits included, held out `test_split_size: {size}` of the pool at random and "
            "trained on the rest"
            if size is not None
            else "trained on every entry, test splits included, and had no test set"
        )
        split_note = (
            f"the entries on test splits ({', '.join(tests)}) are the test set, kept whole (the handbook {handbook})"
        )
    elif size is None:
        recipe.setdefault("test_split_size", 0.0)
        split_note = (
            "no entry reads a test split and no `test_split_size` is given: no test set "
            f"(`test_split_size: {recipe['test_split_size']}`)"
        )
    elif isinstance(size, bool) or not isinstance(size, (int, float)) or (isinstance(size, int) and size >= 1):
        raise ValueError(
            f"`dataset_mixture.test_split_size: {as_yaml(size)}`: the handbook drew that many rows of the pooled "
            "mixture as its test set; here `test_split_size` is the share of each source's train rows held out, "
            "a number in [0, 1). Write it as a share (e.g. `test_split_size: 0.05`), or add an entry on a test split."
        )
    else:
        recipe["test_split_size"] = size
        split_note = f"`test_split_size: {size}` of each source's train rows is held out as the test set"
    # One `seed` governs the run (`DataArguments.seed` and the trainer's); the handbook's rows cannot be reproduced
    # anyway (another sampler), and with weight 1 the rows kept are the same whatever the seed.
    seed_note = ""
    if "seed" in mixture:
        seed_note = f"; its `seed: {mixture['seed']}` is not read: the recipe's one `seed` also samples the mixture"
    logger.warning(
        "Recipe key `dataset_mixture` (the handbook's form) is now the list form of `dataset_mixer`: its %d datasets "
        "are read as `{path: id, name: config, split, columns, weight}`; %s%s.",
        len(entries),
        split_note,
        seed_note,
    )


def _mixture_entry(entry: Any, index: int) -> dict[str, Any]:
    """One `dataset_mixture.datasets` entry as a `dataset_mixer` list entry; `load_mixture` checks the values."""
    where = f"`dataset_mixture.datasets[{index}]`"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping of {', '.join(MIXTURE_ENTRY_KEYS)}, not {entry!r}.")
    _check_keys(entry, MIXTURE_ENTRY_KEYS, where)
    if not isinstance(entry.get("id"), str) or not entry["id"]:
        raise ValueError(f"{where}: `id` (a hub id or a local path) is required.")
    converted: dict[str, Any] = {"path": entry["id"]}
    if entry.get("config") is not None:
        converted["name"] = entry["config"]
    converted["split"] = entry.get("split", "train")  # the handbook's default, and ours
    if entry.get("columns") is not None:
        converted["columns"] = entry["columns"]
    # The handbook keeps `int(rows * weight)` rows of a shuffle by its seed; `load_mixture` keeps the same share
    # (rounded half up, at least one row, seeded by `seed`). A null weight kept every row, as no weight does here.
    if entry.get("weight") is not None:
        converted["weight"] = entry["weight"]
    return converted


def _read_dataset_name(recipe: dict[str, Any]) -> None:
    """TRL's `dataset_name` (+ `dataset_config`, `dataset_train_split`, `dataset_test_split`) as one list source."""
    if "dataset_name" not in recipe:
        for key in DATASET_NAME_KEYS[1:]:
            if key in recipe:
                raise ValueError(
                    f"`{key}` goes with `dataset_name` (TRL's one-dataset form); with `dataset_mixer` give each "
                    "entry its own `split`."
                )
        return
    if "dataset_mixer" in recipe:
        raise ValueError("`dataset_name` and `dataset_mixer` both name the data: keep one.")
    given = [key for key in (*DATASET_NAME_KEYS, "dataset_config") if key in recipe]
    source: dict[str, Any] = {"path": recipe.pop("dataset_name")}
    config = recipe.pop("dataset_config", None)
    if config is not None:
        source["name"] = config
    mixer = [{**source, "split": recipe.pop("dataset_train_split", "train")}]
    test_split = recipe.pop("dataset_test_split", "test")  # TRL's default
    # The handbook's and TRL's scripts read the test split only to evaluate: `eval_strategy` other than "no".
    if recipe.get("eval_strategy", "no") != "no":
        mixer.append({**source, "split": test_split})
    else:
        recipe.setdefault("test_split_size", 0.0)
    recipe["dataset_mixer"] = mixer
    held_out = "" if len(mixer) > 1 else f", `test_split_size: {recipe['test_split_size']}`"
    logger.warning(
        "Recipe key%s %s (TRL's form) %s now one `dataset_mixer` source: read as `dataset_mixer: %s`%s.",
        "s" if len(given) > 1 else "",
        ", ".join(f"`{key}`" for key in given),
        "are" if len(given) > 1 else "is",
        as_yaml(mixer),
        held_out,
    )


def _side(split: Any) -> str | None:
    """The side `load_mixture` reads a list entry on `split` as (`alignment.data.sources.split_side`), or None for
    an entry it refuses (a split that is not a string, or names neither side)."""
    return split_side(split) if isinstance(split, str) else None


def _check_side(entry: dict[str, Any], index: int) -> None:
    """Refuse a handbook entry whose rows `dataset_mixer` would not read as the handbook did: it pooled every entry
    into its training rows (less the `test_split_size` it drew), whatever the split's name."""
    if not isinstance(entry["split"], str):
        return  # `load_mixture` names the bad value
    where = f"`dataset_mixture.datasets[{index}]` ({entry['path']}, split '{entry['split']}')"
    side = _side(entry["split"])
    if side is None:
        raise ValueError(
            f"{where}: the handbook trained on this split, but `dataset_mixer` tells train rows from test rows by "
            "the split's name, which must contain 'train' or 'test'. Save the split with `save_to_disk` and give "
            "that folder as the entry's `id`, with `split: train`."
        )
    weight = entry.get("weight", 1.0)
    if side == "test" and weight != 1:
        raise ValueError(
            f"{where}: `weight: {weight}` on a test split: the handbook trained on that share of it (it pooled test "
            "splits into its training rows); here an entry on a test split is the test set, kept whole. Remove the "
            "weight to evaluate on the whole split, or remove the entry."
        )


def _check_keys(mapping: dict, valid: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ValueError(f"{where}: unknown key `{key}` ({hint}valid keys: {', '.join(valid)}).")


def as_yaml(value: Any) -> str:
    """`value` as a recipe writes it, on one line (for messages)."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False).removesuffix("\n...\n").strip()
    )
