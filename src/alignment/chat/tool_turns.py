"""What a chat template must render of tool use before an assistant turn can be trained exactly
(`alignment.chat.turns`).

Only assistant messages are trained; ``tool`` messages (the results of an assistant's ``tool_calls``)
are prompt context of the assistant turn after them, like user messages. The functions offered
(``template_kwargs["tools"]``, passed to ``apply_chat_template(..., tools=...)``) and every earlier tool result must
show in a turn's prompt, and each function a turn calls in its reply; a template that drops them (one that knows no
tools) is refused, since it would train replies to results and tools the model never saw, or calls it never makes.
"""

from __future__ import annotations

import json

from alignment.chat.templates import ChatTemplateError, message_text


def called_names(message: dict) -> list[str]:
    """The function names an assistant message's `tool_calls` call (OpenAI's `{"function": {"name"}}` form)."""
    return [call["function"]["name"] for call in message.get("tool_calls") or []]


def check_tool_calls_rendered(reply: str, message: dict, index: int) -> None:
    """Every function assistant message `index` calls must show in its rendered `reply`: a template that drops the
    calls would teach the model to answer without making them."""
    for name in called_names(message):
        if name not in reply:
            raise ChatTemplateError(
                f"turn {index} (assistant): the template does not render the message's call of tool {name!r} "
                f"(rendered turn: {reply[:80]!r}), so the model would learn to answer without calling it. Choose a "
                "chat template that renders `tool_calls` (for example TRL's qwen3.jinja).",
                kind="tool call not rendered",
            )


def check_tool_context(prompt_text: str, prompt: list[dict], template_kwargs: dict | None, where: str) -> None:
    """The prompt of an assistant turn must show the model the tools it may call and every tool result before it:
    tool results are prompt context (never trained), and a template that drops them would train replies to results
    the model never saw."""
    tools = (template_kwargs or {}).get("tools") or []
    missing = [f"tool {tool['function']['name']!r}" for tool in tools if tool["function"]["name"] not in prompt_text]
    results = {
        index: message_text(message).strip() for index, message in enumerate(prompt) if message.get("role") == "tool"
    }
    missing += [  # as written, or as a JSON string (Llama 3.1 writes results with `tojson`)
        f"the result in message {index}"
        for index, text in results.items()
        if text not in prompt_text and json.dumps(text, ensure_ascii=False) not in prompt_text
    ]
    if missing:
        raise ChatTemplateError(
            f"{where}: the template's prompt does not show {', '.join(missing)}. Choose a chat template that renders "
            "`tools` and 'tool' messages (for example TRL's qwen3.jinja).",
            kind="tool context not rendered",
        )
