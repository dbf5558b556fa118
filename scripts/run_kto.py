"""KTO (Kahneman-Tversky Optimization) over TRL's KTOTrainer: preferences as real feedback gives them, one completion
with a thumbs up or down (`label`), no pairs needed.

Rows are TRL's `prompt`/`completion`/`label` (strings or messages), LLaMA-Factory's `kto_tag` rows (sharegpt,
alpaca), or preference pairs split into a desirable and an undesirable row when the source's list entry asks for it
(`format: unpaired_preference`). The prompt is what inference renders, the completion exactly the reply's ids up to
and including the end-of-turn token. Unset `desirable_weight`/`undesirable_weight` balance the training split's
labels (the KTO paper's rule; logged). The reference is the starting model (with LoRA, the adapter disabled); with
`precompute_ref_log_probs: true` its log-probs are cached on disk across runs (`ref_logps_cache_dir`).

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_kto.py \
        recipes/tiny/kto/config.yaml --model_name_or_path <sft model> --dataset_mixer '{feedback/: 1.0}'
    python scripts/run_kto.py recipes/tiny/kto/config.yaml

Outputs in `output_dir`: the model, its tokenizer, a generation config that stops at the template's end of turn,
`resolved_config.yaml`, metrics, plots and a model card. Resumes on its own from the newest complete checkpoint.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys or
bad values (a weight <= 0, a shuffled sampler or a batch of 1 with the KL term), `DataError` for a source that cannot
be read or a preference source whose entry does not ask for its pairs to be split, `InvalidRowError` for a bad row
(or drops them with `skip_invalid_rows: true`).
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["kto"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
