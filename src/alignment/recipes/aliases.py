"""Former spellings of recipe keys: the alignment-handbook's and TRL's own recipes, read with their meaning.

`alignment.recipes.parser.RecipeParser` applies `canonical_recipe` to the YAML recipe and to the command line (each on
its own, before strict field matching), so `torch_dtype: bfloat16` reaches `ModelArguments.dtype` and
`resolved_config.yaml` writes `dtype`. Everything the parser reads under another name is in this module:

- `ALIASES`: keys renamed without a change of meaning (by transformers 5, TRL 1.x or this handbook). The value is
  read as the new key's, with one warning naming old key -> new key; writing both names is an error.
- `RENAMED_VALUES`: values a key still takes under a new name (`packing_strategy: ffd` is TRL's `bfd`).
- `DROPPED_SETTINGS`: settings TRL stopped reading; accepted (with a warning) only with the value every stage uses.
- `DATASET_FORMS`: the two other ways recipes name their data, the handbook's `dataset_mixture` and TRL's
  `dataset_name`, read as the list form of `dataset_mixer` by `alignment.recipes.dataset_forms`.
- `REFUSED`: keys whose meaning changed: refused with their successor and how to convert.

An alias or refusal applies only when the parser's dataclasses have its successor key (`rpo_alpha` becomes DPO's
`pref_ftx`; a reward recipe has no such field, so there it stays an unknown key). Errors are `ValueError`s naming
the key, which the parser raises as `RecipeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from alignment.recipes.dataset_forms import DATASET_NAME_KEYS, MIXTURE_FORM, as_yaml, read_dataset_forms

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    """A former name of a recipe key: `old: value` is read as the keys and values `convert(value)` returns."""

    old: str
    new: str
    # The type the parser reads `old`'s value as before `convert` (command-line values arrive as strings).
    value_type: Any
    convert: Callable[[Any], dict[str, Any]]
    # Where the old name comes from and how its value is read: the alias table of `--help` and the README.
    note: str
    # What a misspelling of `old` is pointed to (default: the new key).
    hint: str = ""


def _renamed(new: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {new: value}


def _unless_null(new: str) -> Callable[[Any], dict[str, Any]]:
    """`null` means "off" for the old key and is the new key's default, so it sets nothing."""
    return lambda value: {} if value is None else {new: value}


def _torch_dtype(value: str | None) -> dict[str, Any]:
    # transformers 4 (the handbook's pin) loaded `torch_dtype: null` in float32; transformers 5 reads a null `dtype`
    # as "auto" (the checkpoint's dtype), so null keeps its meaning only as float32.
    return {"dtype": "float32" if value is None else value}


def _warmup_ratio(value: float) -> dict[str, Any]:
    # transformers 5 reads a `warmup_steps` below 1 as a share of the total steps, rounded up as `warmup_ratio` was;
    # 1 or more is a number of steps, so a ratio of 1 has no `warmup_steps` spelling.
    if not 0 <= value < 1:
        raise ValueError(
            f"`warmup_ratio: {value}` cannot be read as `warmup_steps`: transformers 5 reads a `warmup_steps` below 1 "
            "as a share of the total steps and 1 or more as a number of steps, so a ratio must be in [0, 1). Write "
            "`warmup_steps: <number of steps>` instead."
        )
    return {"warmup_steps": value}


def _flash_attention(value: bool) -> dict[str, Any]:
    return {"attn_implementation": "flash_attention_2"} if value else {}


