"""Step value models in the style of ReST-MCTS*: a causal LM plus a scalar value head, trained on SFT and per-step Q.

Tree search over reasoning steps needs a model that scores each partial solution. The ReST-MCTS* authors trained one
on TRL's `AutoModelForCausalLMWithValueHead`, which TRL 1.x no longer ships; this module is our own version of that
stage, built on `transformers.Trainer` (checkpoints, resume, logging, DeepSpeed and PEFT come from there).

Data, two accepted row forms (one per dataset; `value_row_problem` checks them, `to_trace` reads them):

* ReST-MCTS*: `{"prompt": str | messages, "response": [{"step": str, "Q": float}, ...]}`, Q in [-1, 1]. The trace is
  positive (its steps are also SFT targets) when its final step's Q is exactly 1.
* TRL stepwise supervision: `{"prompt": str | messages, "completions": [str, ...], "labels": [bool, ...]}`. Each
  step's Q is +1 when its label is true, -1 when false; the trace is positive when every label is true (a trace with
  a wrong step somewhere is not a demonstration to imitate, whatever its last label says).

A string prompt is one user turn; a message list must end with a user turn. Both are rendered with the chat template
and its generation prompt (`render_prompt`), exactly as at inference.

Tokens (`tokenize_trace`): the rendered prompt, then each step as `step.strip() + "\\n"` tokenised on its own and
appended, so the tokens of a trace's first k steps do not depend on the steps after them (a search can score a
partial solution and extend it). Per token:

* `Q` is `Q_IGNORE` (-100.0) everywhere except at the last token of each step (the one carrying its newline), which
  holds that step's Q. The value is read at that position in training, evaluation and `score_steps`.
* `labels` are the step tokens of a positive trace, and `IGNORE_INDEX` elsewhere; prompt tokens are trained only with
  `train_on_prompt` (then in every trace: a prompt is never wrong).
* Sequences are cut at `max_length` (ReST-MCTS*'s `cutoff_len`), keeping the start; a step whose last token is cut
  off loses its target. `ValueTruncationReport` counts the steps lost; rows left with no target and no label are
  dropped and counted.

The ignore value is -100.0 rather than a recipe knob because the Trainer pads predictions and labels with -100 when it
gathers evaluation batches across steps and processes: any other value would turn that padding into Q targets.

Model (`ValueModel`): the causal LM (`body`, full or PEFT-wrapped) and `ValueHead`, a linear map of the last hidden
state to one scalar passed through tanh, computed in fp32 whatever the body's dtype. Position ids are derived from
the attention mask, so left and right padding give the same values.

Loss (`joint_loss`): `sft_loss + value_loss_weight * value_loss`. `sft_loss` is the mean next-token cross-entropy over
the label tokens, and 0 (not NaN) when there are none (a batch of negative traces). `value_loss` is the squared error
`(value - Q)^2` summed over the Q positions and divided by (their count + 1e-3). In training both means run over the
whole optimizer step, every micro-batch of every process (the authors' LLaMA-Factory code averaged micro-batch
means instead): one process with batch 8 and two with batch 4 then compute the same loss and the same gradient.

Saving: `value_head.safetensors` (fp32, keys `weight` and `bias`) is written beside the full model or the LoRA
adapter, by `save_value_model`, in every checkpoint and in the final output. The trainer saves from the state dict
the Trainer gathers (under DeepSpeed ZeRO-3, `accelerator.get_state_dict` consolidates the shards on rank 0), never
from the live, possibly partitioned, parameters. `load_value_model(path)` reloads either kind in one call.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, List, Value
from peft import get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import EvalPrediction, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from trl import get_peft_config

from alignment.configs import (
    ModelArguments,
    StageTrainingArguments,
)
from alignment.data import RowProblem, conversation_problem
from alignment.model_utils import load_model, match_embeddings_to_tokenizer
from alignment.reliability import CrashSafeTrainerMixin
from alignment.row_encoding import encode_rows
from alignment.templates import render_prompt
from alignment.turns import IGNORE_INDEX, continuation_ids, inference_ids

logger = logging.getLogger(__name__)

Q_IGNORE = float(IGNORE_INDEX)
VALUE_HEAD_NAME = "value_head.safetensors"
PICKLED_VALUE_HEAD_NAME = "value_head.pth"
# Makes an empty set of Q positions give a value loss of 0 instead of 0/0 (the authors' constant).
VALUE_LOSS_EPS = 1e-3


@dataclass
class ValueConfig(StageTrainingArguments, TrainingArguments):
    """`transformers.TrainingArguments` plus the value stage's fields.

    Not TRL's `SFTConfig`: the value trainer is a `Trainer` subclass with its own tokenization, collator and loss, so
    SFTConfig's packing, padding-free, completion-only and dataset-text fields would be knobs that do nothing.
    """

    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Cut every tokenized trace to this many tokens, keeping the start (ReST-MCTS*'s `cutoff_len`, "
            "1024 in the paper). Steps whose last token is cut lose their Q target; they are counted and logged."
        },
    )
    value_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Loss = sft_loss + value_loss_weight * value_loss. Must be > 0 (0 would be plain SFT)."},
    )
    padding_side: Literal["left", "right"] = field(
        default="left",
        metadata={
            "help": "Side the collator pads batches on (the authors padded left). Position ids follow the attention "
            "mask, so the values do not depend on it."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay false: the `Q` column is not a model argument and the Trainer would drop it."},
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes used to tokenize the data."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model and tokenizer code from the hub (`trust_remote_code`)."}
    )

    def __post_init__(self):
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"`max_length: {self.max_length}`: must be at least 2 tokens, or null for no cut.")
        if not (math.isfinite(self.value_loss_weight) and self.value_loss_weight > 0):
            raise ValueError(
                f"`value_loss_weight: {self.value_loss_weight}`: must be a positive number (1.0 weighs the two "
                "losses equally); for SFT alone use scripts/run_sft.py."
            )
        if self.remove_unused_columns:
            raise ValueError(
                "`remove_unused_columns: true` would drop the `Q` targets before they reach the loss: set it to false."
            )
        super().__post_init__()


# Rows


@dataclass
class StepTrace:
    """One row in the common form: prompt turns, step texts, one Q per step, and whether the trace is SFT data."""

    prompt: list[dict[str, str]]
    steps: list[str]
    q: list[float]
    positive: bool


def _prompt_messages(prompt: Any) -> list[dict[str, str]] | RowProblem:
    if isinstance(prompt, str):
        if not prompt.strip():
            return RowProblem("empty prompt", "the prompt is empty")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        # A prompt is a chat missing its answer: check it as one with a placeholder reply appended.
        problem = conversation_problem([*prompt, {"role": "assistant", "content": "placeholder"}])
        if problem is not None:
            return RowProblem(problem.kind, f"prompt: {problem}")
        return prompt
    return RowProblem(
        "malformed prompt", f"prompt must be a string or a list of messages, got {type(prompt).__name__}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_trace(row: dict) -> StepTrace | RowProblem:
    """The row as a `StepTrace`, or the reason it is not a valid step-value row (see the module doc for the forms)."""
    if "prompt" not in row:
        return RowProblem("missing column", f"no 'prompt' column (the row has: {', '.join(row)})")
    rest, stepwise = "response" in row, "completions" in row or "labels" in row
    if rest == stepwise:
        return RowProblem(
            "unknown form",
            "a row needs either `response` (ReST-MCTS*: [{step, Q}]) or `completions` and `labels` (TRL stepwise "
            f"supervision), not {'both' if rest else 'neither'} (the row has: {', '.join(row)})",
        )
    prompt = _prompt_messages(row["prompt"])
    if isinstance(prompt, RowProblem):
        return prompt
    if rest:
        response = row["response"]
        if not isinstance(response, list) or not response:
            return RowProblem("malformed response", "response must be a non-empty list of {step, Q}")
        steps, q = [], []
        for index, item in enumerate(response):
            if not isinstance(item, dict) or "step" not in item or "Q" not in item:
                return RowProblem("malformed step", f"response[{index}] is not a dict with 'step' and 'Q'")
            steps.append(item["step"])
            q.append(item["Q"])
        where = "response[{}]"
    else:
        steps, labels = row.get("completions"), row.get("labels")
        if not isinstance(steps, list) or not steps or not isinstance(labels, list):
            return RowProblem("malformed completions", "completions and labels must be lists, completions non-empty")
        if len(labels) != len(steps):
            return RowProblem(
                "label count", f"{len(steps)} completions but {len(labels)} labels: one boolean per step is needed"
            )
        if not all(isinstance(label, bool) for label in labels):
            return RowProblem("non-boolean label", f"labels must be true/false, got {labels}")
        q = [1.0 if label else -1.0 for label in labels]
        where = "completions[{}]"
    for index, (step, value) in enumerate(zip(steps, q, strict=True)):
        if not isinstance(step, str) or not step.strip():
            return RowProblem("empty step", f"{where.format(index)}: the step text is empty or not a string")
        if not _is_number(value) or not -1.0 <= value <= 1.0:
            return RowProblem("Q out of range", f"{where.format(index)}: Q {value!r} is not a number in [-1, 1]")
    q = [float(value) for value in q]
    positive = q[-1] == 1.0 if rest else all(value == 1.0 for value in q)
    return StepTrace(prompt=prompt, steps=[step.strip() for step in steps], q=q, positive=positive)


def value_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator for value rows: None when the row is a valid step trace."""
    trace = to_trace(row)
    return trace if isinstance(trace, RowProblem) else None


