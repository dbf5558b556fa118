"""The value stage's builder (`VALUE`): step traces -> a causal LM with a value head -> `ValueTrainer`."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer

from alignment.chat.turns import end_of_turn_token_ids
from alignment.recipes.arguments import Recipe
from alignment.runtime.lifecycle import set_generation_eos
from alignment.runtime.stage import Stage, StageData
from alignment.value.modeling import ValueModel, build_value_model
from alignment.value.rows import ValueTruncationReport, tokenize_traces, value_row_problem
from alignment.value.trainer import ValueTrainer


class ValueStage(Stage):
    """Traces (`prompt` plus steps with one Q each) -> SFT on the positive traces plus a per-step value loss."""

    trainer_class = ValueTrainer
    required_columns = ()  # each row form has its own columns: `value_row_problem` names what a row lacks
    row_problem = staticmethod(value_row_problem)
    figures = {
        "value_mse": ("value_mse", "eval_value_mse"),
        "value_sign_accuracy": ("sign_accuracy", "eval_sign_accuracy"),
        "value_auroc": ("auroc", "eval_auroc"),
    }

    def tokenizer_options(self, recipe: Recipe) -> dict:
        return {
            **super().tokenizer_options(recipe),
            "train_on_prompt": recipe.data.train_on_prompt,
        }

    def tokenize(self, rows, tokenizer, *, split, source_of=None, **options) -> tuple[Dataset, ValueTruncationReport]:
        return tokenize_traces(rows, tokenizer, split_name=split, source_of=source_of, **options)

    def load_model(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> ValueModel:
        """The body (full, LoRA or QLoRA) with a new value head, its generation stopping at the end of turn."""
        model = build_value_model(recipe.model, recipe.training, tokenizer)
        set_generation_eos(model.body, tokenizer, end_of_turn_token_ids(tokenizer))
        return model

    def after_training(self, trainer: Trainer, data: StageData) -> None:
        """The steps truncation cost, saved as truncation_results.json and merged into all_results.json."""
        metrics = {}
        for split, prefix in (("train", "train"), ("test", "eval")):
            if split in data.reports:
                metrics.update(data.reports[split].metrics(prefix))
        trainer.save_metrics("truncation", metrics)

    def tags(self, recipe: Recipe) -> list[str]:
        return ["value-model", "rest-mcts"]
