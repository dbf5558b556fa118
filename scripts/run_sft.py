"""Supervised fine-tuning (the dSFT stage of Zephyr) over TRL's SFTTrainer.

Trains on every assistant turn of each chat and on nothing else (masks derived from the chat template, see
`alignment.chat.templates`); full fine-tuning, LoRA (`use_peft: true`) or QLoRA (`load_in_4bit: true`, GPU only);
packing and padding-free batches through TRL; resumes on its own from the newest checkpoint in `output_dir`.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_sft.py \
        recipes/zephyr-7b-beta/sft/config_full.yaml
    python scripts/run_sft.py recipes/tiny/sft/config.yaml --learning_rate 1e-3

Outputs in `output_dir`: the model, its tokenizer with the chat template, a generation config that stops at the
template's end of turn, `resolved_config.yaml`, metrics and a model card.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys, bad
values or a recipe this machine or launch cannot run (QLoRA without a GPU), `DataError` for a source that cannot
be read, `InvalidRowError` for malformed chats (or drops them with `skip_invalid_rows: true`), `ChatTemplateError` for
templates whose assistant turns cannot be located exactly.
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["sft"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
