"""The data formats users already have, and one converter per format to the canonical row of the stage that reads it.

Canonical rows: SFT reads `messages` (OpenAI's chat format, tool use included: see `conversation_problem`) and an
optional `tools` column, the functions offered to the model (`chat_tools`; passed to the chat template as
`apply_chat_template(..., tools=...)`); DPO and reward models read `prompt`/`chosen`/`rejected` (the forms of
`alignment.data.pairs`). `alignment.data.conversion` picks a source's format and applies its converter when the
mixture loads it, so every stage, `alignment.inspect` and the recipe tests see canonical rows only.

Formats, with their roles (LLaMA-Factory's names, mapped to other columns by `columns_map:`) and default columns;
the examples are one JSON line each:

* `messages` (SFT; canonical, kept as read): roles `messages`, `tools`.
  `{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}`; tool use as
  OpenAI writes it: `{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name":
  "get_weather", "arguments": {"city": "Paris"}}}]}`, then `{"role": "tool", "content": "18 C"}`, and a `tools`
  column (a list of OpenAI function specs, or that list as a JSON string).
* `sharegpt` (SFT and preferences): roles `messages` (`conversations`), `system`, `tools`; for preferences `chosen`,
  `rejected`. `{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}`, mapped as
  LLaMA-Factory maps it (`sharegpt_to_messages`; `tags:` renames the keys and role values, `SHAREGPT_TAGS`): human
  -> user, gpt -> assistant, system -> system, function_call (a JSON `{"name", "arguments"}` or a list of them) -> an
  assistant message calling those tools, observation -> tool. A leading system turn wins over the `system` column.
  Preferences: the conversation is the prompt, `chosen` and `rejected` one turn each (`{"from": "gpt", ...}`).
* `alpaca` (SFT and preferences): roles `prompt` (`instruction`), `query` (`input`), `response` (`output`),
  `history`, `system`; for preferences `chosen`, `rejected` instead of `response`.
  `{"instruction": "Add 2 and 3.", "input": "", "output": "5", "history": [["Hi", "Hello!"]]}`: the user turn is
  `instruction + "\n" + input` (either left out when empty, as LLaMA-Factory's converter joins them), after the
  optional system message and the history's (query, response) pairs.
* `prompt_completion` (SFT, TRL's form): roles `prompt`, `completion`. Strings `{"prompt": "Add 2 and 3.",
  "completion": "5"}` become one user turn and one assistant reply (chat models train in the format they are used
  in, as the preference strings do); conversations `{"prompt": [messages], "completion": [messages]}` are joined.
  A prompt with an assistant turn is refused: TRL trains the completion only, while every assistant turn of a chat
  is trained here.
* `preference` (DPO and reward models; canonical, kept as read): roles `prompt`, `chosen`, `rejected`: TRL's forms
  and UltraFeedback's whole chats (`alignment.data.pairs`).
* `prompt` (GRPO; prompt-only rows, TRL's form): role `prompt`, a string (one user turn) or the prompt turns.
  `{"prompt": "Add 2 and 3.", "answer": "5"}`. Its other columns are kept, so that a rule can read a row's reference
  answer (`alignment.runtime.rules`). Detected only when no other format matches (a preference row has a `prompt`
  column too).

* `unpaired` (KTO, TRL's unpaired preference form; canonical, kept as read): roles `prompt`, `completion`, `label`.
  `{"prompt": "2 + 2?", "completion": "4", "label": true}`, or prompt and completion as message lists; `label` says
  whether the completion is desirable (thumbs up) or not.
* `sharegpt` and `alpaca` for KTO: LLaMA-Factory's KTO forms, the SFT row plus a `kto_tag` boolean column; the last
  assistant turn is the completion it labels, the turns before it the prompt.
* `unpaired_preference`, `unpaired_sharegpt_preference`, `unpaired_alpaca_preference` (KTO, read only when a source's
  entry names them): a preference format's pair as two unpaired rows, the chosen reply with label true and the
  rejected one with label false. Pairs are never split unless asked: their columns alone are no KTO format.

GRPO reads the prompt turns of any of these (`PROMPT_FORMATS`): a chat's turns before its last assistant reply, a
pair's prompt, a prompt-only row's prompt; the formats of pairs are named `sharegpt_preference` and
`alpaca_preference` there.

A role's default column is read whenever the source has it (a `system` or `tools` column is never silently
ignored). Bad rows are never repaired: a converter returns a `RowProblem` for a row it cannot read (an empty turn, a
broken turn order, a function call that is not JSON), and the mixture drops and counts it or names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignment.data.pairs import to_pair
from alignment.data.rows import RowProblem, clip, conversation_problem, describe

# LLaMA-Factory's defaults for ShareGPT's keys (`role_tag`, `content_tag`) and role values.
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}


Converter = Callable[[dict, dict[str, str], dict[str, str]], "dict | RowProblem"]


@dataclass(frozen=True)
class DataFormat:
    """One source format: its name, its roles' default columns, the roles it needs, and its converter."""

    name: str
    columns: dict[str, str]  # role (LLaMA-Factory's name) -> default column
    needs: tuple[str, ...]  # roles every row has; their default columns identify the format
    # (row, role -> column, tags) -> the canonical row or why the row is invalid; None: the stage's own row
    convert: Converter | None = None
    keeps_other_columns: bool = False  # the converted row keeps the source's columns that no role reads
    fallback: bool = False  # detected only when no other format matches the source's columns
    # The converter returns a list of this many rows per source row (a pair unpaired into two); a refused row is one.
    rows_per_row: int = 1

    @property
    def identified_by(self) -> tuple[str, ...]:
        return tuple(self.columns[role] for role in self.needs)


