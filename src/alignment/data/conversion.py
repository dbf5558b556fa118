"""A source's format resolved and its splits converted to the canonical row of the stage that reads them.

`load_mixture` calls `convert_source` on each source right after reading it (and selecting its `columns`), before
the column checks and the stage's row check. The stage's required columns name its canonical row (`target_for`):
`messages` for SFT, `chosen`/`rejected` for preferences, `prompt` for GRPO's prompts; a stage with rows of its own
(value traces) reads its sources as they are, and refuses a `format` key.

Choosing the format of a source: a `dataset_mixer` list entry's `format:` names it; absent, it is detected from the
source's columns. Each format is identified by the default columns of the roles it needs (`DataFormat.needs`); a
format whose identifying columns include another's wins (sharegpt's `conversations, chosen, rejected` over
preference's `chosen, rejected`), a fallback format (prompt-only rows) is chosen only when no other matches, and
the one left is logged once per source; none, or more than one, is a `DataError` naming the source, its columns
and the valid formats. `columns_map:` maps a role to the source's column
and `tags:` renames ShareGPT's keys and role values (both need `format:`; `alignment.data.formats` lists the roles).

Converting: the stage's own format is kept as read (`columns_map` only renames); any other is a batched `datasets`
map (memory bounded by the batch), whose rows are stored as JSON (`CHAT`, `datasets.Json`) so that each message
keeps exactly its own keys: Arrow would give every message every key seen in any row, and tool-call arguments differ
by tool. A row that a converter cannot read keeps its reason in `PROBLEM_COLUMN`, which the mixture's row check reads
(`pop_problem`) before the stage's validator: dropped and counted with `skip_invalid_rows`, else an
`InvalidRowError` naming the source and row. Mixing: a source without an optional column another has (`tools`) gets
it as null (`add_optional_columns`), and message lists read as Arrow structs are cast to JSON where another source
holds them as JSON (`as_json_where_any`).

Raw text (`text_target`): the canonical row is one document, `text`. A `text` column is kept as read and is the only
format detected; a chat source is read only when its entry names its chat format (`format: messages`, `sharegpt`,
...), and each chat is then converted as for SFT, checked (`conversation_problem`) and rendered whole by the
stage's `render_chat` (its chat template, system and tool turns included): a document of the text the model sees at
inference. A chat the template refuses is a row problem like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from datasets import Dataset, Features, Json, List, Value

from alignment.chat.templates import ChatTemplateError
from alignment.data.formats import (
    CHAT_FORMATS,
    DETECTED_UNPAIRED_FORMATS,
    PREFERENCE_FORMATS,
    PROMPT_FORMATS,
    SHAREGPT_TAGS,
    UNPAIRED_FORMATS,
    DataFormat,
    messages_chat,
)
from alignment.data.rows import DataError, RowProblem, conversation_problem

logger = logging.getLogger(__name__)

# A converted row's reason for being invalid (None when it is valid), read and removed by the mixture's row check.
PROBLEM_COLUMN = "format_problem"
CHAT = List(Json())
_PROBLEM = {"kind": Value("string"), "message": Value("string")}
_BATCH = 1000


@dataclass(frozen=True)
class Target:
    """The canonical row of the stages whose required columns are `required`, and the formats converted to it."""

    stage: str
    required: tuple[str, ...]
    columns: tuple[str, ...]  # a converted row's columns
    formats: tuple[DataFormat, ...]
    # Columns a converted row has when its source has them; a mixture adds them as null to sources without them.
    optional: tuple[str, ...] = ()
    # How a converted row's columns are stored: chats as JSON (`CHAT`), documents as strings; `features` names the
    # columns stored otherwise (a label as a bool).
    feature: Any = field(default_factory=lambda: CHAT)
    features: dict[str, Any] = field(default_factory=dict)
    # The formats detection may choose from a source's columns; None: every format. Others need `format:`.
    detected: tuple[str, ...] | None = None
    # Why a format detection leaves out is read only on request: said when a source's columns are that format's.
    on_request: str = ""

    def format_named(self, name: str) -> DataFormat | None:
        return next((format_ for format_ in self.formats if format_.name == name), None)

    def listing(self) -> str:
        return "; ".join(f"{f.name} ({', '.join(f.identified_by)})" for f in self.formats)


@dataclass(frozen=True)
class SourceFormat:
    """A source's format as resolved: the format, the roles this source has (role -> column) and its ShareGPT tags."""

    format: DataFormat
    target: Target
    columns: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)

    def apply(self, dataset: Dataset, where: str) -> Dataset:
        """`dataset` as canonical rows: renamed (the stage's own format) or converted, with `PROBLEM_COLUMN`."""
        missing = [column for column in self.columns.values() if column not in dataset.column_names]
        if missing:
            raise DataError(
                f"{where}: format '{self.format.name}' reads column {', '.join(map(repr, missing))}, which it does "
                f"not have (it has: {', '.join(dataset.column_names)})."
            )
        if self.format.convert is None:
            renames = {column: role for role, column in self.columns.items() if column != role}
            taken = [role for role in renames.values() if role in dataset.column_names]
            if taken:
                raise DataError(
                    f"{where}: `columns_map` renames a column to {', '.join(map(repr, taken))}, which it already has "
                    "(select the columns to read with `columns`)."
                )
            return dataset.rename_columns(renames)
        columns = [*self.target.columns, *(column for column in self.target.optional if column in self.columns)]
        kept = self._kept_columns(dataset, columns, where)
        features = Features(
            {
                **{column: self.target.features.get(column, self.target.feature) for column in columns},
                **{column: dataset.features[column] for column in kept},
                PROBLEM_COLUMN: _PROBLEM,
            }
        )
        return dataset.map(
            self._convert_batch,
            batched=True,
            with_indices=True,
            batch_size=_BATCH,
            remove_columns=dataset.column_names,
            features=features,
            fn_kwargs={"columns": columns, "kept": kept},
            desc=f"Converting {where} from {self.format.name}",
        )

    def _kept_columns(self, dataset: Dataset, columns: list[str], where: str) -> list[str]:
        """The source's columns that no role reads, for a format that keeps them (`DataFormat.keeps_other_columns`)."""
        if not self.format.keeps_other_columns:
            return []
        kept = [column for column in dataset.column_names if column not in self.columns.values()]
        taken = [column for column in kept if column in columns]
        if taken:
            raise DataError(
                f"{where}: column {', '.join(map(repr, taken))} would be replaced by the converted row's (select the "
                "columns to read with `columns`)."
            )
        return kept

    def _convert_batch(
        self, batch: dict[str, list], indices: list[int], columns: list[str], kept: list[str]
    ) -> dict[str, list]:
        """Each source row as its converted rows (one, or `rows_per_row` for a format that unpairs), or as one row
        holding its problem; where rows multiply, the problem names its source row, since indices no longer match."""
        out: dict[str, list] = {column: [] for column in (*columns, *kept, PROBLEM_COLUMN)}
        for index, values in zip(indices, zip(*batch.values(), strict=True), strict=True):
            source_row = dict(zip(batch, values, strict=True))
            converted = self.format.convert(source_row, self.columns, self.tags)
            problem = converted if isinstance(converted, RowProblem) else None
            if problem is not None and self.format.rows_per_row > 1:
                problem = RowProblem(problem.kind, f"source row {index}: {problem}")
            rows = [None] if problem is not None else converted if self.format.rows_per_row > 1 else [converted]
            for row in rows:
                for column in columns:
                    out[column].append(None if row is None else row.get(column))
                for column in kept:
                    out[column].append(source_row[column])
                out[PROBLEM_COLUMN].append(
                    None if problem is None else {"kind": problem.kind, "message": str(problem)}
                )
        return out


