"""The GRPO stage unit: prompts (of chat, preference or prompt-only rows) -> completions sampled from the policy ->
rewards -> TRL's GRPOTrainer."""

from __future__ import annotations

import trl
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer

from alignment.grpo.prompts import PromptReport, prompt_report, prompt_row_problem
from alignment.grpo.rewards import build_rewards, reward_specs
from alignment.grpo.trainer import GRPOTrainer
from alignment.recipes.arguments import Recipe
from alignment.runtime.rules import check_rule, load_rule
from alignment.runtime.stage import Stage


class GRPOStage(Stage):
    """Prompts from any chat, preference or prompt-only source; rewards from the recipe's `rewards`; the reference
    as TRL keeps it (the base with the adapter disabled under LoRA, none at `beta: 0`)."""

    trainer_class = GRPOTrainer
    required_columns = ("prompt",)
    row_problem = staticmethod(prompt_row_problem)
    figures = {
        "reward": ("reward",),
        "kl": ("kl",),
        "completion_length": ("completions/mean_length",),
        "generation_share": ("generation/share_of_time",),
    }

    def tokenizer_options(self, recipe: Recipe) -> dict:
        return {}  # TRL's GRPO tokenizes the prompts itself, as it generates

    def tokenize(self, rows, tokenizer, *, split, source_of=None) -> tuple[Dataset, PromptReport]:
        return rows, prompt_report(rows)

    def build_trainer(self, recipe, tokenizer, data, model, **kwargs) -> Trainer:
        """The trainer, once every rule has been called on the first prompt (a rule of the wrong shape stops here,
        not after the first generation)."""
        first = dict(data.splits["train"][0])
        prompt = first.pop("prompt")
        for spec in reward_specs(recipe.training.rewards):
            if spec.kind == "rule":
                check_rule(load_rule(spec.path), spec.path, "rewards.rule", prompt, first)
        return super().build_trainer(recipe, tokenizer, data, model, **kwargs)

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict:
        specs = reward_specs(recipe.training.rewards)
        return {"reward_funcs": build_rewards(specs, tokenizer), "peft_config": trl.get_peft_config(recipe.model)}
