"""GRPO's prompts: the prompt turns of any chat, preference or prompt-only source (`alignment.data.formats`:
`PROMPT_FORMATS`), checked as a chat the policy answers next.

TRL renders each prompt with the policy's chat template and its generation prompt, exactly as inference does (the
invariant of `alignment.chat.turns`), and generates until the template's end-of-turn token (the model's
generation config, `alignment.runtime.lifecycle.set_generation_eos`). A prompt-only row's other columns (a
reference answer) reach the rules that name them (`alignment.runtime.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

from alignment.data.rows import RowProblem, conversation_problem, describe


def prompt_row_problem(row: dict) -> RowProblem | None:
    """Why a row's `prompt` is not a chat a policy can answer next, or None: a valid chat whose next turn is the
    assistant's (after an optional system message, user first; the last turn a user turn or tool results)."""
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt:
        return RowProblem("malformed prompt", f"prompt is {describe(prompt)}, expected a non-empty list of messages")
    if isinstance(prompt[-1], dict) and prompt[-1].get("role") in ("assistant", "system"):
        return RowProblem(
            "no turn to answer",
            f"the prompt's last message is {prompt[-1]['role']!r}: the policy answers a user turn or tool results",
        )
    return conversation_problem([*prompt, {"role": "assistant", "content": "(the policy's reply)"}])


@dataclass
class PromptReport:
    """What became of one split's rows."""

    prompts: int
    turns: list[int]
    columns: list[str]

    def __str__(self) -> str:
        longest = max(self.turns, default=0)
        extra = f"; the rules may read {', '.join(self.columns)}" if self.columns else ""
        return f"{self.prompts} prompts (up to {longest} turns{extra})"


def prompt_report(prompts: Dataset) -> PromptReport:
    """How many prompts, how long, and which other columns the rules may read."""
    columns = [column for column in prompts.column_names if column != "prompt"]
    return PromptReport(len(prompts), [len(turns) for turns in prompts["prompt"]], columns)