def pop_problem(row: dict) -> RowProblem | None:
    """Remove `PROBLEM_COLUMN` from a converted row: the reason its conversion failed, or None."""
    problem = row.pop(PROBLEM_COLUMN, None)
    return None if problem is None else RowProblem(problem["kind"], problem["message"])


TARGETS = (
    Target("SFT", ("messages",), ("messages",), CHAT_FORMATS, optional=("tools",)),
    Target("preference (DPO, reward)", ("chosen", "rejected"), ("prompt", "chosen", "rejected"), PREFERENCE_FORMATS),
    Target("prompt (GRPO)", ("prompt",), ("prompt",), PROMPT_FORMATS),
    Target(
        "unpaired preference (KTO)",
        ("prompt", "completion", "label"),
        ("prompt", "completion", "label"),
        UNPAIRED_FORMATS,
        features={"label": Value("bool")},
        detected=DETECTED_UNPAIRED_FORMATS,
        on_request="a pair becomes two unpaired rows, its chosen reply with label true and its rejected one with "
        "label false, only when asked, so that no pair is split silently",
    ),
)


# Renders one canonical chat row (`messages`, and `tools` when it has them) as the text of one document.
ChatRenderer = Callable[[dict], str]
TEXT_COLUMNS = ("text",)
TEXT_FORMAT = DataFormat("text", {"text": "text"}, ("text",))


