"""Each reward kind of `alignment.grpo.rewards` built as a TRL reward function: `(prompts, completions, **kwargs) ->
one float per completion`, named for its log (`rewards/<name>/mean` and `std`).

TRL passes conversational prompts (the prompt turns) and completions (one assistant message each); every kind reads
the reply's text, which is what the policy generated (TRL decodes the generated ids, up to the end-of-turn token).
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from alignment.grpo.rewards import RewardSpec, aggregate_step_values
from alignment.recipes.parser import RecipeError
from alignment.reward.scoring import load_reward_model, score_with
from alignment.runtime.loading import model_problem
from alignment.runtime.rules import load_rule, row_columns_read
from alignment.value.modeling import has_value_head, load_value_model
from alignment.value.scoring import score_traces

RewardFunction = Callable[..., list[float]]


def reply(completion: str | list[dict[str, str]]) -> str:
    """The text of one completion, conversational (one assistant message) or plain."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def steps_of(text: str) -> list[str]:
    """A completion's steps: its non-blank lines, as the value data delimits them (`step.strip() + "\\n"`)."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def named(function: RewardFunction, spec: RewardSpec) -> RewardFunction:
    function.__name__ = spec.name
    return function


def rule_reward(spec: RewardSpec, tokenizer: PreTrainedTokenizerBase) -> RewardFunction:
    """The rule's verdict as the reward, given the columns of the prompt's row that it names (TRL passes every
    column of the prompt rows as a list, one entry per completion)."""
    rule = load_rule(spec.path, key="rewards.rule")
    names = row_columns_read(rule)

    def reward(prompts, completions, **kwargs) -> list[float]:
        columns = {name: kwargs[name] for name in names if name in kwargs}
        return [
            float(rule(prompt, reply(completion), **{name: values[index] for name, values in columns.items()}))
            for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]

    return named(reward, spec)


def _checked_model(spec: RewardSpec, kind: str) -> None:
    problem = model_problem(spec.path, f"rewards.{spec.kind}", kind)
    if problem is not None:
        raise RecipeError(problem)


def reward_model_reward(spec: RewardSpec, tokenizer: PreTrainedTokenizerBase) -> RewardFunction:
    _checked_model(spec, "reward model")
    model, reward_tokenizer = load_reward_model(spec.path)

    def reward(prompts, completions, **kwargs) -> list[float]:
        conversations = [
            [*prompt, {"role": "assistant", "content": reply(completion)}]
            for prompt, completion in zip(prompts, completions, strict=True)
        ]
        return score_with(model, reward_tokenizer, conversations)

    return named(reward, spec)


def value_model_reward(spec: RewardSpec, tokenizer: PreTrainedTokenizerBase) -> RewardFunction:
    _checked_model(spec, "causal LM")
    if not has_value_head(spec.path):
        raise RecipeError(f"`rewards.value_model: {spec.path}` has no value head: give a `run_value.py` output.")
    model = load_value_model(spec.path)
    value_tokenizer = AutoTokenizer.from_pretrained(spec.path)

    def reward(prompts, completions, **kwargs) -> list[float]:
        traces = [
            (prompt, steps_of(reply(completion))) for prompt, completion in zip(prompts, completions, strict=True)
        ]
        scored = score_traces(model, value_tokenizer, [trace for trace in traces if trace[1]])
        values = iter(scored)
        return [aggregate_step_values(next(values) if steps else [], spec.aggregate) for _, steps in traces]

    return named(reward, spec)
