"""What a GRPO recipe's `rewards:` may hold: the registry of reward kinds, and how a value model's step values
become one reward.

    rewards:
      - {kind: rule, path: tiny_world.arithmetic:answer_is_correct, weight: 1.0}
      - {kind: reward_model, path: outputs/tiny/rm, weight: 0.5}
      - {kind: value_model, path: outputs/tiny/value, weight: 0.5, aggregate: min}

Each kind names the function that builds it (`alignment.grpo.reward_functions`) by import path, so that parsing a
recipe imports no model code. The entries map to TRL's `reward_funcs` and `reward_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alignment.stages import import_object

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ENTRY_KEYS = ("kind", "path", "weight", "aggregate")


@dataclass(frozen=True)
class RewardKind:
    """One kind of reward: its name in a recipe, what `path` is for it, and the `module:function` that builds it
    (`(spec, policy_tokenizer) -> TRL reward function`)."""

    name: str
    path: str
    builder: str
    aggregates_steps: bool = False  # reads `aggregate` (a value per step becomes one reward)


REWARD_KINDS: dict[str, RewardKind] = {
    kind.name: kind
    for kind in (
        RewardKind(
            "reward_model",
            "a `run_rm.py` output folder or a hub id (a one-output sequence classifier); it scores with its own "
            "tokenizer and chat template",
            "alignment.grpo.reward_functions:reward_model_reward",
        ),
        RewardKind(
            "rule",
            "`package.module:function`, `(prompt_messages, reply) -> bool or number`, as `run_eval.py --rule`",
            "alignment.grpo.reward_functions:rule_reward",
        ),
        RewardKind(
            "value_model",
            "a `run_value.py` output folder: a process reward, the completion split into steps at its newlines as "
            "the value data delimits them, every step valued (`alignment.value.score_steps`)",
            "alignment.grpo.reward_functions:value_model_reward",
            aggregates_steps=True,
        ),
    )
}

# How the values of a completion's steps become one reward; a completion with no step gets -1, the lowest value.
STEP_AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,  # the weakest step: one wrong step sinks the completion (the process-reward reading)
    "last": lambda values: values[-1],  # the value after the last step: how likely the whole trace is right
    "mean": lambda values: sum(values) / len(values),
}
NO_STEP_VALUE = -1.0


def aggregate_step_values(values: Sequence[float], aggregate: str) -> float:
    """One reward from a completion's step values (`STEP_AGGREGATES`); `NO_STEP_VALUE` when it has no step."""
    return STEP_AGGREGATES[aggregate](values) if values else NO_STEP_VALUE


@dataclass(frozen=True)
class RewardSpec:
    """One checked entry of `rewards:`."""

    kind: str
    path: str
    weight: float = 1.0
    aggregate: str | None = None

    @property
    def name(self) -> str:
        """The name its mean and spread are logged under (`rewards/<name>/mean`)."""
        suffix = f"_{self.aggregate}" if self.aggregate else ""
        return f"{self.kind}_{self.path.rstrip('/').rpartition('/')[2].rpartition(':')[2]}{suffix}"


def reward_specs(entries: Any) -> list[RewardSpec]:
    """`rewards:` checked entry by entry: known keys and kinds, a path, a finite weight, `aggregate` for the kinds
    that read it. A `ValueError` names the entry and what is valid."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            "`rewards` must list at least one `{kind, path, weight}`; kinds: " + ", ".join(REWARD_KINDS) + "."
        )
    specs = []
    for index, entry in enumerate(entries):
        where = f"rewards[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(ENTRY_KEYS)}, not {entry!r}.")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; valid: {', '.join(ENTRY_KEYS)}.")
        kind = REWARD_KINDS.get(entry.get("kind"))
        if kind is None:
            valid = "; ".join(f"`{k.name}` ({k.path})" for k in REWARD_KINDS.values())
            raise ValueError(f"{where}: `kind: {entry.get('kind')}` is none of the reward kinds: {valid}.")
        path, weight = entry.get("path"), entry.get("weight", 1.0)
        if not isinstance(path, str) or not path:
            raise ValueError(f"{where}: `path` is required: {kind.path}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"{where}: `weight: {weight!r}` must be a finite number.")
        aggregate = entry.get("aggregate")
        if kind.aggregates_steps:
            aggregate = aggregate or "min"
            if aggregate not in STEP_AGGREGATES:
                raise ValueError(f"{where}: `aggregate: {aggregate}` is none of {', '.join(STEP_AGGREGATES)}.")
        elif aggregate is not None:
            raise ValueError(f"{where}: `aggregate` applies to step values only (`kind: value_model`).")
        specs.append(RewardSpec(kind.name, path, float(weight), aggregate))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"`rewards` lists one reward twice: {names}.")
    return specs


def build_rewards(specs: list[RewardSpec], tokenizer: PreTrainedTokenizerBase) -> list[Callable[..., list[float]]]:
    """TRL's `reward_funcs`, one per spec, each built by its kind's builder (`tokenizer` is the policy's)."""
    return [import_object(REWARD_KINDS[spec.kind].builder)(spec, tokenizer) for spec in specs]
