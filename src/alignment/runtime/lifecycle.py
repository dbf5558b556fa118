"""What every `scripts/run_*.py` does around its trainer: logging, the resolved config, resume, saving, model card."""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import transformers
import yaml
from transformers import PreTrainedTokenizerBase, TrainingArguments

from alignment.chat.templates import set_chat_template
from alignment.recipes.arguments import Recipe
from alignment.recipes.parser import RecipeError
from alignment.runtime.loading import check_model_sources, check_vocabulary, load_tokenizer
from alignment.runtime.plots import plot_log_history
from alignment.runtime.preemption import raise_if_stopped
from alignment.runtime.reliability import (
    RESOLVED_CONFIG_NAME,
    check_output_dir,
    checkpoint_problem,
    last_complete_checkpoint,
    mark_finished,
)

logger = logging.getLogger("alignment")


def start_run(recipe: Recipe, *, chat_template_required: bool = True) -> PreTrainedTokenizerBase:
    """What every stage does first with its parsed recipe: set up logging, check the launch and `output_dir`, log
    and save the resolved config, then load the tokenizer with the recipe's chat template (which a stage that reads
    raw text may go without: `chat_template_required`)."""
    model_args, data_args, training_args = recipe
    setup_logging(training_args)
    check_world_size(training_args)
    check_model_sources(model_args)  # a missing folder, an offline hub id, no tokenizer: before anything loads
    resolved = resolved_config(model_args, data_args, training_args)
    defaults = recipe_defaults(model_args, data_args, training_args)
    overwrite = training_args.overwrite_output_dir
    check_output_dir(training_args.output_dir, resolved, overwrite=overwrite, defaults=defaults)
    log_and_save_resolved_config(training_args, resolved)
    tokenizer = load_tokenizer_with_template(model_args, data_args, training_args, required=chat_template_required)
    check_vocabulary(tokenizer, model_args)  # another model's tokenizer: before the data is tokenized with it
    return tokenizer


def load_tokenizer_with_template(
    model_args, data_args, training_args: TrainingArguments, *, required: bool = True
) -> PreTrainedTokenizerBase:
    """The recipe's tokenizer (`alignment.runtime.loading.load_tokenizer`) with its chat template set (`chat_template`,
    `add_chat_template_tokens`; `alignment.chat.templates.set_chat_template`). Unless `required`, a tokenizer with no
    template of its own and no `chat_template` in the recipe is returned without one, and that is logged."""
    tokenizer = load_tokenizer(model_args, trust_remote_code=training_args.trust_remote_code)
    if not required and data_args.chat_template is None and not tokenizer.chat_template:
        logger.info("No chat template: the tokenizer has none and `chat_template` is unset (raw text only).")
        return tokenizer
    set_chat_template(tokenizer, data_args.chat_template, add_missing_tokens=data_args.add_chat_template_tokens)
    return tokenizer


def setup_logging(training_args: TrainingArguments) -> None:
    """Handbook INFO logs on the main process, warnings elsewhere; transformers and datasets follow `log_level`."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logging.getLogger("alignment").setLevel(logging.INFO if training_args.process_index == 0 else logging.WARNING)
    # transformers' own level (`log_level`, `log_level_replica`): warnings by default, so the handbook's lines show.
    library_level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def check_world_size(training_args: TrainingArguments) -> None:
    """Stop unless the trainer spans every launched process, then log the batch arithmetic on rank 0.

    A launcher (`accelerate launch`, `torchrun`) exports `WORLD_SIZE`. If the trainer sees a world of one while two
    processes run, each trains its own full copy on all the data and the second only wastes its hardware: the
    silent failure of a DDP launch on a CPU machine without `use_cpu`.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if training_args.world_size != launched:
        raise RecipeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but the trainer sees a world of "
            f"{training_args.world_size}: every process would train its own copy of the model on all the data. "
            "On a machine without GPUs set `use_cpu: true`; on GPUs, check that each process sees its device "
            "(CUDA_VISIBLE_DEVICES) and that `num_processes` in the accelerate config matches the GPUs."
        )
    per_device = training_args.per_device_train_batch_size
    accumulation = training_args.gradient_accumulation_steps
    logger.info(
        "World size %d: global batch %d = per-device batch %d x gradient accumulation %d x %d processes",
        launched,
        per_device * accumulation * launched,
        per_device,
        accumulation,
        launched,
    )


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a config value (enums to their value, tuples to lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "to_dict"):  # e.g. transformers' AcceleratorConfig, built from a mapping in __post_init__
        return _plain(value.to_dict())
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    return str(value)