# Tokens


def step_text(step: str) -> str:
    """How a step is written after the prompt: stripped, ending in one newline."""
    return step.strip() + "\n"


def encode_steps(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], steps: Sequence[str]
) -> tuple[list[int], int, list[int]]:
    """`(input_ids, prompt_length, step_ends)`: the prompt's inference ids (`alignment.turns`), then each step's ids
    as the continuation of everything before it, and the index of each step's last token. Used by training and by
    `score_steps`, so both read the same positions.

    Each step's ids are those of `prompt + steps[:k + 1]` after the ids of `prompt + steps[:k]`, proved a prefix, so a
    step ends on a token boundary and the ids of the first k steps never depend on later ones (a search scores a
    partial solution, then extends it); where a token straddles two steps, the step is tokenized on its own (as
    generation appends it) and must decode to itself.

    Raises:
        ChatTemplateError: a step has no exact ids after the text before it (names the step).
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = render_prompt(tokenizer, messages)
    input_ids = inference_ids(tokenizer, text)
    prompt_length, step_ends = len(input_ids), []
    for number, step in enumerate(steps):
        ids, _ = continuation_ids(tokenizer, input_ids, text, step_text(step), f"step {number}")
        text += step_text(step)
        input_ids = input_ids + ids
        step_ends.append(len(input_ids) - 1)
    return input_ids, prompt_length, step_ends


def tokenize_trace(
    tokenizer: PreTrainedTokenizerBase,
    trace: StepTrace,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
) -> dict[str, Any]:
    """`input_ids`, `labels`, `Q` (see the module doc), plus `steps` and `steps_kept` (step targets before and after
    the cut) and `truncated`."""
    input_ids, prompt_length, step_ends = encode_steps(tokenizer, trace.prompt, trace.steps)
    response_labels = (
        input_ids[prompt_length:] if trace.positive else [IGNORE_INDEX] * (len(input_ids) - prompt_length)
    )
    prompt_labels = input_ids[:prompt_length] if train_on_prompt else [IGNORE_INDEX] * prompt_length
    labels = prompt_labels + response_labels
    q = [Q_IGNORE] * len(input_ids)
    for end, value in zip(step_ends, trace.q, strict=True):
        q[end] = value
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels, q = input_ids[:max_length], labels[:max_length], q[:max_length]
    steps_kept = sum(1 for end in step_ends if not truncated or end < max_length)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "Q": q,
        "steps": len(step_ends),
        "steps_kept": steps_kept,
        "truncated": truncated,
    }


_TOKENIZED_FEATURES = Features(
    {
        "input_ids": List(Value("int64")),
        "labels": List(Value("int64")),
        "Q": List(Value("float32")),
        "steps": Value("int64"),
        "steps_kept": Value("int64"),
        "truncated": Value("bool"),
        "useful": Value("bool"),
    }
)


@dataclass
class ValueTruncationReport:
    """What `max_length` did to one split."""

    examples: int
    truncated: int
    steps: int
    steps_lost: int
    dropped: int

    def __str__(self) -> str:
        return (
            f"{self.truncated}/{self.examples} traces truncated to max_length, {self.steps_lost}/{self.steps} step "
            f"targets lost, {self.dropped} traces left with no target and no label and dropped"
        )

    def metrics(self, split: str) -> dict[str, int]:
        """The counts as metrics named for `split` (written with the run's other metrics)."""
        return {
            f"{split}_traces_truncated": self.truncated,
            f"{split}_steps_lost_to_truncation": self.steps_lost,
            f"{split}_traces_dropped": self.dropped,
        }


def tokenize_traces(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    train_on_prompt: bool = False,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, ValueTruncationReport]:
    """Map value rows to `input_ids`/`labels`/`Q`, cut to `max_length`, and drop rows that teach nothing.

    A trace without exact ids (`encode_steps`) is an `InvalidRowError` naming the source (`source_of(row)`), split,
    row and step, or with `skip_invalid_rows` is dropped and counted by reason.
    """

    def encode(row: dict) -> list[dict]:
        trace = to_trace(row)
        if isinstance(trace, RowProblem):
            raise ValueError(f"Invalid value row ({split_name}): {trace}")
        encoded = tokenize_trace(tokenizer, trace, max_length=max_length, train_on_prompt=train_on_prompt)
        encoded["useful"] = encoded["steps_kept"] > 0 or any(label != IGNORE_INDEX for label in encoded["labels"])
        return [encoded]

    empty = {"input_ids": [], "labels": [], "Q": [], "steps": 0, "steps_kept": 0, "truncated": False, "useful": False}
    encoded = encode_rows(
        dataset,
        encode,
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} traces",
        # Explicit: otherwise `labels` would keep the input's type (TRL stepwise rows have boolean `labels`).
        features=_TOKENIZED_FEATURES,
    ).examples.remove_columns("row")
    keep = [i for i, useful in enumerate(encoded["useful"]) if useful]
    report = ValueTruncationReport(
        examples=len(encoded),
        truncated=sum(encoded["truncated"]),
        steps=sum(encoded["steps"]),
        steps_lost=sum(encoded["steps"]) - sum(encoded["steps_kept"]),
        dropped=len(encoded) - len(keep),
    )
    if len(keep) < len(encoded):
        encoded = encoded.select(keep)
    logger.info("%s split: %s", split_name, report)
    return encoded.select_columns(["input_ids", "labels", "Q"]), report


