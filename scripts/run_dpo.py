"""Direct preference optimisation (the dDPO stage of Zephyr) over TRL's DPOTrainer, with every preference loss of
TRL and LLaMA-Factory (`loss_type`: sigmoid, ipo, robust, ..., plus orpo, simpo, kto_pair; `pref_ftx` adds an SFT
term on the chosen reply; `label_smoothing` on sigmoid is conservative DPO).

Starts from an SFT model (a full model folder or a LoRA adapter folder, merged into its base). The reference is a
frozen copy for full fine-tuning, the base with the adapter disabled for LoRA/QLoRA (`use_peft: true`), and absent
for `orpo`/`simpo`. With `precompute_ref_log_probs: true` the reference log-probs are computed once and cached on disk
(`ref_logps_cache_dir`), reused by later epochs, re-runs, resumes and `beta` sweeps. Resumes on its own from the
newest checkpoint in `output_dir`.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_dpo.py \
        recipes/zephyr-7b-beta/dpo/config_full.yaml
    python scripts/run_dpo.py recipes/tiny/dpo/config.yaml --loss_type simpo --simpo_gamma 0.5

Data: rows in UltraFeedback-binarized form (`chosen`/`rejected` chats sharing their prompt turns), TRL's
conversational form (`prompt`, `chosen`, `rejected` message lists) or plain strings (see `alignment.data.pairs`).
Outputs in `output_dir`: the model (or adapter), its tokenizer with the chat template, a generation config that stops
at the template's end of turn, `resolved_config.yaml`, metrics (`rewards/accuracies`, `rewards/margins`, ...) and a
model card.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys, bad
values or a recipe this machine or launch cannot run (QLoRA without a GPU), `DataError` for a source that cannot
be read, `InvalidRowError` for a bad pair (prompts differ, chosen equals rejected, ...; or drops them with
`skip_invalid_rows: true`), `ChatTemplateError` for rows the template cannot split into prompt and reply.
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["dpo"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
