"""The reward stage's builder (`REWARD`): preference pairs -> a one-output score head on a causal LM ->
`PairwiseRewardTrainer`."""

from __future__ import annotations

from datasets import Dataset
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from trl.trainer.reward_trainer import suppress_seqcls_warning

from alignment.recipes.arguments import Recipe
from alignment.reward.config import reward_peft_config
from alignment.reward.pairs import reward_row_problem, tokenize_pairs
from alignment.reward.trainer import PairwiseRewardTrainer
from alignment.runtime.loading import load_model, match_embeddings_to_tokenizer
from alignment.runtime.stage import Stage


class RewardStage(Stage):
    """Pairs (`chosen`/`rejected`, optional `margin`) -> a reward model trained on `-logsigmoid(r_chosen -
    r_rejected [- margin])`."""

    trainer_class = PairwiseRewardTrainer
    required_columns = ("chosen", "rejected")
    row_problem = staticmethod(reward_row_problem)
    figures = {"accuracy": ("accuracy", "eval_accuracy")}

    def tokenize(self, rows, tokenizer, *, split, source_of=None, **options) -> tuple[Dataset, None]:
        """`tokenize_pairs`, which logs what it dropped; it has no report to keep."""
        return tokenize_pairs(rows, tokenizer, split_name=split, source_of=source_of, **options), None

    def load_model(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """The causal LM with a new one-output score head, initialised from `seed` (the same seed, the same head)."""
        set_seed(recipe.training.seed)
        with suppress_seqcls_warning():  # "score.weight newly initialized", "lm_head unexpected": both intended
            model = load_model(
                recipe.model,
                trust_remote_code=recipe.training.trust_remote_code,
                gradient_checkpointing=recipe.training.gradient_checkpointing,
                model_class=AutoModelForSequenceClassification,
                num_labels=1,
            )
        match_embeddings_to_tokenizer(model, tokenizer)
        return model

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict:
        return {"peft_config": reward_peft_config(recipe.model)}

    def tags(self, recipe: Recipe) -> list[str]:
        return ["reward-model"]
