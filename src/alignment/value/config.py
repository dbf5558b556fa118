"""`ValueConfig`, the value stage's training arguments, and `is_zero3`, which the model builder and the trainer
both ask of them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from alignment.recipes.arguments import StageTrainingArguments


@dataclass
class ValueConfig(StageTrainingArguments, TrainingArguments):
    """`transformers.TrainingArguments` plus the value stage's fields.

    Not TRL's `SFTConfig`: the value trainer is a `Trainer` subclass with its own tokenization, collator and loss, so
    SFTConfig's packing, padding-free, completion-only and dataset-text fields would be knobs that do nothing.
    """

    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Cut every tokenized trace to this many tokens, keeping the start (ReST-MCTS*'s `cutoff_len`, "
            "1024 in the paper). Steps whose last token is cut lose their Q target; they are counted and logged."
        },
    )
    value_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Loss = sft_loss + value_loss_weight * value_loss. Must be > 0 (0 would be plain SFT)."},
    )
    value_reads_likelihood: bool = field(
        default=False,
        metadata={
            "help": "Give the value head a second input: the body's lowest token log-likelihood over the response so "
            "far (`alignment.value.ValueHead`). For bodies too small to re-check a step at its last token (the tiny "
            "world's); it costs the vocabulary projection at every response position when scoring."
        },
    )
    padding_side: Literal["left", "right"] = field(
        default="left",
        metadata={
            "help": "Side the collator pads batches on (the authors padded left). Position ids follow the attention "
            "mask, so the values do not depend on it."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay false: the `Q` column is not a model argument and the Trainer would drop it."},
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes used to tokenize the data."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model and tokenizer code from the hub (`trust_remote_code`)."}
    )

    def __post_init__(self):
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"`max_length: {self.max_length}`: must be at least 2 tokens, or null for no cut.")
        if not (math.isfinite(self.value_loss_weight) and self.value_loss_weight > 0):
            raise ValueError(
                f"`value_loss_weight: {self.value_loss_weight}`: must be a positive number (1.0 weighs the two "
                "losses equally); for SFT alone use scripts/run_sft.py."
            )
        if self.remove_unused_columns:
            raise ValueError(
                "`remove_unused_columns: true` would drop the `Q` targets before they reach the loss: set it to false."
            )
        super().__post_init__()


def is_zero3(training_args: TrainingArguments) -> bool:
    """True when the run is under DeepSpeed ZeRO-3 (parameters partitioned across processes)."""
    plugin = getattr(training_args, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3