ALIASES: dict[str, Alias] = {
    alias.old: alias
    for alias in (
        Alias(
            "torch_dtype",
            "dtype",
            str | None,
            _torch_dtype,
            "TRL's `ModelConfig` renamed it with transformers 5; `null` (float32 in transformers 4) is read as "
            "`float32`, since a null `dtype` now means `auto`",
        ),
        Alias(
            "warmup_ratio",
            "warmup_steps",
            float,
            _warmup_ratio,
            "transformers 5 dropped it: a `warmup_steps` below 1 is that share of the total steps; a ratio of 1 is "
            "refused",
        ),
        Alias("max_seq_length", "max_length", int | None, _renamed("max_length"), "TRL's SFT renamed it"),
        Alias(
            "evaluation_strategy",
            "eval_strategy",
            str,
            _renamed("eval_strategy"),
            "transformers renamed it (and dropped the old name in 4.46)",
        ),
        Alias(
            "use_flash_attention_2",
            "attn_implementation",
            bool,
            _flash_attention,
            "the handbook's former switch: `true` is `attn_implementation: flash_attention_2`, `false` sets nothing",
            hint="`attn_implementation: flash_attention_2` (formerly `use_flash_attention_2: true`)",
        ),
        Alias(
            "preprocessing_num_workers",
            "dataset_num_proc",
            int | None,
            _renamed("dataset_num_proc"),
            "the handbook's former data key: processes that tokenize the data",
        ),
        Alias(
            "hub_model_revision",
            "hub_revision",
            str | None,
            _renamed("hub_revision"),
            "the handbook's former key for the Hub branch pushed to; transformers' `hub_revision`",
        ),
        Alias(
            "rpo_alpha",
            "pref_ftx",
            float | None,
            _unless_null("pref_ftx"),
            "TRL 1.x dropped it: the same weight on the token-mean NLL of the chosen replies (DPO)",
        ),
    )
}

# key -> {former value: (value, why)}: values renamed without a change of meaning.
_NEWEST = "every run resumes from the newest complete checkpoint in `output_dir` by itself"
RENAMED_VALUES: dict[str, dict[Any, tuple[Any, str]]] = {
    "packing_strategy": {
        "ffd": ("bfd", "TRL renamed it: the algorithm was always best-fit decreasing"),
    },
    # transformers' spelling of "the newest checkpoint" (or of none): not a folder named "true".
    "resume_from_checkpoint": {value: (None, _NEWEST) for value in (True, "true", False, "false")},
}

# (key, setting inside its mapping) -> (the value every stage uses, what the stages do, the fix for another value).
# TRL's SFT reads only `skip_prepare_dataset` from `dataset_kwargs` now; the handbook's recipes still write these two.
DROPPED_SETTINGS: dict[tuple[str, str], tuple[Any, str, str]] = {
    ("dataset_kwargs", "add_special_tokens"): (
        False,
        "every stage tokenizes the rendered chat template without adding special tokens",
        "write BOS/EOS into the chat template and remove the setting",
    ),
    ("dataset_kwargs", "append_concat_token"): (
        False,
        "packing (`packing: true`) joins examples without a separator token",
        "remove the setting",
    ),
}

# key -> (its successor, which must be a field of the parser, and how to convert).
REFUSED: dict[str, tuple[str, str]] = {
    "max_completion_length": (
        "max_prompt_length",
        "`max_completion_length` was dropped by TRL 1.x: a reply keeps the tokens `max_length` leaves after its "
        "prompt, and `max_prompt_length` caps the prompt. Remove it and set `max_length` to `max_prompt_length` + "
        "`max_completion_length`.",
    ),
    "dataset_configs": (
        "dataset_mixer",
        "`dataset_configs` (the former handbook's config name per `dataset_mixer` source) is not read: give each "
        "source its own `name` in the list form of `dataset_mixer` (`- {path: ..., name: ..., split: ...}`).",
    ),
}

# Read as a whole by `alignment.recipes.dataset_forms.read_dataset_forms`, with the type the parser reads them as.
_FORM_KEY_TYPES: dict[str, Any] = {"dataset_mixture": dict, **dict.fromkeys(DATASET_NAME_KEYS, str)}
_FORM_HINTS = {
    "dataset_mixture": f"`dataset_mixer` (the handbook's {MIXTURE_FORM} is read as its list form "
    "`[{path, name, split, columns, weight}]`)",
    "dataset_name": "`dataset_mixer` (TRL's `dataset_name`, with `dataset_config`, `dataset_train_split` and "
    "`dataset_test_split`, is read as one list-form source)",
}