def _recipe_fields(*configs: Any) -> Iterator[tuple[Any, dataclasses.Field]]:
    """(config, field) for every recipe key of `configs`: the fields a recipe may set, private ones left out."""
    for config in configs:
        for f in dataclasses.fields(config):
            if f.init and not f.name.startswith("_"):
                yield config, f


def resolved_config(*configs: Any) -> dict[str, Any]:
    """One flat mapping of every recipe key to the value the run uses; it parses back as a recipe."""
    return {f.name: _plain(getattr(config, f.name)) for config, f in _recipe_fields(*configs)}


def recipe_defaults(*configs: Any) -> dict[str, Any]:
    """Every recipe key's default, for the keys that have one: a run saved before the package added a key is read as
    having used its default (`alignment.runtime.reliability.differing_keys`)."""
    defaults: dict[str, Any] = {}
    for _, f in _recipe_fields(*configs):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = _plain(f.default_factory())
    return defaults


def log_and_save_resolved_config(training_args: TrainingArguments, resolved: dict[str, Any]) -> None:
    """Log the resolved config on rank 0 and write it to `output_dir/resolved_config.yaml`."""
    if training_args.process_index == 0:
        text = yaml.safe_dump(resolved, sort_keys=True)
        logger.info("Resolved config:\n%s", text)
        os.makedirs(training_args.output_dir, exist_ok=True)
        Path(training_args.output_dir, RESOLVED_CONFIG_NAME).write_text(text, encoding="utf-8")


def checkpoint_to_resume(training_args: TrainingArguments) -> str | None:
    """`resume_from_checkpoint` when the recipe names one (refused unless complete), else the newest complete
    checkpoint in `output_dir`; logged when found."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is not None:
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            raise RecipeError(f"`resume_from_checkpoint: {checkpoint}` cannot be resumed from: {problem}.")
    else:
        checkpoint = last_complete_checkpoint(training_args.output_dir)
    if checkpoint is not None:
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def train_and_evaluate(trainer) -> None:
    """Train (resuming from `resume_from_checkpoint` or the newest complete checkpoint in `output_dir`), then evaluate
    on the held-out split when the trainer has one; log and save the metrics and the trainer state. A run stopped by
    a signal ends here with `Preempted`, its checkpoint saved (`alignment.runtime.preemption`)."""
    result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(trainer.args))
    raise_if_stopped(trainer.state.global_step, trainer.args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


def set_generation_eos(model, tokenizer: PreTrainedTokenizerBase, end_of_turn_ids: list[int]) -> None:
    """Make generation stop where the chat template ends an assistant turn, not only at the tokenizer's EOS."""
    eos_ids = list(
        dict.fromkeys([*end_of_turn_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])])
    )
    config = model.generation_config
    config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    config.pad_token_id = tokenizer.pad_token_id
    logger.info("Generation stops at %s", tokenizer.convert_ids_to_tokens(eos_ids))


def save_and_card(trainer, *, dataset_names: list[str], tags: list[str], figures: dict[str, tuple[str, ...]]) -> None:
    """Save model, tokenizer (with its chat template) and generation config, plots of the loss and of the stage's
    `figures` (`alignment.runtime.plots`) and the model card, then mark the run finished
    (`alignment.runtime.reliability.mark_finished`). Files are written on rank 0."""
    trainer.save_model(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if getattr(unwrapped, "generation_config", None) is not None:
            unwrapped.generation_config.save_pretrained(trainer.args.output_dir)
        plot_log_history(trainer.state.log_history, trainer.args.output_dir, figures)
        trainer.create_model_card(dataset_name=", ".join(dataset_names), tags=["alignment-handbook", *tags])
        mark_finished(trainer.args.output_dir, trainer.state.global_step)
        logger.info("Saved model, tokenizer, generation config and model card to %s", trainer.args.output_dir)
