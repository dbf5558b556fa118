"""The dDPO stage's builder (`DPO`): preference pairs -> the policy, its reference -> `PreferenceTrainer`."""

from __future__ import annotations

import trl
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.data.pairs import preference_row_problem
from alignment.dpo.pairs import PreferenceTruncationReport, tokenize_preferences
from alignment.dpo.reference import load_reference_model
from alignment.dpo.trainer import PreferenceTrainer
from alignment.recipes.arguments import Recipe
from alignment.runtime.stage import Stage


class DPOStage(Stage):
    """Pairs (`chosen`/`rejected`, with or without `prompt`) -> the SFT model trained on a preference loss against
    a frozen reference (`loss_type`)."""

    trainer_class = PreferenceTrainer
    required_columns = ("chosen", "rejected")
    row_problem = staticmethod(preference_row_problem)
    figures = {
        "rewards_accuracies": ("rewards/accuracies", "eval_rewards/accuracies"),
        "rewards_margins": ("rewards/margins", "eval_rewards/margins"),
    }

    def tokenizer_options(self, recipe: Recipe) -> dict:
        return {
            **super().tokenizer_options(recipe),
            "max_prompt_length": recipe.training.max_prompt_length,
        }

    def tokenize(
        self, rows, tokenizer, *, split, source_of=None, **options
    ) -> tuple[Dataset, PreferenceTruncationReport]:
        return tokenize_preferences(rows, tokenizer, split_name=split, source_of=source_of, **options)

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict:
        return {
            "ref_model": load_reference_model(recipe.model, recipe.training, tokenizer),
            "peft_config": trl.get_peft_config(recipe.model),
        }

    def tags(self, recipe: Recipe) -> list[str]:
        return ["dpo", *recipe.training.loss_type]
