"""Pairwise reward modelling (the reward model of RLHF) over TRL's RewardTrainer.

Puts a one-output score head on any causal LM and trains it on preference pairs with `-logsigmoid(r_chosen -
r_rejected [- margin])` (a `margin` column is used when the data has one), optionally centering rewards
(`center_rewards_coefficient`). Full fine-tuning, LoRA (`use_peft: true`, `lora_task_type: SEQ_CLS`: the score head
is trained and saved in full with the adapter) or QLoRA (`load_in_4bit: true`, GPU only). Rows take the three forms
of `alignment.preferences` and are rendered with the chat template as at inference; the reward is read at the last
real token. `train_sampling_strategy: group_by_length` batches pairs of similar length (the padding fraction with
and without it is logged). Accuracy, margin and chosen/rejected reward mean and std are logged for train and for
the held-out split, which is always evaluated at the end when it has rows. Resumes on its own from the newest
checkpoint in `output_dir`.

    accelerate launch scripts/run_rm.py recipes/qwen2-0.5b/rm/config_lora.yaml      # one GPU, QLoRA
    python scripts/run_rm.py recipes/tiny/rm/config.yaml --train_sampling_strategy random

Outputs in `output_dir`: the model (or the LoRA adapter with the score head), its tokenizer with the chat template,
`resolved_config.yaml`, metrics and a model card. Score conversations with `alignment.reward.score(output_dir, ...)`.
Errors: `RecipeError` for unknown keys or bad values, `InvalidRowError` for malformed pairs (or drops them with
`skip_invalid_rows: true`), each printed as one message with exit status 2 (`alignment.cli`); `ValueError` for a pad
token that ends sequences, `RuntimeError` for QLoRA without a GPU.
"""

from functools import partial

from transformers import AutoModelForSequenceClassification, set_seed
from trl.trainer.reward_trainer import suppress_seqcls_warning

from alignment.cli import run_cli
from alignment.configs import DataArguments, ModelArguments
from alignment.data import load_mixture
from alignment.model_utils import load_model, match_embeddings_to_tokenizer
from alignment.reward import (
    PairwiseRewardTrainer,
    RewardConfig,
    reward_peft_config,
    reward_row_problem,
    tokenize_pairs,
)
from alignment.run_utils import save_and_card, start_run, train_and_evaluate

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = (ModelArguments, DataArguments, RewardConfig)


def main() -> None:
    (model_args, data_args, training_args), tokenizer = start_run(RECIPE_DATACLASSES)
    peft_config = reward_peft_config(model_args)

    raw = load_mixture(data_args, validate_row=reward_row_problem, required_columns=["chosen", "rejected"])
    splits = {
        split: tokenize_pairs(
            raw[split],
            tokenizer,
            max_length=training_args.max_length,
            skip_invalid_rows=data_args.skip_invalid_rows,
            source_of=partial(raw.source_of, split),
            num_proc=training_args.dataset_num_proc,
            split_name=split,
        )
        for split in raw
        if len(raw[split])
    }

    set_seed(training_args.seed)  # the new score head is initialised at random: the same seed gives the same head
    with suppress_seqcls_warning():  # "score.weight newly initialized", "lm_head unexpected": both intended
        model = load_model(
            model_args,
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
            model_class=AutoModelForSequenceClassification,
            num_labels=1,
        )
    match_embeddings_to_tokenizer(model, tokenizer)

    trainer = PairwiseRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test"),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    train_and_evaluate(trainer)
    save_and_card(trainer, dataset_names=data_args.source_names(), tags=["reward-model"])


if __name__ == "__main__":
    run_cli(main)