def text_target(render_chat: ChatRenderer | None) -> Target:
    """The canonical row of raw-text stages (module doc): `text` kept as read, and, given `render_chat`, every SFT
    chat format, named by a source's `format:`, converted to its chat and rendered whole."""
    chats = tuple(
        DataFormat(f.name, f.columns, f.needs, partial(_rendered_chat, f.convert or messages_chat, render_chat))
        for f in (CHAT_FORMATS if render_chat is not None else ())
    )
    return Target(
        "raw text", TEXT_COLUMNS, TEXT_COLUMNS, (TEXT_FORMAT, *chats), feature=Value("string"), detected=("text",)
    )


def _rendered_chat(to_chat, render_chat: ChatRenderer, row: dict, columns: dict, tags: dict) -> dict | RowProblem:
    """A source row in a chat format as one document: converted (`to_chat`), checked, rendered by `render_chat`."""
    chat = to_chat(row, columns, tags)
    if isinstance(chat, RowProblem):
        return chat
    problem = conversation_problem(chat["messages"])
    if problem is not None:
        return problem
    try:
        return {"text": render_chat(chat)}
    except ChatTemplateError as err:
        if err.of_every_row:
            raise
        return RowProblem(err.kind, str(err))


def target_for(
    required_columns: list[str] | tuple[str, ...] | None, render_chat: ChatRenderer | None = None
) -> Target | None:
    """The canonical row a stage reads, from its required columns; None for a stage with rows of its own.
    `render_chat` renders chats as documents for the raw-text row (`text_target`)."""
    required = tuple(required_columns or ())
    if required == TEXT_COLUMNS:
        return text_target(render_chat)
    return next((target for target in TARGETS if target.required == required), None)


