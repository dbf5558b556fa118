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
Errors, each printed as one message with exit status 2 (`alignment.cli`): `RecipeError` for unknown keys or bad
values, `InvalidRowError` for malformed rows (or drops them with `skip_invalid_rows: true`), `ChatTemplateError` for a
prompt the template cannot render.
"""

from functools import partial

from alignment.cli import run_cli
from alignment.configs import DataArguments, ModelArguments
from alignment.data import load_mixture
from alignment.run_utils import (
    save_and_card,
    set_generation_eos,
    start_run,
    train_and_evaluate,
)
from alignment.turns import end_of_turn_token_ids
from alignment.value import ValueConfig, ValueTrainer, build_value_model, tokenize_traces, value_row_problem

RECIPE_DATACLASSES = (ModelArguments, DataArguments, ValueConfig)


def main() -> None:
    (model_args, data_args, training_args), tokenizer = start_run(RECIPE_DATACLASSES)

    raw = load_mixture(data_args, validate_row=value_row_problem, required_columns=["prompt"])
    splits, reports = {}, {}
    for split in raw:
        splits[split], reports[split] = tokenize_traces(
            raw[split],
            tokenizer,
            max_length=training_args.max_length,
            train_on_prompt=data_args.train_on_prompt,
            skip_invalid_rows=data_args.skip_invalid_rows,
            source_of=partial(raw.source_of, split),
            num_proc=training_args.dataset_num_proc,
            split_name=split,
        )

    model = build_value_model(model_args, training_args, tokenizer)
    set_generation_eos(model.body, tokenizer, end_of_turn_token_ids(tokenizer))

    trainer = ValueTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test") if training_args.eval_strategy != "no" or training_args.do_eval else None,
        processing_class=tokenizer,
    )
    train_and_evaluate(trainer)
    # Saved as truncation_results.json and merged into all_results.json with the other metrics.
    trainer.save_metrics("truncation", {**reports["train"].metrics("train"), **reports["test"].metrics("eval")})
    save_and_card(trainer, dataset_names=data_args.source_names(), tags=["value-model", "rest-mcts"])


if __name__ == "__main__":
    run_cli(main)
