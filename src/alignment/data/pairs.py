"""Preference rows (DPO and reward models): the three forms users have, checked and rendered with the chat template.

Accepted forms of a row, all mapped to (prompt messages, chosen reply, rejected reply):

* UltraFeedback-binarized (`HuggingFaceH4/ultrafeedback_binarized`): `chosen` and `rejected` are whole chats that
  share their prompt turns and end with the assistant reply; a `prompt` string column, if present, is ignored in
  favour of those turns (it repeats the first user turn).
* TRL conversational: `prompt` is a list of messages, `chosen` and `rejected` are lists holding one assistant
  message.
* Plain strings: `prompt`, `chosen` and `rejected` are strings; the prompt is treated as one user turn and each
  answer as the assistant reply, so chat models are trained in the format they are used in.

Multi-turn prompts keep every earlier turn, rendered as inference renders them: earlier turns need not be
prefix-stable, only each reply must follow the prompt exactly (`alignment.chat.turns`). A row whose chosen and rejected
prompts differ, or whose chosen reply equals its rejected reply, is invalid (`preference_row_problem`, used as
`load_mixture`'s validator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from alignment.chat.turns import encode_prompt_replies
from alignment.data.rows import RowProblem, conversation_problem

PREFERENCE_COLUMNS = ("chosen", "rejected")


@dataclass
class PreferencePair:
    """One preference row in the common form: the prompt turns and the two assistant replies."""

    prompt: list[dict[str, str]]
    chosen: dict[str, str]
    rejected: dict[str, str]


def _as_message(value: Any, role: str) -> Any:
    return {"role": role, "content": value} if isinstance(value, str) else value


def to_pair(row: dict) -> PreferencePair | RowProblem:
    """The row as a `PreferencePair`, or the reason it is not a valid preference row."""
    missing = [column for column in PREFERENCE_COLUMNS if column not in row]
    if missing:
        return RowProblem("missing column", f"no {' or '.join(missing)} column (the row has: {', '.join(row)})")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")

    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str):
            return RowProblem("malformed prompt", "string chosen/rejected need a string prompt")
        prompt_turns = [{"role": "user", "content": prompt}]
        chosen_reply, rejected_reply = _as_message(chosen, "assistant"), _as_message(rejected, "assistant")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        if isinstance(prompt, list):  # TRL conversational: the prompt is separate, the replies follow it
            prompt_turns, chosen_turns, rejected_turns = prompt, prompt + chosen, prompt + rejected
        else:  # UltraFeedback: whole chats sharing their prompt turns
            chosen_turns, rejected_turns = chosen, rejected
            prompt_turns = chosen[:-1]
            if rejected[:-1] != prompt_turns:
                return RowProblem("prompts differ", "chosen and rejected chats have different prompt turns")
        for name, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
            problem = conversation_problem(turns)
            if problem is not None:
                return RowProblem(problem.kind, f"{name}: {problem}")
            if turns[-1]["role"] != "assistant" or len(turns) != len(prompt_turns) + 1:
                return RowProblem(
                    "malformed reply", f"{name} must add exactly one assistant reply after the prompt turns"
                )
        chosen_reply, rejected_reply = chosen_turns[-1], rejected_turns[-1]
    else:
        return RowProblem(
            "malformed pair",
            f"chosen and rejected must both be strings or both be message lists, got {type(chosen).__name__} and "
            f"{type(rejected).__name__}",
        )

    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not isinstance(reply.get("content"), str) or not reply["content"].strip():
            return RowProblem("empty content", f"{name} reply is empty")
    if not prompt_turns or prompt_turns[-1].get("role") != "user":
        return RowProblem("malformed prompt", "the prompt must end with a user turn")
    if chosen_reply["content"] == rejected_reply["content"]:
        return RowProblem("chosen equals rejected", "chosen and rejected replies are identical: nothing to prefer")
    return PreferencePair(prompt_turns, chosen_reply, rejected_reply)


def preference_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator for preference rows: None when the row is a valid pair."""
    pair = to_pair(row)
    return pair if isinstance(pair, RowProblem) else None


def encode_pair(tokenizer: PreTrainedTokenizerBase, row: dict) -> dict[str, list[int]]:
    """`{"prompt_ids", "chosen_ids", "rejected_ids"}`: the prompt as inference tokenizes it (with the generation
    prompt), then each reply's ids after it up to and including its end-of-turn token (`alignment.chat.turns`).

    Raises:
        ChatTemplateError: a reply has no exact ids after the prompt (names the reply).
        ValueError: the row is not a valid preference row.
    """
    pair = to_pair(row)
    if isinstance(pair, RowProblem):
        raise ValueError(str(pair))
    encoded = encode_prompt_replies(tokenizer, pair.prompt, [pair.chosen, pair.rejected])
    chosen_ids, rejected_ids = encoded.replies
    return {"prompt_ids": encoded.prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
