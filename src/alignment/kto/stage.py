"""The KTO stage's builder: unpaired rows (a completion and its label) -> the policy, its reference ->
`UnpairedPreferenceTrainer`."""

from __future__ import annotations

import trl
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.kto.rows import UNPAIRED_COLUMNS, UnpairedTruncationReport, tokenize_unpaired, unpaired_row_problem
from alignment.kto.trainer import UnpairedPreferenceTrainer
from alignment.recipes.arguments import Recipe
from alignment.runtime.reference import load_reference_copy
from alignment.runtime.stage import Stage


class KTOStage(Stage):
    """Unpaired rows (`prompt`, `completion`, `label`) -> the SFT model trained on TRL's KTO loss against a frozen
    reference: the starting model, or with LoRA the base with the adapter disabled."""

    trainer_class = UnpairedPreferenceTrainer
    required_columns = UNPAIRED_COLUMNS
    row_problem = staticmethod(unpaired_row_problem)
    figures = {
        "rewards_margins": ("rewards/margins", "eval_rewards/margins"),
        "kl": ("kl", "eval_kl"),
    }

    def tokenize(
        self, rows, tokenizer, *, split, source_of=None, **options
    ) -> tuple[Dataset, UnpairedTruncationReport]:
        return tokenize_unpaired(rows, tokenizer, split_name=split, source_of=source_of, **options)

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict:
        return {
            "ref_model": load_reference_copy(recipe.model, recipe.training, tokenizer),
            "peft_config": trl.get_peft_config(recipe.model),
        }

    def tags(self, recipe: Recipe) -> list[str]:
        return ["kto", recipe.training.loss_type]
