"""Chat templates and the exact loss masks every stage trains with.

- `templates`: choosing a template (a shipped name from `chat_templates/`, a `.jinja` path, or the tokenizer's own)
  and rendering it; `ChatTemplateError`.
- `turns`: the token invariant. For each assistant turn, the ids before it are exactly what inference feeds the model
  (`apply_chat_template(..., add_generation_prompt=True)`) and the trained ids are exactly the reply and its
  end-of-turn token (`encode_chat`, `encode_prompt_replies`).
- `tool_turns`: the checks that a template renders tool calls and their results.

This package knows nothing of recipes, data sources or stages.
"""
