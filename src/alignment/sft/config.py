"""The dSFT recipe's training config: TRL's `SFTConfig` with the checks every stage config runs."""

from __future__ import annotations

from dataclasses import dataclass

import trl

from alignment.recipes.arguments import StageTrainingArguments


@dataclass
class SFTConfig(StageTrainingArguments, trl.SFTConfig):
    """TRL's `SFTConfig`. The dataset reaches TRL already tokenized with its loss mask (`tokenize_chats`), so TRL's
    own template switches are refused rather than silently ignored (`StageTrainingArguments`)."""
