"""Supervised fine-tuning (the dSFT stage of Zephyr) over TRL's SFTTrainer.

Trains on every assistant turn of each chat and on nothing else (masks derived from the chat template, see
`alignment.templates`); full fine-tuning, LoRA (`use_peft: true`) or QLoRA (`load_in_4bit: true`, GPU only);
packing and padding-free batches through TRL; resumes on its own from the newest checkpoint in `output_dir`.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml scripts/run_sft.py \
        recipes/zephyr-7b-beta/sft/config_full.yaml
    python scripts/run_sft.py recipes/tiny/sft/config.yaml --learning_rate 1e-3

Outputs in `output_dir`: the model, its tokenizer with the chat template, a generation config that stops at the
template's end of turn, `resolved_config.yaml`, metrics and a model card.
Errors, each printed as one message with exit status 2 (`alignment.cli`): `RecipeError` for unknown keys or bad
values, `InvalidRowError` for malformed chats (or drops them with `skip_invalid_rows: true`), `ChatTemplateError` for
templates whose assistant turns cannot be located exactly.
"""

from functools import partial

from trl import get_peft_config

from alignment.chat_data import tokenize_chats
from alignment.cli import run_cli
from alignment.configs import DataArguments, ModelArguments, SFTConfig
from alignment.data import load_mixture, sft_row_problem
from alignment.model_utils import load_model, match_embeddings_to_tokenizer
from alignment.run_utils import (
    save_and_card,
    set_generation_eos,
    start_run,
    train_and_evaluate,
)
from alignment.sft import SFTTrainer
from alignment.turns import end_of_turn_token_ids

# Every key of a recipe for this script is a field of one of these (tests/test_recipes.py checks the shipped ones).
RECIPE_DATACLASSES = (ModelArguments, DataArguments, SFTConfig)


def main() -> None:
    (model_args, data_args, training_args), tokenizer = start_run(RECIPE_DATACLASSES)

    raw = load_mixture(data_args, validate_row=sft_row_problem, required_columns=["messages"])
    splits = {
        split: tokenize_chats(
            raw[split],
            tokenizer,
            max_length=training_args.max_length,
            train_on_prompt=data_args.train_on_prompt,
            history_rewrite=data_args.history_rewrite,
            skip_invalid_rows=data_args.skip_invalid_rows,
            source_of=partial(raw.source_of, split),
            num_proc=training_args.dataset_num_proc,
            split_name=split,
        )[0]
        for split in raw
    }

    if training_args.padding_free and not training_args.packing:
        # Every chat is already cut to `max_length` above; TRL refuses padding-free batches while it is still set.
        training_args.max_length = None

    model = load_model(
        model_args,
        trust_remote_code=training_args.trust_remote_code,
        gradient_checkpointing=training_args.gradient_checkpointing,
    )
    match_embeddings_to_tokenizer(model, tokenizer)
    set_generation_eos(model, tokenizer, end_of_turn_token_ids(tokenizer))

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test") if training_args.eval_strategy != "no" or training_args.do_eval else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_and_evaluate(trainer)
    save_and_card(trainer, dataset_names=data_args.source_names(), tags=["sft"])


if __name__ == "__main__":
    run_cli(main)