# Converters


def chat_tools(value: Any) -> list[dict] | None | RowProblem:
    """A `tools` value as the chat template takes it: a list of OpenAI function specs (`{"type": "function",
    "function": {"name", ...}}`), or None when it offers none; the reason when it is not such a list.

    The list may be written as a JSON string (LLaMA-Factory's `"tools": "[...]"`), and a bare function spec
    (`{"name", "description", "parameters"}`, as glaive writes them) is wrapped as `{"type": "function",
    "function": spec}`, as LLaMA-Factory's tool formatters wrap it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            return RowProblem("malformed tools", f"tools is not valid JSON ({err.msg}): {clip(value)}")
    if not isinstance(value, list):
        return RowProblem("malformed tools", f"tools is {describe(value)}, expected a list of function specs")
    tools = []
    for index, tool in enumerate(value):
        spec = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else tool
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            return RowProblem("malformed tools", f"tool {index} is not a function spec with a name: {describe(tool)}")
        tools.append({"type": "function", "function": spec})
    return tools or None


def sharegpt_to_messages(
    row: dict, columns: dict[str, str] | None = None, tags: dict[str, str] | None = None
) -> list[dict] | RowProblem:
    """A ShareGPT row's chat (`messages`), or the reason the row is not a valid chat.

    `columns` maps roles to columns (default `SHAREGPT_COLUMNS`: the turns in `conversations`, a `system` column read
    when the row has it), `tags` ShareGPT's keys and role values (default `SHAREGPT_TAGS`). Turns map as the module
    doc says; the chat must then pass `conversation_problem` (reasons name the turn's index in the turns column), so
    empty turns, a gpt turn first, two human turns in a row or a function call without its observation are refused.

        {"conversations": [
            {"from": "human", "value": "Area of a 5x3 rectangle?"},
            {"from": "function_call", "value": "{\\"name\\": \\"area\\", \\"arguments\\": {\\"w\\": 5}}"},
            {"from": "observation", "value": "{\\"area\\": 15}"},
            {"from": "gpt", "value": "It is 15."},
        ]}
        -> [
            {"role": "user", "content": "Area of a 5x3 rectangle?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "function": {"name": "area", "arguments": {"w": 5}}}]},
            {"role": "tool", "content": "{\\"area\\": 15}"},
            {"role": "assistant", "content": "It is 15."},
        ]
    """
    defaults = {role: column for role, column in SHAREGPT_COLUMNS.items() if role == "messages" or column in row}
    columns = defaults | (columns or {})
    tags = SHAREGPT_TAGS | (tags or {})
    turns_column = columns["messages"]
    messages = _sharegpt_turns(row.get(turns_column), turns_column, tags)
    if isinstance(messages, RowProblem):
        return messages
    problem = conversation_problem(messages)
    if problem is not None:
        return RowProblem(problem.kind, f"{turns_column}: {problem}")
    return _with_system(messages, row, columns)


def _sharegpt_chat(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """ShareGPT -> SFT: `sharegpt_to_messages`, and the `tools` column (glaive: `"tools": "[{\\"name\\": ...}]"`)."""
    messages = sharegpt_to_messages(row, columns, tags)
    return _chat(messages, row, columns)


def _sharegpt_pair(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """ShareGPT -> preferences (LLaMA-Factory's `ranking: true`), TRL's conversational pair:

    {"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "Hello!"},
     "rejected": {"from": "gpt", "value": "Go away."}}
    -> {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}]}
    """
    tags = SHAREGPT_TAGS | tags
    prompt = _sharegpt_turns(row.get(columns["messages"]), columns["messages"], tags)
    if isinstance(prompt, RowProblem):
        return prompt
    replies = []
    for name in ("chosen", "rejected"):
        reply = row.get(columns[name])
        if not isinstance(reply, dict):
            return RowProblem("malformed reply", f"{columns[name]} is {describe(reply)}, expected one ShareGPT turn")
        message = _sharegpt_turns([reply], columns[name], tags)
        if isinstance(message, RowProblem):
            return message
        replies.append(message)
    prompt = _with_system(prompt, row, columns)
    return (
        prompt if isinstance(prompt, RowProblem) else {"prompt": prompt, "chosen": replies[0], "rejected": replies[1]}
    )


def _sharegpt_turns(turns: Any, column: str, tags: dict[str, str]) -> list[dict] | RowProblem:
    """ShareGPT turns as messages, one per turn (a function call as an assistant message with `tool_calls`)."""
    if not isinstance(turns, list) or not turns:
        kind = "no messages" if isinstance(turns, list) else "messages not a list"
        return RowProblem(kind, f"{column} is {describe(turns)}, expected a non-empty list of turns")
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    roles = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["system_tag"]: "system",
        tags["function_tag"]: "function_call",
        tags["observation_tag"]: "tool",
    }
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_tag not in turn or content_tag not in turn:
            return RowProblem(
                "malformed message",
                f"{column}[{index}] is not a dict with {role_tag!r} and {content_tag!r}: {describe(turn)}",
            )
        tag, value = turn[role_tag], turn[content_tag]
        role = roles.get(tag)
        if role is None:
            return RowProblem(
                "unknown role", f"unknown {role_tag!r} {tag!r} at {column}[{index}] (valid: {', '.join(roles)})"
            )
        if role == "function_call":
            calls = _function_calls(value)
            if calls is None:
                return RowProblem(
                    "malformed tool call",
                    f'{column}[{index}] ({tag}) is not a JSON function call {{"name", "arguments"}} or a list '
                    f"of them: {clip(value)}",
                )
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        else:
            messages.append({"role": role, "content": value})
    return messages


def _function_calls(value: Any) -> list[dict] | None:
    """A ShareGPT function-call turn's calls in OpenAI's form, or None when it is not one call or a list of calls."""
    try:
        calls = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return None
    calls = [calls] if isinstance(calls, dict) else calls
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            return None
        out.append({"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}})
    return out


def _with_system(messages: list[dict], row: dict, columns: dict[str, str]) -> list[dict] | RowProblem:
    """`messages` after the row's `system` column as a system message, unless it is empty or a system turn leads."""
    system = row.get(columns["system"]) if "system" in columns else None
    if system is None or system == "" or messages[0]["role"] == "system":
        return messages
    if not isinstance(system, str):
        return RowProblem("malformed system", f"{columns['system']} is {describe(system)}, expected a string")
    return [{"role": "system", "content": system}, *messages]


def _chat(messages: list[dict] | RowProblem, row: dict, columns: dict[str, str]) -> dict | RowProblem:
    """The canonical SFT row: `messages`, and `tools` when the source has a tools column."""
    if isinstance(messages, RowProblem):
        return messages
    if "tools" not in columns:
        return {"messages": messages}
    tools = chat_tools(row.get(columns["tools"]))
    return tools if isinstance(tools, RowProblem) else {"messages": messages, "tools": tools}


def messages_chat(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """The canonical SFT row of a `messages` source row (the chat and, when the source has them, its `tools`), for a
    stage that converts chats further (raw text renders them); SFT itself keeps such rows as read."""
    return _chat(row.get(columns["messages"]), row, columns)


def _alpaca_prompt(row: dict, columns: dict[str, str]) -> list[dict] | RowProblem:
    """System message, history pairs and `instruction + "\\n" + input`, as LLaMA-Factory's Alpaca converter."""
    texts = {}
    for role in ("prompt", "query", "system"):
        value = row.get(columns[role]) if role in columns else None
        if value is not None and not isinstance(value, str):
            return RowProblem(f"malformed {role}", f"{columns[role]} is {describe(value)}, expected a string")
        texts[role] = value or ""
    messages = [{"role": "system", "content": texts["system"]}] if texts["system"] else []
    history = row.get(columns["history"]) if "history" in columns else None
    for index, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            return RowProblem(
                "malformed history",
                f"{columns['history']}[{index}] is {describe(pair)}, expected a [query, response] pair of strings",
            )
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    query = "\n".join(text for text in (texts["prompt"], texts["query"]) if text)
    return [*messages, {"role": "user", "content": query}]


def _alpaca_chat(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """Alpaca -> SFT:

    {"instruction": "Add these.", "input": "2 and 3", "output": "5"}
    -> {"messages": [{"role": "user", "content": "Add these.\\n2 and 3"}, {"role": "assistant", "content": "5"}]}
    """
    prompt = _alpaca_prompt(row, columns)
    if isinstance(prompt, RowProblem):
        return prompt
    return {"messages": [*prompt, {"role": "assistant", "content": row[columns["response"]]}]}


def _alpaca_pair(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """Alpaca -> preferences: `{"instruction": "2 + 2?", "input": "", "chosen": "4", "rejected": "5"}` ->
    `{"prompt": [{"role": "user", "content": "2 + 2?"}], "chosen": [{"role": "assistant", "content": "4"}], ...}`."""
    prompt = _alpaca_prompt(row, columns)
    if isinstance(prompt, RowProblem):
        return prompt
    pair = {"prompt": prompt}
    for name in ("chosen", "rejected"):
        reply = row[columns[name]]
        if not isinstance(reply, str):
            return RowProblem("malformed reply", f"{columns[name]} is {describe(reply)}, expected a string")
        pair[name] = [{"role": "assistant", "content": reply}]
    return pair


def _prompt_completion_chat(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """TRL prompt-completion -> SFT: `{"prompt": "The sky is", "completion": " blue."}` -> `{"messages": [{"role":
    "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}]}`; message lists are joined."""
    prompt, completion = row[columns["prompt"]], row[columns["completion"]]
    if isinstance(prompt, str) and isinstance(completion, str):
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}
    if not (isinstance(prompt, list) and isinstance(completion, list)):
        return RowProblem(
            "malformed prompt-completion",
            f"prompt and completion must both be strings or both be message lists, got {type(prompt).__name__} and "
            f"{type(completion).__name__}",
        )
    trained = [
        i for i, message in enumerate(prompt) if isinstance(message, dict) and message.get("role") == "assistant"
    ]
    if trained:
        return RowProblem(
            "assistant turn in prompt",
            f"prompt message {trained[0]} is an assistant turn: TRL trains the completion only, but every assistant "
            "turn of a chat is trained here; give the whole chat as `messages` to train it, or drop that turn",
        )
    return {"messages": [*prompt, *completion]}


CHAT_FORMATS = (
    DataFormat("messages", {"messages": "messages", "tools": "tools"}, ("messages",), None),
    DataFormat("sharegpt", SHAREGPT_COLUMNS, ("messages",), _sharegpt_chat),
    DataFormat(
        "alpaca",
        {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system"},
        ("prompt", "response"),
        _alpaca_chat,
    ),
    DataFormat(
        "prompt_completion",
        {"prompt": "prompt", "completion": "completion"},
        ("prompt", "completion"),
        _prompt_completion_chat,
    ),
)
PREFERENCE_FORMATS = (
    DataFormat("preference", {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}, ("chosen", "rejected")),
    DataFormat(
        "sharegpt",
        {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
        ("messages", "chosen", "rejected"),
        _sharegpt_pair,
    ),
    DataFormat(
        "alpaca",
        {
            "prompt": "instruction",
            "query": "input",
            "chosen": "chosen",
            "rejected": "rejected",
            "history": "history",
            "system": "system",
        },
        ("prompt", "chosen", "rejected"),
        _alpaca_pair,
    ),
)


# Unpaired preferences (KTO)


def _kto_label(value: Any, column: str) -> bool | RowProblem:
    """A row's label (TRL's `label`, LLaMA-Factory's `kto_tag`): true for a desirable completion, false otherwise."""
    if isinstance(value, bool):
        return value
    return RowProblem("malformed label", f"{column} is {describe(value)}, expected true or false")


def _kto_tagged(to_chat: Converter) -> Converter:
    """LLaMA-Factory's KTO form of a chat format: the chat's last turn, an assistant reply, is the completion that
    `kto_tag` labels, the turns before it the prompt.

    {"conversations": [{"from": "human", "value": "2 + 2?"}, {"from": "gpt", "value": "5"}], "kto_tag": false}
    -> {"prompt": [{"role": "user", "content": "2 + 2?"}], "completion": [{"role": "assistant", "content": "5"}],
        "label": false}
    """

    def convert(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
        chat = to_chat(row, columns, tags)
        if isinstance(chat, RowProblem):
            return chat
        label = _kto_label(row.get(columns["kto_tag"]), columns["kto_tag"])
        if isinstance(label, RowProblem):
            return label
        if chat.get("tools"):
            return RowProblem(
                "unsupported tools",
                "the row offers tools, which the KTO stage does not pass to the chat template; train tool use with "
                "SFT, or drop the tools column",
            )
        messages = chat["messages"]
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            return RowProblem(
                "malformed completion", "the chat must end with the assistant reply that its kto_tag labels"
            )
        return {"prompt": messages[:-1], "completion": messages[-1:], "label": label}

    return convert


def _unpaired(to_pair_row: Converter | None) -> Converter:
    """A preference format's converter, then the pair as two unpaired rows: chosen (label true), rejected (false)."""

    def convert(row: dict, columns: dict[str, str], tags: dict[str, str]) -> list[dict] | RowProblem:
        canonical = to_pair_row(row, columns, tags) if to_pair_row else {r: row[c] for r, c in columns.items()}
        pair = canonical if isinstance(canonical, RowProblem) else to_pair(canonical)
        if isinstance(pair, RowProblem):
            return pair
        return [
            {"prompt": pair.prompt, "completion": [reply], "label": label}
            for reply, label in ((pair.chosen, True), (pair.rejected, False))
        ]

    return convert


UNPAIRED_FORMATS = (
    DataFormat(
        "unpaired",
        {"prompt": "prompt", "completion": "completion", "label": "label"},
        ("prompt", "completion", "label"),
    ),
    DataFormat(
        "sharegpt",
        {"messages": "conversations", "system": "system", "tools": "tools", "kto_tag": "kto_tag"},
        ("messages", "kto_tag"),
        _kto_tagged(_sharegpt_chat),
    ),
    DataFormat(
        "alpaca",
        {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "history": "history",
            "system": "system",
            "kto_tag": "kto_tag",
        },
        ("prompt", "response", "kto_tag"),
        _kto_tagged(_alpaca_chat),
    ),
    *(
        DataFormat(
            f"unpaired_{f.name}" if f.convert is None else f"unpaired_{f.name}_preference",
            f.columns,
            f.needs,
            _unpaired(f.convert),
            rows_per_row=2,
        )
        for f in PREFERENCE_FORMATS
    ),
)
# The KTO formats a source's columns select; the others split pairs, only when its entry names them.
DETECTED_UNPAIRED_FORMATS = ("unpaired", "sharegpt", "alpaca")


# Prompts (GRPO)


def prompt_turns(messages: list[dict]) -> list[dict]:
    """What a policy answers: a chat's turns before its last assistant reply, or the whole chat when it ends with
    a user or tool turn (a prompt-only chat)."""
    ends_with_reply = messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant"
    return messages[:-1] if ends_with_reply else messages


def _as_prompt(prompt: Any, column: str) -> dict | RowProblem:
    """A prompt string as one user turn; a list of messages as it is (the stage checks it)."""
    if isinstance(prompt, str):
        return {"prompt": [{"role": "user", "content": prompt}]}
    if isinstance(prompt, list):
        return {"prompt": prompt}
    return RowProblem("malformed prompt", f"{column} is {describe(prompt)}, expected a string or a list of messages")


def _prompt_only(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
    """`{"prompt": "Add 2 and 3.", "answer": "5"}` -> `{"prompt": [{"role": "user", "content": "Add 2 and 3."}],
    "answer": "5"}` (the other columns are kept by `keeps_other_columns`)."""
    return _as_prompt(row[columns["prompt"]], columns["prompt"])


def _prompt_of_chat(convert: Converter | None) -> Converter:
    """A chat format's converter, then the chat's prompt turns."""

    def prompt_of(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
        chat = convert(row, columns, tags) if convert else {"messages": row[columns["messages"]]}
        if isinstance(chat, RowProblem):
            return chat
        if not isinstance(chat["messages"], list):
            return RowProblem("messages not a list", f"{columns['messages']} is {describe(chat['messages'])}")
        return {"prompt": prompt_turns(chat["messages"])}

    return prompt_of


def _prompt_of_pair(convert: Converter | None) -> Converter:
    """A preference format's converter, then the pair's prompt turns."""

    def prompt_of(row: dict, columns: dict[str, str], tags: dict[str, str]) -> dict | RowProblem:
        if convert is not None:
            pair = convert(row, columns, tags)
            return pair if isinstance(pair, RowProblem) else {"prompt": pair["prompt"]}
        pair = to_pair({role: row[column] for role, column in columns.items()})
        return pair if isinstance(pair, RowProblem) else {"prompt": pair.prompt}

    return prompt_of


PROMPT_FORMATS = (
    DataFormat("prompt", {"prompt": "prompt"}, ("prompt",), _prompt_only, keeps_other_columns=True, fallback=True),
    # TRL's prompt-completion rows give their prompt as it is (it may hold earlier assistant turns)
    *(
        DataFormat(
            f.name, f.columns, f.needs, _prompt_only if f.name == "prompt_completion" else _prompt_of_chat(f.convert)
        )
        for f in CHAT_FORMATS
    ),
    *(
        DataFormat(
            f.name if f.convert is None else f"{f.name}_preference", f.columns, f.needs, _prompt_of_pair(f.convert)
        )
        for f in PREFERENCE_FORMATS
    ),
)
__all__ = [
    "CHAT_FORMATS",
    "PREFERENCE_FORMATS",
    "PROMPT_FORMATS",
    "SHAREGPT_COLUMNS",
    "SHAREGPT_TAGS",
    "DETECTED_UNPAIRED_FORMATS",
    "UNPAIRED_FORMATS",
    "DataFormat",
    "chat_tools",
    "messages_chat",
    "prompt_turns",
    "sharegpt_to_messages",
]
