"""The dSFT stage unit: chats -> every assistant turn trained in its inference context -> TRL's SFTTrainer."""

from __future__ import annotations

import trl
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer

from alignment.recipes.arguments import Recipe
from alignment.runtime.stage import Stage
from alignment.sft.rows import TruncationReport, sft_row_problem, tokenize_chats
from alignment.sft.trainer import SFTTrainer


class SFTStage(Stage):
    """Chats (`messages`) -> every assistant turn trained in its inference context -> TRL's SFTTrainer."""

    trainer_class = SFTTrainer
    required_columns = ("messages",)
    row_problem = staticmethod(sft_row_problem)

    def tokenizer_options(self, recipe: Recipe) -> dict:
        return {
            **super().tokenizer_options(recipe),
            "train_on_prompt": recipe.data.train_on_prompt,
            "history_rewrite": recipe.data.history_rewrite,
        }

    def tokenize(self, rows, tokenizer, *, split, source_of=None, **options) -> tuple[Dataset, TruncationReport]:
        return tokenize_chats(rows, tokenizer, split_name=split, source_of=source_of, **options)

    def build_trainer(self, recipe, tokenizer, data, model, **kwargs) -> Trainer:
        if recipe.training.padding_free and not recipe.training.packing:
            # Every chat is already cut to `max_length` by `tokenize_chats`; TRL refuses padding-free batches while
            # it is still set.
            recipe.training.max_length = None
        return super().build_trainer(recipe, tokenizer, data, model, **kwargs)

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict:
        return {"peft_config": trl.get_peft_config(recipe.model)}
