"""Pairwise reward models over TRL's `RewardTrainer`: what TRL lacks for the handbook's reward stage.

TRL already supplies the sequence-classification head with one output on any causal LM, the pair collator (chosen
and rejected rows of the same pairs padded together, right-padded), the loss `-logsigmoid(r_chosen - r_rejected
[- margin])` with optional reward centering (`center_rewards_coefficient`), LoRA/QLoRA wrapping and saving. This
module adds:

* **Pair tokenization** (`tokenize_pairs`): every row form of `alignment.preferences` (UltraFeedback, TRL
  conversational, plain strings) rendered with the chat template exactly as at inference, prompt + reply up to and
  including the end-of-turn token; pairs longer than `max_length` are dropped and counted (truncating would cut off
  the token the reward is read from).
* **The reward position**: Hugging Face sequence-classification models read the reward at the rightmost token that
  is not the pad token. That is the last real token, on either padding side, exactly when no sequence ends with the
  pad token; a sequence that does (a tokenizer padding with the same token that ends an assistant turn) is refused,
  naming the row, instead of silently reading the reward one token early.
* **Length-grouped batching for pairs** (`PairLengthGroupedSampler`): transformers' `group_by_length` infers lengths
  from an `input_ids` column and fails on pairs ("Can only automatically infer lengths for datasets whose items are
  dictionaries with an 'input_ids' key"). Here pairs are grouped by the longer of chosen and rejected, the width the
  collator pads both to, with transformers' mega-batch grouping and a generator seeded by `seed + epoch`. The
  padding fraction with and without grouping is logged when training starts.
* **Exact metrics** (`reward_statistics`): accuracy, margin mean, reward mean and std for chosen and rejected, over
  every pair since the last log (train) or of the whole held-out split (eval), not averages of per-batch values.
* **Scoring** (`score`): one float per conversation from a saved full model or LoRA adapter folder, with the same
  rendering as training and position ids taken from the attention mask, so scores do not depend on batch size or
  padding side.
"""

from __future__ import annotations

import logging
import numbers
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow.compute as pc
import torch
import trl
from datasets import Dataset
from peft import PeftConfig, PeftModel
from torch.utils.data import Sampler
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from trl import RewardTrainer
from trl.trainer.reward_trainer import suppress_seqcls_warning

from alignment.chat_data import padding_fraction
from alignment.configs import (
    ModelArguments,
    StageTrainingArguments,
)
from alignment.data import RowProblem, conversation_problem
from alignment.model_utils import is_adapter_folder
from alignment.preferences import PairGroupedSamplerMixin, encode_pair, preference_row_problem
from alignment.reliability import CrashSafeTrainerMixin
from alignment.row_encoding import encode_rows
from alignment.templates import ChatTemplateError
from alignment.turns import encode_prompt_replies

logger = logging.getLogger(__name__)

REWARD_STATISTICS = (
    "accuracy",
    "margin",
    "rewards/chosen_mean",
    "rewards/chosen_std",
    "rewards/rejected_mean",
    "rewards/rejected_std",
)


