"""The GRPO stage's recipe config: TRL's `GRPOConfig`, strict like every recipe, plus `rewards`.

`loss_type`, `num_generations`, `beta`, `epsilon`, `temperature` and the vLLM keys are TRL's own fields. The reward
kinds and their help come from the registry (`alignment.grpo.rewards.REWARD_KINDS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import trl

from alignment.grpo.rewards import REWARD_KINDS, STEP_AGGREGATES, reward_specs
from alignment.recipes.arguments import StageTrainingArguments
from alignment.runtime.rules import load_rule


def _rewards_help() -> str:
    kinds = "; ".join(f"`{kind.name}`: {kind.path}" for kind in REWARD_KINDS.values())
    return (
        f"The rewards, each `{{kind, path, weight}}` (TRL's `reward_funcs` and `reward_weights`). Kinds: {kinds}. A "
        f"value model's `aggregate` turns its step values into one reward: {', '.join(STEP_AGGREGATES)} (default "
        "min: the weakest step)."
    )


@dataclass
class GRPOConfig(StageTrainingArguments, trl.GRPOConfig):
    """TRL's `GRPOConfig` with `rewards` as recipe entries. `reward_weights` follows from them (one knob); vLLM
    generation is for CUDA machines and is refused elsewhere with one message."""

    rewards: list[dict[str, Any]] = field(default_factory=list, metadata={"help": _rewards_help()})

    def __post_init__(self):
        specs = reward_specs(self.rewards)
        for index, spec in enumerate(specs):
            if spec.kind == "rule":  # a rule that does not import stops the run here, before any model loads
                load_rule(spec.path, key=f"rewards[{index}].path")
        weights = [spec.weight for spec in specs]
        if self.reward_weights is not None and list(self.reward_weights) != weights:
            raise ValueError(
                f"`reward_weights: {self.reward_weights}` differs from the `weight` of each entry of `rewards` "
                f"({weights}): give the weights in `rewards` only."
            )
        self.reward_weights = weights
        if self.num_generations < 2:  # TRL divides by it before its own check says so
            raise ValueError(
                f"`num_generations: {self.num_generations}` must be at least 2: each completion's advantage is its "
                "reward against the mean of its group."
            )
        if self.use_vllm and not torch.cuda.is_available():
            raise ValueError(
                "`use_vllm: true` generates with vLLM on a CUDA GPU; this machine has none. Set `use_vllm: false` "
                "to generate with transformers."
            )
        super().__post_init__()
