"""Continued pretraining (LLaMA-Factory's `pt`) over TRL's SFTTrainer in language-modeling mode: every token of
every document is trained.

Documents are a `text` column (JSON, JSON Lines, parquet, hub), .txt files (`txt_documents`: one per file, the
default, or one per blank-line-separated block) or chats rendered whole by the chat template (a list entry with
`format: messages`, `sharegpt`, ...). Each starts with BOS where the tokenizer adds one and ends with EOS (the policy
is logged once); `packing: true` packs them into rows of `max_length` with position ids restarting at each document
and no attention across documents; without packing, longer documents are cut and counted.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_pt.py \
        recipes/tiny/pt/config.yaml --model_name_or_path <base> --dataset_mixer '{corpus/: 1.0}'
    python scripts/run_pt.py recipes/tiny/pt/config.yaml

Outputs in `output_dir`: the model (the next stage's `model_name_or_path`, e.g. run_sft.py), its tokenizer, a
generation config that stops at EOS, `resolved_config.yaml`, metrics (held-out perplexity is exp(eval_loss)) and a
model card.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys or
bad values (`completion_only_loss`, a tokenizer without EOS, a chat format without a chat template), `DataError` for
a source that cannot be read (a .txt folder with no files, a chat source without `format`), `InvalidRowError` for an
empty or non-string `text` (or drops them with `skip_invalid_rows: true`).
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["pt"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
