"""GRPO's prompts: the prompt turns of any chat source (messages, ShareGPT, Alpaca, prompt-completion, tool use),
checked as every SFT row is, its last assistant reply dropped.

TRL renders each prompt with the policy's chat template and its generation prompt, exactly as inference does (the
invariant of `alignment.chat.turns`), and generates until the template's end-of-turn token (the model's
generation config, `alignment.runtime.lifecycle.set_generation_eos`).
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset


def prompt_turns(messages: list[dict]) -> list[dict]:
    """The turns before the chat's last assistant reply: what the policy answers."""
    last = max(index for index, message in enumerate(messages) if message["role"] == "assistant")
    return messages[:last]


@dataclass
class PromptReport:
    """What became of one split's rows."""

    prompts: int
    turns: list[int]

    def __str__(self) -> str:
        longest = max(self.turns, default=0)
        return f"{self.prompts} prompts (the last assistant reply of each chat dropped; up to {longest} turns)"


def to_prompts(rows: Dataset) -> tuple[Dataset, PromptReport]:
    """Checked chat rows (`messages`) as TRL's prompt-only rows (`prompt`: the prompt turns)."""
    prompts = rows.map(
        lambda row: {"prompt": prompt_turns(row["messages"])}, remove_columns=rows.column_names, desc="Prompt turns"
    )
    return prompts, PromptReport(len(prompts), [len(turns) for turns in prompts["prompt"]])