@dataclass
class ValueCollator:
    """Pad `input_ids` (pad token), `attention_mask` (0), `labels` (-100) and `Q` (`Q_IGNORE`) on one side.

    `Q` is padded exactly like `labels`; rows without `labels`/`Q` (scoring) get only ids and mask.
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "left"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": self._pad([f["input_ids"] for f in features], self.pad_token_id, width, torch.long),
            "attention_mask": self._pad([[1] * len(f["input_ids"]) for f in features], 0, width, torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = self._pad([f["labels"] for f in features], IGNORE_INDEX, width, torch.long)
        if "Q" in features[0]:
            batch["Q"] = self._pad([f["Q"] for f in features], Q_IGNORE, width, torch.float32)
        return batch

    def _pad(self, rows: list[list], value: float, width: int, dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=dtype)
        for i, row in enumerate(rows):
            if not len(row):
                continue
            if self.padding_side == "left":
                out[i, width - len(row) :] = torch.as_tensor(row, dtype=dtype)
            else:
                out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
        return out


# Model


class ValueHead(nn.Module):
    """`tanh(w . h + b)` on the last hidden state `h`, computed in fp32 with autocast off.

    Its parameters are direct (no inner `nn.Linear`), so DeepSpeed ZeRO-3's hook on this module gathers them before
    `forward` reads them.
    """

    def __init__(self, hidden_size: int, dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, hidden_size, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(1, dtype=dtype))
        # Scaled so that the initial values have unit-order spread on unit-variance hidden states (as reward heads).
        # Drawn from its own seeded generator: the global one's state depends on how the body was loaded (one
        # process, DDP, ZeRO-3 init), and the head must start the same in every layout.
        generator = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(hidden_size + 1), generator=generator)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            scores = F.linear(hidden_states.float(), self.weight.float(), self.bias.float())
        return torch.tanh(scores).squeeze(-1)


class ValueModel(nn.Module):
    """A causal LM (`body`: a `PreTrainedModel` or a PEFT model) and its `value_head`.

    `forward` returns `{"logits", "values"}`: next-token logits and one value in (-1, 1) per position.
    """

    def __init__(self, body: nn.Module, value_head: ValueHead):
        super().__init__()
        self.body = body
        self.value_head = value_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, values_only: bool = False
    ) -> dict[str, torch.Tensor]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Positions count real tokens only, so a left-padded row sees the positions it would see unpadded.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            # Scoring needs no vocabulary projection beyond one position.
            **({"logits_to_keep": 1} if values_only else {}),
        )
        return {"logits": outputs.logits, "values": self.value_head(outputs.hidden_states[-1])}

    @property
    def config(self):
        """The body's config (the Trainer and its model card read `model.config`)."""
        return self.body.config

    @property
    def generation_config(self):
        """The body's generation config: the LM still generates steps, and `save_and_card` saves it."""
        return self.body.generation_config

    def create_or_update_model_card(self, output_dir: str) -> None:
        """The LoRA body's adapter card: the Trainer calls this when the card it writes is a PEFT one (a LoRA value
        model saves its adapter, whose card says `library_name: peft`)."""
        self.body.create_or_update_model_card(output_dir)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Checkpoint the body's layers (called by the Trainer for `gradient_checkpointing: true`)."""
        self.body.activation_checkpointing_enable(
            activation_checkpointing_kwargs=activation_checkpointing_kwargs,
            every_n_layers=every_n_layers,
            offload=offload,
        )


