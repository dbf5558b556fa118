"""The reward stage's recipe config (TRL's `RewardConfig`, checked) and the LoRA config of a reward model."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from alignment.recipes.arguments import ModelArguments, StageTrainingArguments


@dataclass
class RewardConfig(StageTrainingArguments, trl.RewardConfig):
    """TRL's `RewardConfig`. The handbook tokenizes pairs itself (`tokenize_pairs`) and loads the model itself
    (`alignment.runtime.loading.load_model`), so TRL's switches for those jobs are refused rather than silently
    ignored.

    Length grouping is TRL's and transformers' own knob, `train_sampling_strategy: group_by_length`, made to work on
    pairs; `report_padding_batches` sets how much of an epoch the logged padding fractions are measured on.
    """

    report_padding_batches: int = field(
        default=1000,
        metadata={
            "help": "Batches of `per_device_train_batch_size` pairs (from the start of the first epoch) on which the "
            "padding fraction with and without length grouping is measured and logged at the start of training."
        },
    )

    do_eval: bool = field(
        default=True,
        metadata={
            "help": "Evaluate on the test split at the end of training (when it has rows), even with "
            "`eval_strategy: no`: held-out pair accuracy is the reward model's one quality figure. Set false to skip."
        },
    )

    def __post_init__(self):
        if self.train_sampling_strategy == "batch_rebalance":
            raise ValueError(
                "`train_sampling_strategy: batch_rebalance` balances single sequences, not pairs. Use "
                "`group_by_length` (pairs grouped by the longer of chosen and rejected) or `random`."
            )
        if self.length_column_name != "length":
            raise ValueError(
                f"`length_column_name: {self.length_column_name}` is not used: a pair's length is always the longer "
                "of its tokenized chosen and rejected sequences. Remove the key."
            )
        for name in ("model_init_kwargs", "eos_token", "pad_token"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"`{name}: {getattr(self, name)}` is not used: the handbook loads the model (`dtype`, "
                    "`attn_implementation`, ... in the model arguments), renders each reply up to the chat template's "
                    "own end-of-turn token, and pads with the tokenizer's pad token. Remove the key."
                )
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(
                f"`center_rewards_coefficient: {self.center_rewards_coefficient}` must be >= 0 (it scales the "
                "penalty mean((r_chosen + r_rejected)^2); 0.01 is the value of the paper), or unset."
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"`max_length: {self.max_length}` must be at least 2 tokens, or null for no limit.")
        if self.report_padding_batches < 1:
            raise ValueError(f"`report_padding_batches: {self.report_padding_batches}` must be at least 1.")
        super().__post_init__()


def reward_peft_config(model_args: ModelArguments):
    """The LoRA config of a reward model, or None without `use_peft`: task `SEQ_CLS` with the score head trained and
    saved in full (`modules_to_save`), since a randomly initialised head frozen under LoRA can never be learned."""
    if not model_args.use_peft:
        return None
    if model_args.lora_task_type != "SEQ_CLS":
        raise ValueError(
            f"`lora_task_type: {model_args.lora_task_type}` builds a causal-LM adapter; a reward model needs "
            "`lora_task_type: SEQ_CLS` so that its score head is trained and saved with the adapter."
        )
    config = trl.get_peft_config(model_args)
    config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), "score"]))
    return config