@dataclass
class RewardConfig(StageTrainingArguments, trl.RewardConfig):
    """TRL's `RewardConfig`. The handbook tokenizes pairs itself (`tokenize_pairs`) and loads the model itself
    (`alignment.model_utils.load_model`), so TRL's switches for those jobs are refused rather than silently ignored.

    Length grouping is TRL's and transformers' own knob, `train_sampling_strategy: group_by_length`, made to work on
    pairs; `report_padding_batches` sets how much of an epoch the logged padding fractions are measured on.
    """

    report_padding_batches: int = field(
        default=1000,
        metadata={
            "help": "Batches of `per_device_train_batch_size` pairs (from the start of the first epoch) on which the "
            "padding fraction with and without length grouping is measured and logged at the start of training."
        },
    )

    def __post_init__(self):
        if self.train_sampling_strategy == "batch_rebalance":
            raise ValueError(
                "`train_sampling_strategy: batch_rebalance` balances single sequences, not pairs. Use "
                "`group_by_length` (pairs grouped by the longer of chosen and rejected) or `random`."
            )
        if self.length_column_name != "length":
            raise ValueError(
                f"`length_column_name: {self.length_column_name}` is not used: a pair's length is always the longer "
                "of its tokenized chosen and rejected sequences. Remove the key."
            )
        for name in ("model_init_kwargs", "eos_token", "pad_token"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"`{name}: {getattr(self, name)}` is not used: the handbook loads the model (`dtype`, "
                    "`attn_implementation`, ... in the model arguments), renders each reply up to the chat template's "
                    "own end-of-turn token, and pads with the tokenizer's pad token. Remove the key."
                )
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(
                f"`center_rewards_coefficient: {self.center_rewards_coefficient}` must be >= 0 (it scales the "
                "penalty mean((r_chosen + r_rejected)^2); 0.01 is the value of the paper), or unset."
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"`max_length: {self.max_length}` must be at least 2 tokens, or null for no limit.")
        if self.report_padding_batches < 1:
            raise ValueError(f"`report_padding_batches: {self.report_padding_batches}` must be at least 1.")
        super().__post_init__()


def reward_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator: a valid preference row (`preference_row_problem`) whose optional `margin` is a
    number (it is subtracted inside the loss: `-logsigmoid(r_chosen - r_rejected - margin)`)."""
    problem = preference_row_problem(row)
    if problem is not None:
        return problem
    margin = row.get("margin")
    if "margin" in row and (not isinstance(margin, numbers.Real) or isinstance(margin, bool)):
        return RowProblem("bad margin", f"margin is {margin!r}, expected a number")
    return None


def reward_peft_config(model_args: ModelArguments):
    """The LoRA config of a reward model, or None without `use_peft`: task `SEQ_CLS` with the score head trained and
    saved in full (`modules_to_save`), since a randomly initialised head frozen under LoRA can never be learned."""
    if not model_args.use_peft:
        return None
    if model_args.lora_task_type != "SEQ_CLS":
        raise ValueError(
            f"`lora_task_type: {model_args.lora_task_type}` builds a causal-LM adapter; a reward model needs "
            "`lora_task_type: SEQ_CLS` so that its score head is trained and saved with the adapter."
        )
    config = trl.get_peft_config(model_args)
    config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), "score"]))
    return config


def conversation_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """The ids a reward model scores: the prompt's inference ids, then the last assistant reply's ids up to its
    end-of-turn token, exactly as `encode_pair` encodes prompt + reply in training."""
    encoded = encode_prompt_replies(tokenizer, messages[:-1], messages[-1:])
    return encoded.prompt_ids + encoded.replies[0]


def tokenize_pairs(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> Dataset:
    """Map preference rows to `chosen_ids`/`rejected_ids` (and `margin` when the rows have one).

    Each side is the prompt's inference ids plus its reply's ids up to the end-of-turn token (`encode_pair`). Pairs
    with either side over `max_length` are dropped and counted. A row without exact ids is an `InvalidRowError`
    naming the source, split, row and reply, or with `skip_invalid_rows` is dropped and counted by reason; so is a
    sequence ending with the pad token, whose reward would be read one token early.
    """
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has no pad token; load it with `alignment.model_utils.load_tokenizer`.")
    has_margin = "margin" in dataset.column_names

    def encode(row: dict) -> list[dict]:
        pair = encode_pair(tokenizer, row)
        encoded = {f"{side}_ids": pair["prompt_ids"] + pair[f"{side}_ids"] for side in ("chosen", "rejected")}
        for side in ("chosen", "rejected"):
            if encoded[f"{side}_ids"][-1] == pad_id:
                raise ChatTemplateError(
                    f"the {side} sequence ends with the pad token {tokenizer.pad_token!r} (the chat template's "
                    "end-of-turn token is also the pad token), so the reward would be read from the token before it. "
                    "Use a tokenizer whose pad token differs from the end-of-turn token (`tokenizer_name_or_path`), "
                    "or another `chat_template`.",
                    kind="reply ends with the pad token",
                )
        if has_margin:
            encoded["margin"] = float(row["margin"])
        return [encoded]

    empty = {"chosen_ids": [], "rejected_ids": [], **({"margin": 0.0} if has_margin else {})}
    encoded = encode_rows(
        dataset,
        encode,
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} pairs",
    ).examples.remove_columns("row")
    if max_length is not None:
        chosen, rejected = pair_token_lengths(encoded)
        keep = [i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if max(c, r) <= max_length]
        if len(keep) < len(encoded):
            logger.warning(
                "%s split: dropped %d/%d pairs longer than max_length=%d tokens (a reward is read from the last "
                "token, so they cannot be truncated)",
                split_name,
                len(encoded) - len(keep),
                len(encoded),
                max_length,
            )
            encoded = encoded.select(keep)
    logger.info("%s split: %d pairs tokenized", split_name, len(encoded))
    return encoded


def pair_token_lengths(dataset: Dataset) -> tuple[list[int], list[int]]:
    """Token counts of every pair's chosen and rejected sequences, in dataset order (read from Arrow, not Python)."""
    chosen, rejected = [], []
    for table in dataset.select_columns(["chosen_ids", "rejected_ids"]).with_format("arrow").iter(batch_size=10_000):
        chosen.extend(pc.list_value_length(table["chosen_ids"]).to_pylist())
        rejected.extend(pc.list_value_length(table["rejected_ids"]).to_pylist())
    return chosen, rejected


