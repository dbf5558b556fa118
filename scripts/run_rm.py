"""Pairwise reward modelling (the reward model of RLHF) over TRL's RewardTrainer.

Puts a one-output score head on any causal LM and trains it on preference pairs with `-logsigmoid(r_chosen -
r_rejected [- margin])` (a `margin` column is used when the data has one), optionally centering rewards
(`center_rewards_coefficient`). Full fine-tuning, LoRA (`use_peft: true`, `lora_task_type: SEQ_CLS`: the score head
is trained and saved in full with the adapter) or QLoRA (`load_in_4bit: true`, GPU only). Rows take the three forms
of `alignment.data.pairs` and are rendered with the chat template as at inference; the reward is read at the last
real token. `train_sampling_strategy: group_by_length` batches pairs of similar length (the padding fraction with
and without it is logged). Accuracy, margin and chosen/rejected reward mean and std are logged for train and for
the held-out split, which is always evaluated at the end when it has rows. Resumes on its own from the newest
checkpoint in `output_dir`.

    accelerate launch scripts/run_rm.py recipes/qwen2-0.5b/rm/config_lora.yaml      # one GPU, QLoRA
    python scripts/run_rm.py recipes/tiny/rm/config.yaml --train_sampling_strategy random

Outputs in `output_dir`: the model (or the LoRA adapter with the score head), its tokenizer with the chat template,
`resolved_config.yaml`, metrics and a model card. Score conversations with `alignment.reward.score(output_dir, ...)`.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys, bad
values or a recipe this machine or launch cannot run (QLoRA without a GPU), `DataError` for a source that cannot
be read, `InvalidRowError` for malformed pairs (or drops them with `skip_invalid_rows: true`), `ChatTemplateError`
for a sequence that ends with the pad token (its reward would be read one token early).
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["rm"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
