"""The row vocabulary every stage shares: the error a bad row raises, the reasons validators return, and the checks.

A stage's row validator (passed to `load_mixture` as `validate_row`) returns None for a good row or a `RowProblem`:
its message names what is wrong, its `kind` is the stable class that dropped rows are counted by. `InvalidRowError`
names the refused row by source, split and index. `conversation_problem` is the check of a `messages` chat that
every stage applies; `describe` and `clip` write a bad value into a message the same way everywhere.
"""

from __future__ import annotations

from typing import Any

VALID_ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A data source the user named cannot be used as given: a missing file or split, a file that is not valid JSON,
    a source without the columns its stage needs, a bad mixture weight. The message names the source (file and line,
    or hub id and split), what was found and what is valid; `alignment.runtime.cli` prints it as one line with exit
    2."""


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


def conversation_problem(messages: Any) -> RowProblem | None:
    """Why `messages` is not a trainable chat, or None if it is.

    A chat is a non-empty list of `{"role", "content"}` dicts with roles among system, user, assistant and tool, and
    non-empty string contents; after an optional leading system message the roles alternate user, assistant, ...
    (starting with user), and at least one assistant turn exists to train on. Messages count from 0.

    Tool use, as OpenAI's chat format writes it: an assistant message may carry `tool_calls` (a non-empty list of
    `{"type": "function", "function": {"name", "arguments"}}`; its content may then be empty or null), and is then
    followed by one or more `tool` messages (the results, prompt context for the assistant message after them),
    then by the assistant again.
    """
    if not isinstance(messages, list):
        return RowProblem("messages not a list", f"messages is {describe(messages)}, expected a list of messages")
    if not messages:
        return RowProblem("no messages", "messages is an empty list")
    for index, message in enumerate(messages):
        problem = _message_problem(message, index)
        if problem is not None:
            return problem
    roles = [message["role"] for message in messages]
    first = 1 if roles[0] == "system" else 0
    allowed: tuple[str, ...] = ("user",)
    for index in range(first, len(roles)):
        role = roles[index]
        if role not in allowed:
            if "tool" in allowed or role == "tool":
                return RowProblem(
                    "roles out of order",
                    f"message {index} is {role!r}, expected {' or '.join(map(repr, allowed))} (an assistant message "
                    "with tool_calls is followed by the 'tool' messages holding their results, then by the assistant "
                    "again)",
                )
            return RowProblem(
                "roles out of order",
                f"message {index} is {role!r}, expected {allowed[0]!r} (after an optional leading system "
                "message, roles alternate user, assistant, ...)",
            )
        if role == "assistant":
            allowed = ("tool",) if messages[index].get("tool_calls") else ("user",)
        else:
            allowed = ("tool", "assistant") if role == "tool" else ("assistant",)
    if "assistant" not in roles:
        return RowProblem("no assistant turn", "no assistant message to train on")
    return None


def _message_problem(message: Any, index: int) -> RowProblem | None:
    """Why message `index` of a chat is malformed on its own (its place in the chat is checked by the caller)."""
    calls = (message.get("tool_calls") or None) if isinstance(message, dict) else None  # [] calls nothing
    if not isinstance(message, dict) or "role" not in message or ("content" not in message and calls is None):
        return RowProblem(
            "malformed message", f"message {index} is not a dict with 'role' and 'content': {describe(message)}"
        )
    role, content = message["role"], message.get("content")
    if role not in VALID_ROLES:
        return RowProblem(
            "unknown role", f"unknown role {role!r} at message {index} (valid: {', '.join(VALID_ROLES)})"
        )
    if calls is not None and role != "assistant":
        return RowProblem("malformed tool call", f"message {index} ({role}) has tool_calls: only the assistant calls")
    if calls is not None:
        problem = _tool_calls_problem(calls, index)
        if problem is not None or content is None:  # a tool-calling message needs no text
            return problem
    if not isinstance(content, str):
        return RowProblem("non-string content", f"message {index} ({role}) content is {describe(content)}")
    if not content.strip() and calls is None:
        return RowProblem("empty content", f"message {index} ({role}) has empty content")
    return None


def _tool_calls_problem(calls: Any, index: int) -> RowProblem | None:
    """Why the `tool_calls` of assistant message `index` are not a non-empty list of named function calls."""
    if not isinstance(calls, list):
        return RowProblem("malformed tool call", f"message {index} tool_calls is {describe(calls)}, expected a list")
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.strip() or "arguments" not in function:
            return RowProblem(
                "malformed tool call",
                f"message {index} tool call {number} is not {{'type': 'function', 'function': {{'name', "
                f"'arguments'}}}}: {describe(call)}",
            )
    return None


def describe(value: Any) -> str:
    """A short description of a bad value for error messages: its type and a clipped repr."""
    return "None" if value is None else f"{type(value).__name__} {clip(value)}"


def clip(value: Any, limit: int = 80) -> str:
    """`value` for a message: a string as it is, else its repr; unprintable characters (control, zero-width,
    direction overrides) escaped so that the message shows them; cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