def _hidden_size(body: nn.Module) -> int:
    config = body.config.get_text_config() if hasattr(body.config, "get_text_config") else body.config
    return config.hidden_size


def has_value_head(path: str | Path) -> bool:
    """True when `path` holds a value head, as safetensors or as a pickle (`value_head.pth`)."""
    return (Path(path) / VALUE_HEAD_NAME).is_file() or (Path(path) / PICKLED_VALUE_HEAD_NAME).is_file()


def load_value_head(
    path: str | Path, hidden_size: int, dtype: torch.dtype = torch.float32, *, allow_pickle_weights: bool = False
) -> ValueHead:
    """Read `path/value_head.safetensors` into a `ValueHead`, checking its width against the body's.

    A `value_head.pth` alone (older value-model code saves one) is read only with `allow_pickle_weights`, and then
    as tensors only (`weights_only=True`)."""
    file = Path(path) / VALUE_HEAD_NAME
    if file.is_file():
        state = load_file(str(file))
    elif (Path(path) / PICKLED_VALUE_HEAD_NAME).is_file():
        file = Path(path) / PICKLED_VALUE_HEAD_NAME
        if not allow_pickle_weights:
            raise ValueError(
                f"{file} is a pickle, which can run arbitrary code when loaded, and {path} has no {VALUE_HEAD_NAME}. "
                "Set `allow_pickle_weights: true` if you trust the source."
            )
        state = torch.load(file, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"No {VALUE_HEAD_NAME} in {path}: not the output of scripts/run_value.py.")
    if set(state) != {"weight", "bias"} or tuple(state["weight"].shape) != (1, hidden_size):
        shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
        raise ValueError(
            f"{file} holds {shapes}; a value head for this model needs weight (1, {hidden_size}) and bias (1,)."
        )
    head = ValueHead(hidden_size, dtype=dtype)
    head.load_state_dict(state)
    return head