# (old keys, new key, how it is read): the dataset forms' rows of the alias table in `--help` and the README.
DATASET_FORMS = (
    (
        "dataset_mixture",
        "dataset_mixer",
        "the handbook's form: each `{id, config, split, columns, weight}` becomes `{path, name, split, columns, "
        "weight}` (`weight` the share of the source's rows kept, `columns` the columns selected, as in the handbook). "
        "Entries on test splits are the test set, kept whole (the handbook pooled every entry and drew "
        "`test_split_size` rows at random), so a weight on one is refused, as is a split named neither train nor "
        "test; with no test entry `test_split_size` is the share held out (a row count is refused; none: no test "
        "set). Its `seed` is the recipe's one `seed`",
    ),
    (
        "dataset_name, dataset_config, dataset_train_split, dataset_test_split",
        "dataset_mixer",
        "TRL's form: one source, read on its train split, and on its test split (default `test`) when "
        "`eval_strategy` is not `no`; without a test entry `test_split_size: 0` keeps every train row",
    ),
)


def former_key_types(fields: Collection[str]) -> dict[str, Any]:
    """The former keys that apply to a parser with `fields`, each with the type its value is read as."""
    types = {old: alias.value_type for old, alias in ALIASES.items() if alias.new in fields}
    if "dataset_mixer" in fields:
        types.update(_FORM_KEY_TYPES)
    return types


def former_key_hint(old: str) -> str:
    """What a misspelling of the former key `old` is pointed to: "Did you mean <this>?"."""
    if old in _FORM_HINTS:
        return _FORM_HINTS[old]
    alias = ALIASES[old]
    return alias.hint or f"`{alias.new}` (formerly `{old}`)"


def alias_table(fields: Collection[str]) -> list[tuple[str, str, str]]:
    """(old key, new key, how it is read) for every former key that applies to a parser with `fields`."""
    rows = [(alias.old, alias.new, alias.note) for alias in ALIASES.values() if alias.new in fields]
    rows += [row for row in DATASET_FORMS if row[1] in fields]
    rows += [
        (f"{key}: {old}", f"{key}: {new}", why)
        for key, renamed in RENAMED_VALUES.items()
        if key in fields
        for old, (new, why) in renamed.items()
    ]
    rows += [
        (f"{key}.{setting}: {as_yaml(value)}", "(dropped)", f"TRL does not read it; {behaviour}")
        for (key, setting), (value, behaviour, _) in DROPPED_SETTINGS.items()
        if key in fields
    ]
    return rows


def canonical_recipe(values: dict[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """`values` with every former key, renamed value and dropped setting read as the parser's fields read them.

    The values of former keys must already have their `former_key_types` type. Logs one warning per conversion.
    """
    recipe = dict(values)
    for key, (successor, message) in REFUSED.items():
        if key in recipe and key not in fields and successor in fields:
            raise ValueError(message)
    for old, alias in ALIASES.items():
        if old not in recipe or alias.new not in fields:
            continue
        if alias.new in recipe:
            raise ValueError(
                f"`{old}` and `{alias.new}` are one key (`{old}` is its former name): keep `{alias.new}`."
            )
        value = recipe.pop(old)
        converted = alias.convert(value)
        recipe.update(converted)
        read_as = ", ".join(f"`{key}: {as_yaml(item)}`" for key, item in converted.items()) or "nothing (the default)"
        logger.warning(
            "Recipe key `%s` is now `%s`: `%s: %s` is read as %s.", old, alias.new, old, as_yaml(value), read_as
        )
    _rename_values(recipe)
    _drop_settings(recipe)
    if "dataset_mixer" in fields:
        read_dataset_forms(recipe)
    return recipe


def _rename_values(recipe: dict[str, Any]) -> None:
    for key, renamed in RENAMED_VALUES.items():
        value = recipe.get(key)
        if isinstance(value, (str, bool)) and value in renamed:
            recipe[key], why = renamed[value]
            logger.warning("`%s: %s` is now `%s: %s` (%s).", key, value, key, recipe[key], why)


def _drop_settings(recipe: dict[str, Any]) -> None:
    for (key, setting), (value, behaviour, fix) in DROPPED_SETTINGS.items():
        mapping = recipe.get(key)
        if not isinstance(mapping, dict) or setting not in mapping:
            continue
        written = f"`{key}.{setting}: {as_yaml(mapping[setting])}`"
        if mapping[setting] != value:
            raise ValueError(f"{written} is not read by TRL any more, and {behaviour}: {fix}.")
        recipe[key] = {name: item for name, item in mapping.items() if name != setting} or None
        logger.warning("%s is dropped: TRL does not read it any more, and %s, as it asks.", written, behaviour)
