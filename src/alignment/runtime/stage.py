"""A training stage as one unit: which rows it takes, how they become token ids, which model and trainer train
them, and how the result is saved.

Each stage package (`alignment.sft`, `alignment.dpo`, `alignment.reward`, `alignment.value`) subclasses `Stage` once
in its `stage.py`, next to its config, row schema, tokenizer and trainer, and `alignment.stages.STAGES` makes its one
instance. Its script, the benchmarks, `alignment.inspect`, the pipeline and the recipe tests all build from that
instance, so no stage's wiring is written twice. A script is `run_cli(STAGES["sft"].run)`: the registry parses the
recipe with the stage's config alone, then `Stage.run` is the whole job, top to bottom, and the benchmarks and
`alignment.inspect` call the same steps it calls.

A new stage sets the class attributes and implements `tokenize`; it extends `tokenizer_options` with its own
options, `load_model` when its model is not a causal LM and `trainer_kwargs` when its trainer takes more. It inherits
the rest: the mixture with its row check, the choice of the held-out split, the run itself, saving and the model
card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from alignment.chat.turns import end_of_turn_token_ids
from alignment.data.mixture import Mixture, load_mixture
from alignment.data.rows import RowProblem
from alignment.recipes.arguments import Recipe
from alignment.recipes.parser import RecipeError
from alignment.runtime.lifecycle import save_and_card, set_generation_eos, start_run, train_and_evaluate
from alignment.runtime.loading import check_lora_targets, load_model, match_embeddings_to_tokenizer
from alignment.runtime.preemption import StopOnSignal


@dataclass
class StageData:
    """The tokenized splits a stage trains and evaluates on (only splits with rows), with what tokenization did to
    each (the stage's report, e.g. `alignment.sft.TruncationReport`)."""

    splits: dict[str, Dataset]
    reports: dict[str, Any] = field(default_factory=dict)


class Stage:
    """One training stage. Subclasses set the class attributes and implement the methods that raise
    `NotImplementedError`; `run` is the order a script calls the steps in."""

    trainer_class: ClassVar[type[Trainer]]
    required_columns: ClassVar[tuple[str, ...]]  # columns every source must have
    # `load_mixture`'s validator of one raw row, set as `row_problem = staticmethod(<schema's check>)`.
    row_problem: ClassVar[Callable[[dict], RowProblem | None]]
    # Plots written beside the model: figure name -> the (train, eval) metric keys it shows (`runtime.plots`).
    figures: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Whether the stage's tokenizer must have a chat template (a raw-text stage needs one only to render chats).
    needs_chat_template: ClassVar[bool] = True

    def __init__(self, name: str, config_class: type[TrainingArguments]):
        """`alignment.stages` makes the one instance of each stage, giving it its registered name (the recipe folder
        name: recipes/<model>/<name>/config_*.yaml) and config class."""
        self.name = name
        self.config_class = config_class

    def start(self, recipe: Recipe) -> PreTrainedTokenizerBase:
        """Set up logging, check `output_dir`, log and save the resolved config, and load the tokenizer with the
        recipe's chat template (`alignment.runtime.lifecycle`)."""
        return start_run(recipe, chat_template_required=self.needs_chat_template)

    def load_rows(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase | None = None) -> Mixture:
        """The recipe's mixture, every row checked by the stage's row schema (`alignment.data.load_mixture`).
        `tokenizer` is for a stage whose rows are converted with it (raw text renders chats by their template)."""
        return load_mixture(recipe.data, validate_row=self.row_problem, required_columns=list(self.required_columns))

    def tokenizer_options(self, recipe: Recipe) -> dict[str, Any]:
        """The keyword arguments of `tokenize` that come from the recipe: `max_length`, `skip_invalid_rows` and
        `num_proc` for every stage; a stage adds its own (masks, prompt length, ...)."""
        return {
            "max_length": recipe.training.max_length,
            "skip_invalid_rows": recipe.data.skip_invalid_rows,
            "num_proc": recipe.training.dataset_num_proc,
        }

    def tokenize(
        self,
        rows: Dataset,
        tokenizer: PreTrainedTokenizerBase,
        *,
        split: str,
        source_of: Callable[[int], str] | None = None,
        **options: Any,
    ) -> tuple[Dataset, Any]:
        """One split of checked rows as the trainer's token ids, and the stage's report of what was cut or dropped.
        `source_of(row)` names the source of a row in errors; `options` are `tokenizer_options(recipe)`."""
        raise NotImplementedError

    def load_data(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> StageData:
        """Every split of the mixture that has rows, tokenized with the recipe's options."""
        rows = self.load_rows(recipe, tokenizer)
        options = self.tokenizer_options(recipe)
        data = StageData(splits={})
        for split in rows:
            if len(rows[split]):
                data.splits[split], data.reports[split] = self.tokenize(
                    rows[split], tokenizer, split=split, source_of=partial(rows.source_of, split), **options
                )
        if not len(data.splits.get("train", ())):
            raise RecipeError(
                f"No training example is left once tokenized (`max_length: {recipe.training.max_length}`): "
                f"{data.reports.get('train', 'the mixture has no training rows')}. Raise `max_length`, or check "
                "the rows dropped above."
            )
        return data

    def load_model(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """The model to train: by default the causal LM of `model_name_or_path` (an adapter folder merged into its
        base), matched to the tokenizer (embeddings resized for added template tokens), its generation stopping at
        `generation_stop_ids` (the chat template's end of turn) and the tokenizer's EOS."""
        training = recipe.training
        model = load_model(
            recipe.model,
            trust_remote_code=training.trust_remote_code,
            gradient_checkpointing=training.gradient_checkpointing,
        )
        match_embeddings_to_tokenizer(model, tokenizer)
        set_generation_eos(model, tokenizer, self.generation_stop_ids(tokenizer))
        return model

    def generation_stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """The ids generation stops at besides the tokenizer's EOS: the chat template's end of turn by default."""
        return end_of_turn_token_ids(tokenizer)

    def build_trainer(
        self,
        recipe: Recipe,
        tokenizer: PreTrainedTokenizerBase,
        data: StageData,
        model: PreTrainedModel,
        *,
        callbacks: list | None = None,
        trainer_class: type[Trainer] | None = None,
    ) -> Trainer:
        """The stage's trainer over the train split and `eval_split`: an instance of `trainer_class`, by default the
        stage's own, or a subclass of it (the benchmarks pass a metered one), given `callbacks` (after `StopOnSignal`,
        which saves and stops a run on SIGTERM or SIGINT) and the stage's own `trainer_kwargs`."""
        check_lora_targets(model, recipe.model)
        return (trainer_class or self.trainer_class)(
            model=model,
            args=recipe.training,
            train_dataset=data.splits["train"],
            eval_dataset=self.eval_split(recipe, data),
            processing_class=tokenizer,
            callbacks=[StopOnSignal(), *(callbacks or [])],
            **self.trainer_kwargs(recipe, tokenizer),
        )

    def trainer_kwargs(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """The stage's own arguments of its trainer (a LoRA config, a reference model, ...); none by default."""
        return {}

    def eval_split(self, recipe: Recipe, data: StageData) -> Dataset | None:
        """The held-out split the trainer evaluates on when the recipe evaluates (`eval_strategy` other than `no`, or
        `do_eval: true`): the `test` split, which must have rows; else None."""
        training = recipe.training
        if training.eval_strategy == "no" and not training.do_eval:
            return None
        if "test" not in data.splits:
            strategy = getattr(training.eval_strategy, "value", training.eval_strategy)  # transformers' enum
            asked = "`do_eval: true`" if strategy == "no" else f"`eval_strategy: {strategy}`"
            raise RecipeError(
                f"{asked} evaluates on a held-out split, and the mixture has no test rows "
                f"(`dataset_splits: {recipe.data.dataset_splits}`, "
                f"`test_split_size: {recipe.data.test_split_size}`). "
                "Set `eval_strategy: no` (and `do_eval: false`), or hold rows out: a test split in `dataset_splits` "
                "or the list form, or `test_split_size: 0.05`."
            )
        return data.splits["test"]

    def tags(self, recipe: Recipe) -> list[str]:
        """Model-card tags (besides `alignment-handbook`)."""
        return [self.name]

    def run(self, recipe: Recipe) -> None:
        """The stage's script once its recipe has parsed (`alignment.stages.StageEntry.run`): train, evaluate, save."""
        tokenizer = self.start(recipe)  # logging, output_dir, resolved config, tokenizer with its template
        data = self.load_data(recipe, tokenizer)  # the mixture, every row checked, every split tokenized
        model = self.load_model(recipe, tokenizer)
        trainer = self.build_trainer(recipe, tokenizer, data, model)
        train_and_evaluate(trainer)  # resumes from the newest complete checkpoint in `output_dir`
        self.after_training(trainer, data)
        self.save(trainer, recipe, data)

    def after_training(self, trainer: Trainer, data: StageData) -> None:
        """Anything the stage records once training and evaluation are done, before saving (nothing by default)."""

    def save(self, trainer: Trainer, recipe: Recipe, data: StageData) -> None:
        """Save the model, its tokenizer and generation config, the plots of `figures` and the model card, then mark
        the run finished (`alignment.runtime.lifecycle.save_and_card`)."""
        save_and_card(trainer, dataset_names=recipe.data.source_names(), tags=self.tags(recipe), figures=self.figures)