def _is_zero3(training_args: TrainingArguments) -> bool:
    plugin = getattr(training_args, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def build_value_model(
    model_args: ModelArguments, training_args: ValueConfig, tokenizer: PreTrainedTokenizerBase
) -> ValueModel:
    """The model to train: the body from `load_model` (embeddings matched to the tokenizer, LoRA/QLoRA when asked)
    and a value head, read from `model_name_or_path` when it is a value model's output, else freshly initialised."""
    body = load_model(
        model_args,
        trust_remote_code=training_args.trust_remote_code,
        gradient_checkpointing=training_args.gradient_checkpointing,
    )
    match_embeddings_to_tokenizer(body, tokenizer)
    zero3 = _is_zero3(training_args)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        if getattr(body, "is_loaded_in_4bit", False) or getattr(body, "is_loaded_in_8bit", False):
            body = prepare_model_for_kbit_training(
                body, use_gradient_checkpointing=training_args.gradient_checkpointing
            )
        # Under ZeRO-3, fp32 adapters beside a bf16 base break DeepSpeed's coalesced all-gather (trl#6089).
        body = get_peft_model(body, peft_config, autocast_adapter_dtype=not zero3)
    # The same all-gather needs one dtype for small persistent parameters such as the head: under ZeRO-3 the head is
    # stored in the body's dtype (its optimizer keeps an fp32 master copy; its arithmetic is fp32 either way).
    head_dtype = body.dtype if zero3 and body.dtype in (torch.bfloat16, torch.float16) else torch.float32
    hidden_size = _hidden_size(body)
    source = Path(model_args.model_name_or_path)
    if has_value_head(source):
        logger.info("Value head: continuing from %s", source)
        head = load_value_head(
            source, hidden_size, dtype=head_dtype, allow_pickle_weights=model_args.allow_pickle_weights
        )
    else:
        logger.info("Value head: new, %d inputs, stored in %s", hidden_size, head_dtype)
        head = ValueHead(hidden_size, dtype=head_dtype, seed=training_args.seed)
    return ValueModel(body, head)


def save_value_model(model: ValueModel, output_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None):
    """Write the body (`save_pretrained`: full weights, or the adapter of a PEFT body) and `value_head.safetensors`.

    `state_dict` is the whole `ValueModel`'s (keys `body.*`, `value_head.*`), as the Trainer gathers it (under ZeRO-3
    the consolidated copy on rank 0); None reads the live parameters, which is right only without sharding.
    """
    state_dict = model.state_dict() if state_dict is None else state_dict
    head = {
        k.removeprefix("value_head."): v.float().contiguous()
        for k, v in state_dict.items()
        if k.startswith("value_head.")
    }
    body = {k.removeprefix("body."): v for k, v in state_dict.items() if k.startswith("body.")}
    if set(head) != {"weight", "bias"}:
        raise ValueError(f"The state dict has no value head (value_head.* keys: {sorted(head)}); cannot save it.")
    os.makedirs(output_dir, exist_ok=True)
    model.body.save_pretrained(output_dir, state_dict=body)
    save_file(head, str(Path(output_dir) / VALUE_HEAD_NAME), metadata={"format": "pt"})


def load_value_model(path: str | Path, *, dtype: str = "float32", allow_pickle_weights: bool = False) -> ValueModel:
    """A trained value model from `path` (full weights or a LoRA adapter merged into its base, plus the head), in
    eval mode. The tokenizer, with its chat template, is in the same folder."""
    if not has_value_head(path):
        raise FileNotFoundError(f"No {VALUE_HEAD_NAME} in {path}: not the output of scripts/run_value.py.")
    body = load_model(
        ModelArguments(model_name_or_path=str(path), dtype=dtype, allow_pickle_weights=allow_pickle_weights)
    )
    head = load_value_head(path, _hidden_size(body), allow_pickle_weights=allow_pickle_weights)
    return ValueModel(body, head).eval()


# Loss and metrics


@dataclass
class JointLoss:
    total: torch.Tensor
    sft: torch.Tensor
    value: torch.Tensor


def joint_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    values: torch.Tensor,
    q: torch.Tensor,
    value_loss_weight: float,
    step_counts: torch.Tensor | None = None,
) -> JointLoss:
    """`sft + value_loss_weight * value` (see the module doc); every term fp32.

    The sums of this micro-batch are divided by `step_counts` (label tokens, Q positions) when given, the counts of
    the whole optimizer step; else by this micro-batch's own counts.
    """
    shift_labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    positions = q != Q_IGNORE
    num_tokens, num_steps = loss_counts(labels, q) if step_counts is None else step_counts
    sft = token_losses / num_tokens.clamp(min=1)
    # `where` before squaring, not a product with the mask: a value at a padded position may be anything, NaN
    # included, and NaN * 0 is NaN in the loss and in its gradient.
    errors = torch.where(positions, values.float() - q.float(), 0.0)
    squared = errors**2
    value = squared.sum() / (num_steps + VALUE_LOSS_EPS)
    return JointLoss(total=sft + value_loss_weight * value, sft=sft, value=value)


