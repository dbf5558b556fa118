"""Recipe dataclasses shared by every `scripts/run_*.py`.

Each script parses a fixed tuple of dataclasses (see `alignment.recipes.parser`): the model arguments, the data
arguments below, and the stage's trainer config (TRL's, extended where the handbook needs more). Every recipe key is a
field of one of them; anything else is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import trl
from transformers import TrainingArguments

from alignment.chat.turns import HISTORY_REWRITE_CHOICES
from alignment.data.sources import DEFAULT_DATASET_SPLITS, TXT_DOCUMENTS

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """Where the training data comes from and how conversations become tokens.

    `dataset_mixer` takes two forms (one meaning for `fraction`/`weight`: the share of that source's rows kept,
    sampled deterministically by `seed`; it must be in (0, 1]):

    Zephyr form, every source read with the same `dataset_splits`:

        dataset_mixer:
          HuggingFaceH4/ultrachat_200k: 1.0
        dataset_splits: [train_sft, test_sft]

    List form, each source with its own split, columns and weight:

        dataset_mixer:
          - path: data/chat.jsonl
            split: train
            columns: [messages]
            weight: 0.5
    """

    dataset_mixer: dict[str, float] | list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "Sources to mix: `{hub id or local path: fraction}` or a list of `{path, split, columns, weight, "
            "name, data_files, format, columns_map, tags}` entries (`format`: messages, sharegpt, alpaca, "
            "prompt_completion or preference, detected from the columns when absent; see `alignment.data.formats`). "
            "Local paths may be .json/.jsonl/.parquet files, a folder of them or a saved dataset folder; for raw "
            "text (pt), also a .txt file or a folder of .txt files (`txt_documents`)."
        },
    )
    dataset_splits: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASET_SPLITS),
        metadata={
            "help": "Splits read from every source in the Zephyr form. A split whose name contains 'train' feeds the "
            "train set, one containing 'test' feeds the test set."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset configuration name passed to `datasets.load_dataset` (Zephyr form)."}
    )
    test_split_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of a source's train rows held out as its test split when the source has no test split."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template: a shipped name (see `alignment/chat/chat_templates/README.md`), a path to a "
            ".jinja file, or unset to use the tokenizer's own."
        },
    )
    add_chat_template_tokens: bool = field(
        default=False,
        metadata={
            "help": "Add the special tokens a shipped template needs (e.g. ChatML's <|im_start|>, <|im_end|>) when "
            "the tokenizer lacks them, and resize the model's embeddings; off, such a template is refused."
        },
    )
    train_on_prompt: bool = field(
        default=False,
        metadata={"help": "Train on every token (system, user, template glue) instead of the assistant turns only."},
    )
    skip_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Drop malformed rows, and rows the chat template cannot encode exactly, and log a count per "
            "reason, instead of stopping at the first one."
        },
    )
    history_rewrite: str = field(
        default="expand",
        metadata={
            "help": "When one token sequence cannot hold every assistant turn of a chat in its inference context "
            "(templates that rewrite history, such as Qwen3 dropping earlier turns' reasoning): `expand` trains each "
            "turn in its own example (the count is logged), `last_turn` trains the last assistant turn only, "
            "`refuse` stops on such a chat (or drops it with `skip_invalid_rows`). SFT only: preference pairs and "
            "value traces need only their prompt's inference ids. See `alignment/chat/turns.py`."
        },
    )
    txt_documents: str = field(
        default="file",
        metadata={
            "help": "What one document (one row, a `text`) of a .txt source is: `file` (default): each .txt file "
            "whole, as written; `blank_lines`: each block of lines between blank lines. A .txt source is a .txt file "
            "or a folder of .txt files, read in name order as one split; raw-text stages (pt) read it."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for source subsampling and the held-out split."})

    def __post_init__(self):
        if self.history_rewrite not in HISTORY_REWRITE_CHOICES:
            raise ValueError(
                f"`history_rewrite: {self.history_rewrite}` is not one of {', '.join(HISTORY_REWRITE_CHOICES)}."
            )
        if self.txt_documents not in TXT_DOCUMENTS:
            raise ValueError(
                f"`txt_documents: {self.txt_documents}` is not one of {', '.join(TXT_DOCUMENTS)} (`file`: one "
                "document per .txt file; `blank_lines`: one per block of lines between blank lines)."
            )

    def source_names(self) -> list[str]:
        """The path or hub id of every source, for logs and the model card."""
        if isinstance(self.dataset_mixer, dict):
            return list(self.dataset_mixer)
        return [entry.get("path", "?") for entry in self.dataset_mixer or []]


@dataclass
class ModelArguments(trl.ModelConfig):
    """TRL's `ModelConfig` (model id, dtype, attention, LoRA and bitsandbytes fields) plus the handbook's checks.

    `trust_remote_code` lives in each trainer config (TRL's field) and is read from there when loading.
    """

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load, when it differs from `model_name_or_path`."}
    )
    allow_pickle_weights: bool = field(
        default=False,
        metadata={
            "help": "Load weights stored as pickle (`pytorch_model.bin`, `adapter_model.bin`, `value_head.pth`) when "
            "no safetensors file exists. Off, such a model is refused: unpickling runs code from the file."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.model_name_or_path is None:
            raise ValueError("`model_name_or_path` is required: a hub id or a local model folder.")
        if (self.load_in_4bit or self.load_in_8bit) and not self.use_peft:
            raise ValueError(
                "`load_in_4bit`/`load_in_8bit` quantize the frozen base model and train only LoRA adapters: "
                "set `use_peft: true` as well."
            )
        dtypes = self.__dataclass_fields__["dtype"].metadata["choices"]  # TRL's own list
        if self.dtype not in dtypes:
            raise ValueError(f"`dtype: {self.dtype}` is not one of {', '.join(dtypes)}.")
        if self.lora_r < 1:
            raise ValueError(
                f"`lora_r: {self.lora_r}` must be at least 1 (the rank of each LoRA update; 8-64 is usual)."
            )
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"`lora_dropout: {self.lora_dropout}` must be in [0, 1).")


@dataclass
class OutputDirArguments:
    """Mixed into every stage's trainer config: what a run may do with an `output_dir` that holds another run.

    transformers 5 dropped its `overwrite_output_dir` (which never stopped a second run from writing over a finished
    model anyway); the handbook's field of that name is the one way to replace a finished run or another recipe's
    checkpoints (see `alignment.runtime.reliability.check_output_dir`), so old recipes that carry it parse again.
    """

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace what `output_dir` holds: a finished model, or checkpoints of a run with another recipe "
            "(deleted first). Off, such a run is refused naming the keys that differ; the same recipe run again on "
            "its finished output reports it complete and exits 0."
        },
    )


@dataclass
class ReferenceCacheArguments:
    """Mixed into the configs of stages that score a frozen reference (DPO, KTO): where its log-probs are cached
    (`alignment.runtime.reference`)."""

    ref_logps_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the on-disk cache of reference log-probs (`precompute_ref_log_probs: true`). None: "
            "`$HF_HOME/alignment/ref_logps`, shared by every run of this machine, so re-runs and sweeps reuse it."
        },
    )


def use_cpu_without_accelerator(config: TrainingArguments) -> None:
    """Train on the CPU when the machine has no accelerator, whatever the recipe says.

    Without `use_cpu`, transformers refuses TRL's default `bf16` on a CPU machine, DeepSpeed's batch-size check fails
    under ZeRO-3, and a DDP launch silently trains one full independent copy per process.
    """
    if not config.use_cpu and not torch.accelerator.is_available():
        config.use_cpu = True
        logger.info("No accelerator found: training on the CPU (`use_cpu: true`)")


def refuse_values_the_trainer_would_misread(config: TrainingArguments) -> None:
    """Refuse values that transformers would reject deep inside training, or quietly replace: a batch or
    accumulation of 0, a negative learning rate, an interval of 0 steps (`eval_steps: 0` becomes `logging_steps`),
    a run with no step to train (`num_train_epochs: 0` saved the untrained model as a finished run), a `max_length`
    below 1 (a negative one cut the last tokens of every SFT example)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"`{name}: {getattr(config, name)}` must be at least 1.")
    if not config.learning_rate >= 0:  # also refuses NaN
        raise ValueError(f"`learning_rate: {config.learning_rate}` must be a number >= 0.")
    for name in ("eval_steps", "save_steps", "logging_steps"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(
                f"`{name}: {value}` must be > 0: a number of steps, or below 1 a share of the run's steps."
            )
    if config.max_steps <= 0 and not config.num_train_epochs > 0:
        raise ValueError(
            f"`num_train_epochs: {config.num_train_epochs}` trains nothing: give a number of epochs > 0, or "
            "`max_steps`."
        )
    max_length = getattr(config, "max_length", None)
    if max_length is not None and max_length < 1:
        raise ValueError(f"`max_length: {max_length}` must be at least 1 token, or null for no limit.")


def refuse_overridden_trl_fields(config: TrainingArguments) -> None:
    """Refuse TRL fields whose job the handbook does itself, so no recipe has two knobs for one thing."""
    if getattr(config, "assistant_only_loss", False):
        raise ValueError(
            "`assistant_only_loss` is not used: the handbook always trains on every assistant turn (masks derived "
            "from the chat template). Remove the key, or set `train_on_prompt: true` to train on every token."
        )
    if getattr(config, "chat_template_path", None) is not None:
        raise ValueError(
            f"`chat_template_path: {config.chat_template_path}` is not used: set `chat_template` (a shipped name or "
            "a path to a .jinja file) instead."
        )


@dataclass
class StageTrainingArguments(OutputDirArguments):
    """The base of every stage's trainer config, listed first: `class DPOConfig(StageTrainingArguments,
    trl.DPOConfig)`.

    Adds `overwrite_output_dir` (`OutputDirArguments`) and runs the checks every stage needs before the trainer
    config's own `__post_init__`: TRL switches the handbook replaces are refused (`refuse_overridden_trl_fields`), so
    are values transformers would misread (`refuse_values_the_trainer_would_misread`), and
    a machine without an accelerator trains on its CPU (`use_cpu_without_accelerator`). A stage config's own
    `__post_init__` runs its checks, then calls `super().__post_init__()`, which lands here.
    """

    def __post_init__(self):
        refuse_overridden_trl_fields(self)
        refuse_values_the_trainer_would_misread(self)
        use_cpu_without_accelerator(self)
        super().__post_init__()


class Recipe(NamedTuple):
    """A parsed recipe: the model arguments, the data arguments and the stage's trainer config."""

    model: ModelArguments
    data: DataArguments
    training: TrainingArguments