def resolve_format(
    where: str,
    columns: list[str],
    target: Target,
    name: str | None = None,
    columns_map: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> SourceFormat:
    """The format of a source with `columns`: `name` if given, else detected (module doc); its roles and tags."""
    if name is None:
        detected = [f for f in target.formats if target.detected is None or f.name in target.detected]
        found = [f for f in detected if all(column in columns for column in f.identified_by)]
        found = [f for f in found if not any(set(f.identified_by) < set(g.identified_by) for g in found)]
        if len(found) > 1:
            found = [f for f in found if not f.fallback]
        requested = [
            f for f in target.formats if f not in detected and all(column in columns for column in f.identified_by)
        ]
        if not found and requested and target.on_request:
            raise DataError(
                f"{where}: its columns ({', '.join(columns)}) are those of format '{requested[0].name}', which the "
                f"{target.stage} rows are read from only when its entry names it ({target.on_request}). Set "
                f"`format: {requested[0].name}` in its entry of the list form of `dataset_mixer`."
            )
        if len(found) != 1:
            what = (
                f"its columns match more than one {target.stage} format: {', '.join(f.name for f in found)}"
                if found
                else f"no {target.stage} format matches its columns"
            )
            named_only = [f.name for f in target.formats if f not in detected]
            only = f" Read only when its entry names them: {', '.join(named_only)}." if named_only else ""
            raise DataError(
                f"{where}: {what} (it has: {', '.join(columns)}). Formats and the columns that identify them: "
                f"{target.listing()}.{only} Set `format:` (and `columns_map:` for other column names) in its entry "
                "of the list form of `dataset_mixer`."
            )
        format_ = found[0]
        logger.info(
            "%s: format '%s' detected from its columns (%s)", where, format_.name, ", ".join(format_.identified_by)
        )
    else:
        format_ = target.format_named(name)
        if format_ is None:
            raise DataError(
                f"{where}: `format: {name}` is not one of the {target.stage} formats (valid: "
                f"{', '.join(f.name for f in target.formats)})."
            )
    for role in columns_map or {}:
        if role not in format_.columns:
            raise DataError(
                f"{where}: `columns_map` role '{role}' is not one of format '{format_.name}' (valid: "
                f"{', '.join(format_.columns)})."
            )
    if tags and format_.name != "sharegpt":
        raise DataError(f"{where}: `tags` name ShareGPT's keys and roles; format '{format_.name}' has none.")
    for key in tags or {}:
        if key not in SHAREGPT_TAGS:
            raise DataError(f"{where}: unknown `tags` key '{key}' (valid: {', '.join(SHAREGPT_TAGS)}).")
    roles = {role: column for role, column in format_.columns.items() if column in columns or role in format_.needs}
    return SourceFormat(format_, target, roles | (columns_map or {}), dict(tags or {}))


def convert_source(
    where: str,
    splits: dict[str, Dataset],
    target: Target | None,
    name: str | None = None,
    columns_map: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Dataset]:
    """A source's splits as `target`'s canonical rows, its format resolved once (from its first split's columns)."""
    if target is None:
        if name is not None:
            raise DataError(
                f"{where}: `format` converts chat, preference, prompt and text data; this stage reads its rows as "
                "they are."
            )
        return splits
    if not splits:
        return splits
    resolved = resolve_format(where, next(iter(splits.values())).column_names, target, name, columns_map, tags)
    return {split: resolved.apply(dataset, f"{where} (split '{split}')") for split, dataset in splits.items()}


def add_optional_columns(loaded: list[dict[str, Dataset]], target: Target) -> None:
    """An optional canonical column (`tools`) that some source has is added, all null, to the splits without it."""
    datasets_ = [dataset for splits in loaded for dataset in splits.values()]
    for column in target.optional:
        feature = next((d.features[column] for d in datasets_ if column in d.column_names), None)
        if feature is None:
            continue
        for splits in loaded:
            for split, dataset in splits.items():
                if column not in dataset.column_names:
                    splits[split] = dataset.map(
                        _nulls,
                        batched=True,
                        with_indices=True,
                        fn_kwargs={"column": column},
                        features=Features({**dataset.features, column: feature}),
                        desc=f"Adding a null `{column}` column",
                    )


def _nulls(batch: dict, indices: list[int], column: str) -> dict:
    return {column: [None] * len(indices)}


def as_json_where_any(parts: list[Dataset]) -> list[Dataset]:
    """A column of message lists stored as JSON in one part (converted chats: `CHAT`) is cast to JSON in every part
    that holds it as a list of structs (a list read as written), so that they can be mixed; the reverse cast would
    lose each message's own keys."""
    json_columns = {column for part in parts for column, feature in part.features.items() if feature == CHAT}
    out = []
    for part in parts:
        cast = {c: CHAT for c in json_columns if isinstance(part.features.get(c), List) and part.features[c] != CHAT}
        out.append(part.cast(Features({**part.features, **cast})) if cast else part)
    return out


__all__ = [
    "CHAT",
    "ChatRenderer",
    "PROBLEM_COLUMN",
    "TARGETS",
    "SourceFormat",
    "Target",
    "add_optional_columns",
    "as_json_where_any",
    "convert_source",
    "pop_problem",
    "resolve_format",
    "target_for",
    "text_target",
]