def loss_counts(labels: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`[label tokens, Q positions]` of a batch, the denominators of `joint_loss`."""
    return torch.stack([(labels[:, 1:] != IGNORE_INDEX).sum(), (q != Q_IGNORE).sum()])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean labels `positive` (ties count one half)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples.")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def value_metrics(values: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Metrics over the positions where `q` is not `Q_IGNORE` (arrays of the same shape, any layout).

    `value_mse`: mean (value - Q)^2. `sign_accuracy`: share of steps with Q != 0 whose value has Q's sign.
    `auroc`: of the value against step correctness (Q > 0), over steps with Q != 0; absent with one class only.
    `value_steps`: the number of Q positions.
    """
    values, q = np.asarray(values, dtype=np.float64), np.asarray(q, dtype=np.float64)
    positions = q != Q_IGNORE
    v, t = values[positions], q[positions]
    if not len(t):
        return {"value_steps": 0}
    metrics = {"value_mse": float(np.mean((v - t) ** 2)), "value_steps": int(len(t))}
    signed = t != 0
    if signed.any():
        metrics["sign_accuracy"] = float(np.mean(np.sign(v[signed]) == np.sign(t[signed])))
        correct = t[signed] > 0
        if correct.any() and not correct.all():
            metrics["auroc"] = auroc(v[signed], correct)
    return metrics


def compute_value_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`value_metrics` of the values and Q the trainer's evaluation loop gathered."""
    return value_metrics(prediction.predictions, prediction.label_ids)


# Trainer


class ValueTrainer(CrashSafeTrainerMixin, Trainer):
    """`Trainer` with the joint loss, value metrics, and saving/loading of the value head beside the body.

    Logged per step: `sft_loss` and `value_loss` (means over the micro-batches since the last log, across
    processes); at evaluation also `value_mse`, `sign_accuracy`, `auroc` and `value_steps` over the whole test set.
    """

    def __init__(
        self,
        model: ValueModel,
        args: ValueConfig,
        *,
        processing_class: PreTrainedTokenizerBase,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        callbacks=None,
    ):
        super().__init__(
            model=model,
            args=args,
            data_collator=ValueCollator(processing_class.pad_token_id, args.padding_side),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_value_metrics,
            callbacks=callbacks,
        )
        self.loss_is_scaled_for_ga = True  # `compute_loss` divides by the whole step's counts
        self._step_counts: torch.Tensor | None = None
        self._metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        if self.is_deepspeed_enabled and _is_zero3(args):
            gather = self.accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
            if not gather.get("stage3_gather_16bit_weights_on_model_save", False):
                raise ValueError(
                    "DeepSpeed ZeRO-3 without `stage3_gather_16bit_weights_on_model_save` saves no gathered weights, "
                    "so checkpoints would have no value_head.safetensors: set `zero3_save_16bit_model: true` in the "
                    "accelerate config (recipes/accelerate_configs/deepspeed_zero3.yaml does)."
                )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimizer step, plus the step's `loss_counts` over every process."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = sum((loss_counts(batch["labels"], batch["Q"]) for batch in batch_samples), torch.zeros(2))
        self._step_counts = self.accelerator.reduce(torch.as_tensor(counts, device=device), reduction="sum")
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        mode = "train" if model.training else "eval"
        # In training, this micro-batch's share of the whole step's means; the data-parallel gradient average over
        # processes is undone by the factor `num_processes`.
        step_counts = self._step_counts if mode == "train" else None
        scale = self.accelerator.num_processes if mode == "train" else 1
        loss = joint_loss(
            outputs["logits"],
            inputs["labels"],
            outputs["values"],
            inputs["Q"],
            self.args.value_loss_weight,
            step_counts,
        )
        for name, term in (("sft_loss", loss.sft), ("value_loss", loss.value)):
            # Training shares add up over processes and micro-batches; `log` averages the entries of a step.
            gathered = self.accelerator.gather(term.detach()[None])
            shares = gathered.sum() * self.current_gradient_accumulation_steps if mode == "train" else gathered.mean()
            self._metrics[mode][name].append(shares.item())
        total = loss.total * scale
        return (total, outputs) if return_outputs else total

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, and the values and Q of every position (`Q_IGNORE` where no step ends) for `compute_value_metrics`."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), outputs["values"].detach().float(), inputs["Q"].float()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{name}": sum(v) / len(v) for name, v in self._metrics[mode].items() if v})
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None) -> None:
        """TRL trainers' signature, which `save_and_card` calls, over the Trainer's own card."""
        super().create_model_card(model_name=model_name, dataset=dataset_name, tags=tags)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, for a body plus value head: `state_dict` is what `save_model` gathered."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        logger.info("Saving value model to %s", output_dir)
        save_value_model(self.accelerator.unwrap_model(self.model), output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Resume: the body through the Trainer's own loader (full weights or adapter), then the head."""
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        super()._load_from_checkpoint(resume_from_checkpoint, model=model.body)
        state = load_file(os.path.join(resume_from_checkpoint, VALUE_HEAD_NAME))
        model.value_head.load_state_dict(
            {name: tensor.to(model.value_head.weight.dtype) for name, tensor in state.items()}
        )

    def _issue_warnings_after_load(self, load_result) -> None:
        """Warn about keys the body's checkpoint lacked, except tied copies (`lm_head.weight` tied to the input
        embeddings is not saved, and stays tied to the loaded embeddings)."""
        body = self.accelerator.unwrap_model(self.model).body
        first_name, tied = {}, set()
        for name, parameter in body.named_parameters(remove_duplicate=False):
            if first_name.setdefault(id(parameter), name) != name:
                tied.add(name)
        missing = [key for key in load_result.missing_keys if key not in tied]
        if missing:
            logger.warning("The checkpoint lacks weights for %s: they keep their current values.", missing)
        if load_result.unexpected_keys:
            logger.warning("The checkpoint has weights the model does not: %s", load_result.unexpected_keys)

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled:  # the DeepSpeed checkpoint holds the whole ValueModel, head included
            super()._load_best_model()
        else:
            self._load_from_checkpoint(self.state.best_model_checkpoint)


# Scoring


@torch.no_grad()
def score_traces(
    model: ValueModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: Sequence[tuple[str | list[dict[str, str]], Sequence[str]]],
    *,
    batch_size: int = 16,
) -> list[list[float]]:
    """The value after each step of each `(prompt, steps)` trace, read at each step's last token as in training.

    Traces are batched `batch_size` at a time and padded on `tokenizer.padding_side`; the values do not depend on
    either (up to float rounding). Puts the model in eval mode. No truncation: a trace longer than the model's
    context is the caller's to split.
    """
    model.eval()
    device = next(model.parameters()).device
    collator = ValueCollator(tokenizer.pad_token_id, tokenizer.padding_side)
    scores = []
    for start in range(0, len(traces), batch_size):
        encoded = [encode_steps(tokenizer, prompt, steps) for prompt, steps in traces[start : start + batch_size]]
        batch = collator([{"input_ids": ids} for ids, _, _ in encoded])
        values = model(**{k: v.to(device) for k, v in batch.items()}, values_only=True)["values"].float().cpu()
        width = batch["input_ids"].shape[1]
        for row, (ids, _, ends) in enumerate(encoded):
            offset = width - len(ids) if tokenizer.padding_side == "left" else 0
            scores.append([values[row, offset + end].item() for end in ends])
    return scores


def score_steps(
    model: ValueModel, tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], steps: Sequence[str]
) -> list[float]:
    """The value after each of `steps` (one trace): `score_traces` of that trace alone."""
    return score_traces(model, tokenizer, [(prompt, steps)])[0]


__all__ = [
    "Q_IGNORE",
    "VALUE_HEAD_NAME",
    "JointLoss",
    "StepTrace",
    "ValueCollator",
    "ValueConfig",
    "ValueHead",
    "ValueModel",
    "ValueTrainer",
    "ValueTruncationReport",
    "auroc",
    "build_value_model",
    "compute_value_metrics",
    "encode_steps",
    "joint_loss",
    "load_value_model",
    "save_value_model",
    "score_steps",
    "score_traces",
    "step_text",
    "to_trace",
    "tokenize_trace",
    "tokenize_traces",
    "value_metrics",
    "value_row_problem",
]
