"""Online RL with GRPO over TRL's GRPOTrainer: the policy samples `num_generations` completions per prompt, each is
scored by the recipe's `rewards` (a reward model from `run_rm.py`, a rule, or a step value model from `run_value.py`
as a process reward), and the policy moves toward the completions that beat their group's mean.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_grpo.py \
        recipes/qwen2-0.5b/grpo/config_rule.yaml
    python scripts/run_grpo.py recipes/tiny/grpo/config.yaml --learning_rate 1e-4

Prompts are the prompt turns of any chat source, rendered with the generation prompt as at inference; generation
stops at the chat template's end-of-turn token. With LoRA the reference is the base with the adapter disabled; with
`beta: 0` no reference is loaded. Outputs in `output_dir`: the policy, its tokenizer and generation config,
`resolved_config.yaml`, metrics (each reward's mean and spread per step) and a model card.
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys or
bad values (a reward kind, a rule that does not import, a reward model that is not a one-output classifier,
`num_generations` that does not divide the generation batch, `use_vllm` without CUDA), `DataError` and
`InvalidRowError` for prompt sources that cannot be read or hold no prompt turns.
"""

from alignment.runtime.cli import run_cli
from alignment.stages import STAGES

STAGE = STAGES["grpo"]

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = STAGE.recipe_dataclasses

if __name__ == "__main__":
    # parse -> data -> model -> trainer -> train (resuming) -> save: `alignment.stages.StageEntry.run`
    run_cli(STAGE.run)
