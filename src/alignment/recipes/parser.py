"""Strict recipe parsing: `script.py recipe.yaml [--key value ...]` into a fixed tuple of dataclasses.

Precedence is dataclass defaults < YAML recipe < command line. Every key must be a field of one of the dataclasses:
an unknown key (a YAML typo such as `betaa: 0.5`, or `--learning_rat` on the CLI) is an error that names it and the
closest valid key, because a silently ignored key is a run that trained with the wrong setting. A key that is a field
of several dataclasses (e.g. `seed`) is given to each of them, so one value governs the whole run.

Values are checked against the field's type before the dataclass sees them: `num_train_epochs: three` or
`per_device_train_batch_size: 1.5` is an error naming the field. Strings are converted the way the CLI needs
(PyYAML reads `5e-7` as a string, so float fields accept numeric strings).

Former key names (the alignment-handbook's and TRL's recipes: `torch_dtype`, `warmup_ratio`, `dataset_mixture`, ...)
are read as their new keys first, in the recipe and on the command line each on its own, with one warning each; the
table and the keys refused because their meaning changed are in `alignment.recipes.aliases`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from alignment.recipes.aliases import alias_table, canonical_recipe, former_key_hint, former_key_types


class RecipeError(ValueError):
    """A recipe or command line that cannot be parsed into the script's dataclasses."""


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert `value` to `annotation`, or raise `RecipeError` naming `key`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if annotation is Any or annotation is object:
        return value
    if origin in (typing.Union, types.UnionType):
        # Only YAML's null and the CLI spellings `null`/`None` mean None: "none" is a real value of some fields
        # (`report_to: none`).
        if type(None) in args and (value is None or value in ("null", "None")):
            return None
        members = [a for a in args if a is not type(None)]
        # Prefer a member the value already is (a dict for `dict | str`), then try each in order.
        for member in members:
            member_origin = typing.get_origin(member) or member
            if isinstance(member_origin, type) and isinstance(value, member_origin) and member_origin is not bool:
                return _coerce(value, member, key)
        for member in members:
            try:
                return _coerce(value, member, key)
            except RecipeError:
                continue
        raise RecipeError(f"`{key}`: {value!r} matches none of {_type_name(annotation)}")
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"`{key}`: {value!r} is not one of {list(args)}")
        return value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        valid = [member.value for member in annotation]
        if isinstance(value, annotation):
            return value
        if value not in valid:
            raise RecipeError(f"`{key}`: {value!r} is not one of {valid}")
        return annotation(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise RecipeError(f"`{key}`: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise RecipeError(f"`{key}`: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise RecipeError(f"`{key}`: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"`{key}`: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"`{key}`: expected a string, got {value!r}")
    if origin is list or annotation is list:
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = yaml.safe_load(value)
        items = value if isinstance(value, (list, tuple)) else [value]
        item_type = args[0] if args else Any
        return [_coerce(item, item_type, key) for item in items]
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise RecipeError(f"`{key}`: expected a mapping, got {value!r}")
        return value
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one YAML mapping."""


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the last value silently, so a
    recipe that sets `learning_rate` twice would train with whichever line comes later."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):  # a list or mapping as a key: the parser refuses it
                continue
            line = key_node.start_mark.line + 1
            if key in lines:
                raise DuplicateKeyError(f"`{key}` is written twice, on lines {lines[key]} and {line}: keep one.")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


class RecipeParser:
    """Parse a recipe into instances of `dataclass_types`, strictly.

    Usage in a script:

        parser = RecipeParser((ModelArguments, DataArguments, SFTConfig))
        model_args, data_args, training_args = parser.parse()
    """

    def __init__(self, dataclass_types: tuple[type, ...]):
        self.dataclass_types = dataclass_types
        self._fields: dict[str, list[tuple[type, dataclasses.Field]]] = {}
        for cls in dataclass_types:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.init:
                    f.type = hints[f.name]
                    self._fields.setdefault(f.name, []).append((cls, f))
        # Former key names that apply here (their new key is one of the fields), with the type each is read as.
        self._former = former_key_types(self._fields)

    def parse(self, argv: list[str] | None = None) -> tuple:
        """Parse `argv` (default `sys.argv[1:]`): an optional recipe path, then `--key value` overrides."""
        argv = sys.argv[1:] if argv is None else list(argv)
        if "-h" in argv or "--help" in argv:
            print(self.format_help())
            raise SystemExit(0)
        recipe: dict[str, Any] = {}
        if argv and not argv[0].startswith("-"):
            recipe = self.canonical(self.read_recipe(argv.pop(0)))
        # Read on its own, so `--torch_dtype` on the command line overrides a recipe's `dtype` as `--dtype` would.
        overrides = self.canonical(self._parse_cli(argv))
        return self._build({**recipe, **overrides})

    @staticmethod
    def read_recipe(path: str | Path) -> dict[str, Any]:
        """Read a YAML recipe as a mapping; an empty file is an empty recipe."""
        path = Path(path)
        if path.is_dir():
            recipes = sorted(p.name for p in path.glob("*.yaml"))
            inside = f" (it holds {', '.join(recipes)})" if recipes else ""
            raise RecipeError(f"Recipe {path} is a folder{inside}: give the path of a recipe file.")
        if not path.is_file():
            raise RecipeError(f"Recipe {path} does not exist")
        with open(path, encoding="utf-8") as handle:
            try:
                content = yaml.load(handle, Loader=UniqueKeyLoader)  # a SafeLoader
            except DuplicateKeyError as err:
                raise RecipeError(f"Recipe {path}: {err}") from err
            except yaml.YAMLError as err:
                raise RecipeError(f"Recipe {path} is not valid YAML: {err}") from err
        if content is None:
            return {}
        if not isinstance(content, dict):
            raise RecipeError(f"Recipe {path} must be a mapping of keys to values, got {type(content).__name__}")
        return content

    def parse_dict(self, values: dict[str, Any]) -> tuple:
        """Check and convert `values`, then build each dataclass (its `__post_init__` checks run here)."""
        return self._build(self.canonical(values))

    def canonical(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` with every former key name read as its new key (`alignment.recipes.aliases`), each logged once."""
        typed = {
            key: _coerce(value, self._former[key], key) if key in self._former else value
            for key, value in values.items()
        }
        try:
            return canonical_recipe(typed, self._fields)
        except ValueError as err:  # a former key whose value has no meaning under the new key: it names both
            raise RecipeError(str(err)) from err

    def _build(self, values: dict[str, Any]) -> tuple:
        unknown = [key for key in values if key not in self._fields]
        if unknown:
            raise RecipeError("; ".join(self._unknown_key_message(key) for key in unknown))
        per_class: dict[type, dict[str, Any]] = {cls: {} for cls in self.dataclass_types}
        for key, value in values.items():
            for cls, f in self._fields[key]:
                per_class[cls][key] = _coerce(value, f.type, key)
        try:
            return tuple(cls(**per_class[cls]) for cls in self.dataclass_types)
        except RecipeError:
            raise
        except ValueError as err:  # a `__post_init__` check (ours or transformers'): it names the field and the fix
            raise RecipeError(str(err)) from err

    def _unknown_key_message(self, key: str) -> str:
        close = difflib.get_close_matches(key, [*self._fields, *self._former], n=1, cutoff=0.6)
        if not close:
            return f"Unknown recipe key `{key}`. Run the script with --help to list valid keys."
        # A misspelt former key is pointed to its new key, not to the former spelling.
        hint = former_key_hint(close[0]) if close[0] in self._former else f"`{close[0]}`"
        return f"Unknown recipe key `{key}`. Did you mean {hint}?"

    def _parse_cli(self, argv: list[str]) -> dict[str, Any]:
        """`--key value`, `--key=value`, `--key v1 v2` (lists) and a bare `--flag` (true)."""
        overrides: dict[str, Any] = {}
        i = 0
        while i < len(argv):
            token = argv[i]
            if not token.startswith("--"):
                raise RecipeError(f"Unexpected argument {token!r}: overrides are written `--key value`")
            key, _, inline = token[2:].partition("=")
            key = key.replace("-", "_")  # an unknown key is refused with the recipe's, after former names are read
            i += 1
            if inline:
                overrides[key] = inline
                continue
            values = []
            while i < len(argv) and not (argv[i].startswith("--") and len(argv[i]) > 2):
                values.append(argv[i])
                i += 1
            if not values:
                overrides[key] = True
            else:
                overrides[key] = values if len(values) > 1 else values[0]
        return overrides

    def format_help(self) -> str:
        """Every valid key with its type, default and help text, grouped by dataclass."""
        lines = ["usage: script.py [RECIPE.yaml] [--key value ...]", ""]
        for cls in self.dataclass_types:
            lines.append(f"{cls.__name__}:")
            for f in dataclasses.fields(cls):
                if not f.init:
                    continue
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    default = "(required)"
                help_text = f.metadata.get("help", "")
                lines.append(f"  --{f.name} ({_type_name(f.type)}, default {default!r})  {help_text}".rstrip())
            lines.append("")
        former = alias_table(self._fields)
        if former:
            lines.append("Former key names, read as the new key with a warning (alignment.recipes.aliases):")
            lines.extend(f"  {old} -> {new}: {note}" for old, new, note in former)
            lines.append("")
        return "\n".join(lines)