def pair_padding_fraction(chosen: Sequence[int], rejected: Sequence[int], order: Sequence[int], batch_size: int):
    """Share of padding in the batches TRL's pair collator builds when pairs come in `order`, `batch_size` pairs per
    batch: each batch holds 2 x `batch_size` rows all padded to its longest chosen or rejected sequence."""
    interleaved = [length for i in order for length in (chosen[i], rejected[i])]
    return padding_fraction(interleaved, 2 * batch_size)


def reward_statistics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Accuracy (share of pairs with r_chosen > r_rejected; ties count as wrong), mean margin r_chosen - r_rejected,
    and mean and population std of each side's rewards, over all the pairs given."""
    chosen, rejected = chosen.float(), rejected.float()
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "rewards/chosen_mean": chosen.mean().item(),
        "rewards/chosen_std": chosen.std(correction=0).item(),
        "rewards/rejected_mean": rejected.mean().item(),
        "rewards/rejected_std": rejected.std(correction=0).item(),
    }


class PairwiseRewardTrainer(CrashSafeTrainerMixin, PairGroupedSamplerMixin, RewardTrainer):
    """TRL's `RewardTrainer` (model set-up, pair collator, loss, centering, saving) with length-grouped pair batches
    and exact reward statistics in every train and eval log."""

    _tag_names = [*RewardTrainer._tag_names, "alignment-handbook"]

    def __init__(self, *args, **kwargs):
        self._pair_rewards: dict[str, list[torch.Tensor]] = defaultdict(list)
        super().__init__(*args, **kwargs)

    def pair_widths(self, dataset: Dataset) -> list[int]:
        """The longer of a pair's chosen and rejected sequences, what the collator pads both to."""
        chosen, rejected = pair_token_lengths(dataset)
        return [max(c, r) for c, r in zip(chosen, rejected, strict=True)]

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        """The sampler of `PairGroupedSamplerMixin`, after logging the padding fraction of the first
        `report_padding_batches` batches with and without length grouping."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        chosen, rejected = pair_token_lengths(dataset)
        shown = self.args.report_padding_batches * self.args.per_device_train_batch_size
        grouped = list(self.grouped_train_sampler(dataset))[:shown]
        shuffled = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(self.sampler_seed()))[:shown]
        batch = self.args.per_device_train_batch_size
        with_grouping = pair_padding_fraction(chosen, rejected, grouped, batch)
        without = pair_padding_fraction(chosen, rejected, shuffled.tolist(), batch)
        logger.info(
            "Padding fraction of train batches (%d pairs each, first %d pairs): %.3f with length grouping, %.3f "
            "without (random order); training %s length grouping",
            batch,
            len(grouped),
            with_grouping,
            without,
            "with" if self.args.train_sampling_strategy == "group_by_length" else "without",
        )
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss (and its reward min/mean/max); the pair rewards are also kept for `reward_statistics`."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        chosen, rejected = outputs.logits.detach().squeeze(-1).chunk(2)
        pairs = self.accelerator.gather_for_metrics(torch.stack([chosen, rejected], dim=1))
        self._pair_rewards[mode].append(pairs.float().cpu())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        if self._pair_rewards[mode]:
            pairs = torch.cat(self._pair_rewards[mode])
            prefix = "eval_" if mode == "eval" else ""
            # TRL's own accuracy and margin are means of per-batch means; these replace them.
            self._metrics[mode].pop("accuracy", None)
            self._metrics[mode].pop("margin", None)
            logs.update({prefix + k: v for k, v in reward_statistics(pairs[:, 0], pairs[:, 1]).items()})
            self._pair_rewards[mode].clear()
        super().log(logs, start_time)


def load_reward_model(model_path: str, *, dtype: torch.dtype = torch.float32):
    """A saved reward model and its tokenizer, in eval mode: a full model folder, or a LoRA adapter folder whose
    base is loaded with a one-output head that the adapter's saved `score` weights then replace."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if is_adapter_folder(model_path):
        base_path = PeftConfig.from_pretrained(model_path).base_model_name_or_path
        with suppress_seqcls_warning():
            base = AutoModelForSequenceClassification.from_pretrained(
                base_path, num_labels=1, dtype=dtype, use_safetensors=True
            )
        model = PeftModel.from_pretrained(base, model_path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=dtype, use_safetensors=True)
    if model.config.num_labels != 1:
        raise ValueError(f"{model_path} has {model.config.num_labels} outputs; a reward model has exactly one.")
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


