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
conversational form (`prompt`, `chosen`, `rejected` message lists) or plain strings (see `alignment.preferences`).
Outputs in `output_dir`: the model (or adapter), its tokenizer with the chat template, a generation config that stops
at the template's end of turn, `resolved_config.yaml`, metrics (`rewards/accuracies`, `rewards/margins`, ...) and a
model card.
Errors, each printed as one message with exit status 2 (`alignment.cli`): `RecipeError` for unknown keys or bad
values, `InvalidRowError` for a bad pair (prompts differ, chosen equals rejected, ...; or drops them with
`skip_invalid_rows: true`), `ChatTemplateError` for rows the template cannot split into prompt and reply.
"""

from functools import partial

from trl import get_peft_config

from alignment.cli import run_cli
from alignment.configs import DataArguments, ModelArguments
from alignment.data import load_mixture
from alignment.dpo import DPOConfig, PreferenceTrainer, load_reference_model, tokenize_preferences
from alignment.model_utils import load_model, match_embeddings_to_tokenizer
from alignment.preferences import preference_row_problem
from alignment.run_utils import (
    save_and_card,
    set_generation_eos,
    start_run,
    train_and_evaluate,
)
from alignment.turns import end_of_turn_token_ids

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = (ModelArguments, DataArguments, DPOConfig)


def main() -> None:
    (model_args, data_args, training_args), tokenizer = start_run(RECIPE_DATACLASSES)

    raw = load_mixture(data_args, validate_row=preference_row_problem, required_columns=["chosen", "rejected"])
    splits = {
        split: tokenize_preferences(
            raw[split],
            tokenizer,
            max_length=training_args.max_length,
            max_prompt_length=training_args.max_prompt_length,
            skip_invalid_rows=data_args.skip_invalid_rows,
            source_of=partial(raw.source_of, split),
            num_proc=training_args.dataset_num_proc,
            split_name=split,
        )[0]
        for split in raw
        if len(raw[split])
    }

    model = load_model(
        model_args,
        trust_remote_code=training_args.trust_remote_code,
        gradient_checkpointing=training_args.gradient_checkpointing,
    )
    match_embeddings_to_tokenizer(model, tokenizer)
    set_generation_eos(model, tokenizer, end_of_turn_token_ids(tokenizer))

    trainer = PreferenceTrainer(
        model=model,
        ref_model=load_reference_model(model_args, training_args, tokenizer),
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test") if training_args.eval_strategy != "no" or training_args.do_eval else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_and_evaluate(trainer)
    save_and_card(trainer, dataset_names=data_args.source_names(), tags=["dpo", *training_args.loss_type])


if __name__ == "__main__":
    run_cli(main)
