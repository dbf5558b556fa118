"""Step value models (ReST-MCTS*): a causal LM with a value head, trained on SFT plus a per-step Q target.

Each row is a prompt and a multi-step response with one Q in [-1, 1] per step (ReST-MCTS* `response: [{step, Q}]`, or
TRL stepwise supervision `completions` + `labels`, see `alignment.value`). The value is read at the last token of
each step; positive traces are also SFT targets. Full fine-tuning, LoRA (`use_peft: true`) or QLoRA
(`load_in_4bit: true`, GPU only); resumes on its own from the newest checkpoint in `output_dir`.

    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml --num_processes 1 \
        scripts/run_value.py recipes/mistral-7b/value/config_lora.yaml
    python scripts/run_value.py recipes/tiny/value/config.yaml --value_loss_weight 2.0

Outputs in `output_dir`: the model (or LoRA adapter) with `value_head.safetensors` beside it (also in every
checkpoint; reload with `alignment.value.load_value_model`), its tokenizer with the chat template, a generation
config, `resolved_config.yaml`, metrics (value MSE, sign accuracy, AUROC, SFT loss, steps lost to truncation) and a
model card.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys, bad
values or a recipe this machine or launch cannot run (QLoRA without a GPU), `DataError` for a source that cannot
be read, `InvalidRowError` for malformed rows (or drops them with `skip_invalid_rows: true`), `ChatTemplateError` for a
prompt the template cannot render.
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["value"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