@torch.no_grad()
def score_with(
    model, tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]], *, batch_size: int = 16
) -> list[float]:
    """Rewards of `conversations` (each ending with the assistant reply to score) under an in-memory model.

    Batches are padded on the tokenizer's padding side; position ids come from the attention mask, so a left-padded
    sequence sees the same positions as alone, and the reward is read at its last real token (sequences ending with
    the pad token are refused, as in training).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sequences = []
    for index, messages in enumerate(conversations):
        problem = conversation_problem(messages)
        if problem is None and messages[-1]["role"] != "assistant":
            problem = "the last message must be the assistant reply to score"
        if problem is not None:
            raise ValueError(f"conversation {index}: {problem}")
        sequences.append(conversation_ids(tokenizer, messages))
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = tokenizer.pad({"input_ids": sequences[start : start + batch_size]}, padding=True, return_tensors="pt")
        mask = batch["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # last attended column, either padding side
        ends_with_pad = batch["input_ids"][torch.arange(len(last)), last] == tokenizer.pad_token_id
        if ends_with_pad.any():
            index = start + int(ends_with_pad.nonzero()[0])
            raise ValueError(
                f"conversation {index} ends with the pad token {tokenizer.pad_token!r}; see tokenize_pairs."
            )
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
        ).logits
        scores.extend(logits.squeeze(-1).float().cpu().tolist())
    return scores


def score(model_path: str, conversations: list[list[dict]], *, batch_size: int = 16) -> list[float]:
    """One reward per conversation from a saved reward model (full folder or LoRA adapter folder, see
    `load_reward_model`); each conversation ends with the assistant reply to score."""
    model, tokenizer = load_reward_model(model_path)
    return score_with(model, tokenizer, conversations, batch_size=batch_size)
