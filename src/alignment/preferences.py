"""Preference rows (DPO and reward models): the three forms users have, checked and rendered with the chat template.

Accepted forms of a row, all mapped to (prompt messages, chosen reply, rejected reply):

* UltraFeedback-binarized (`HuggingFaceH4/ultrafeedback_binarized`): `chosen` and `rejected` are whole chats that
  share their prompt turns and end with the assistant reply; a `prompt` string column, if present, is ignored in
  favour of those turns (it repeats the first user turn).
* TRL conversational: `prompt` is a list of messages, `chosen` and `rejected` are lists holding one assistant
  message.
* Plain strings: `prompt`, `chosen` and `rejected` are strings; the prompt is treated as one user turn and each
  answer as the assistant reply, so chat models are trained in the format they are used in.

Multi-turn prompts keep every earlier turn, rendered as inference renders them: earlier turns need not be
prefix-stable, only each reply must follow the prompt exactly (`alignment.turns`). A row whose chosen and rejected
prompts differ, or whose chosen reply equals its rejected reply, is invalid (`preference_row_problem`, used as
`load_mixture`'s validator).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import get_length_grouped_indices

from alignment.data import RowProblem, conversation_problem
from alignment.turns import encode_prompt_replies

PREFERENCE_COLUMNS = ("chosen", "rejected")


@dataclass
class PreferencePair:
    """One preference row in the common form: the prompt turns and the two assistant replies."""

    prompt: list[dict[str, str]]
    chosen: dict[str, str]
    rejected: dict[str, str]


def _as_message(value: Any, role: str) -> Any:
    return {"role": role, "content": value} if isinstance(value, str) else value


def to_pair(row: dict) -> PreferencePair | RowProblem:
    """The row as a `PreferencePair`, or the reason it is not a valid preference row."""
    missing = [column for column in PREFERENCE_COLUMNS if column not in row]
    if missing:
        return RowProblem("missing column", f"no {' or '.join(missing)} column (the row has: {', '.join(row)})")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")

    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str):
            return RowProblem("malformed prompt", "string chosen/rejected need a string prompt")
        prompt_turns = [{"role": "user", "content": prompt}]
        chosen_reply, rejected_reply = _as_message(chosen, "assistant"), _as_message(rejected, "assistant")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        if isinstance(prompt, list):  # TRL conversational: the prompt is separate, the replies follow it
            prompt_turns, chosen_turns, rejected_turns = prompt, prompt + chosen, prompt + rejected
        else:  # UltraFeedback: whole chats sharing their prompt turns
            chosen_turns, rejected_turns = chosen, rejected
            prompt_turns = chosen[:-1]
            if rejected[:-1] != prompt_turns:
                return RowProblem("prompts differ", "chosen and rejected chats have different prompt turns")
        for name, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
            problem = conversation_problem(turns)
            if problem is not None:
                return RowProblem(problem.kind, f"{name}: {problem}")
            if turns[-1]["role"] != "assistant" or len(turns) != len(prompt_turns) + 1:
                return RowProblem(
                    "malformed reply", f"{name} must add exactly one assistant reply after the prompt turns"
                )
        chosen_reply, rejected_reply = chosen_turns[-1], rejected_turns[-1]
    else:
        return RowProblem(
            "malformed pair",
            f"chosen and rejected must both be strings or both be message lists, got {type(chosen).__name__} and "
            f"{type(rejected).__name__}",
        )

    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not isinstance(reply.get("content"), str) or not reply["content"].strip():
            return RowProblem("empty content", f"{name} reply is empty")
    if not prompt_turns or prompt_turns[-1].get("role") != "user":
        return RowProblem("malformed prompt", "the prompt must end with a user turn")
    if chosen_reply["content"] == rejected_reply["content"]:
        return RowProblem("chosen equals rejected", "chosen and rejected replies are identical: nothing to prefer")
    return PreferencePair(prompt_turns, chosen_reply, rejected_reply)


def preference_row_problem(row: dict) -> RowProblem | None:
    """`load_mixture` validator for preference rows: None when the row is a valid pair."""
    pair = to_pair(row)
    return pair if isinstance(pair, RowProblem) else None


def encode_pair(tokenizer: PreTrainedTokenizerBase, row: dict) -> dict[str, list[int]]:
    """`{"prompt_ids", "chosen_ids", "rejected_ids"}`: the prompt as inference tokenizes it (with the generation
    prompt), then each reply's ids after it up to and including its end-of-turn token (`alignment.turns`).

    Raises:
        ChatTemplateError: a reply has no exact ids after the prompt (names the reply).
        ValueError: the row is not a valid preference row.
    """
    pair = to_pair(row)
    if isinstance(pair, RowProblem):
        raise ValueError(str(pair))
    encoded = encode_prompt_replies(tokenizer, pair.prompt, [pair.chosen, pair.rejected])
    chosen_ids, rejected_ids = encoded.replies
    return {"prompt_ids": encoded.prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


class PairLengthGroupedSampler(Sampler[int]):
    """Pair indices grouped so that each run of `batch_size` holds pairs of similar length, reshuffled every epoch.

    A pair's length is `max(len(chosen), len(rejected))`: the width the pair collator pads both rows to. Grouping is
    transformers' (`get_length_grouped_indices`: a random permutation cut into mega-batches of 50 batches, each sorted
    by length, the longest batch first), driven by a generator seeded with `seed + epoch`, so an epoch's order is the
    same on every run, every process and after a resume. Every pair appears exactly once per epoch, chosen and
    rejected always in the same batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at each epoch start: the next iteration uses the generator seeded `seed + epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class PairGroupedSamplerMixin:
    """Mixed in before a transformers `Trainer` subclass whose rows are preference pairs: with
    `train_sampling_strategy: group_by_length`, pairs of similar width train together (`PairLengthGroupedSampler`).

    transformers' own grouping reads an `input_ids` column that pairs do not have. Training pairs are grouped by the
    global batch, which the data loader then splits across processes, so the same pairs train together at each step
    on any number of processes; evaluation pairs by the eval batch. The generator is seeded by `data_seed`, else
    `seed`. A stage gives its pairs' widths (`pair_widths`): what its collator pads a pair's rows to.
    """

    def pair_widths(self, dataset: Dataset) -> list[int]:
        """Each pair's width in a batch, in dataset order."""
        raise NotImplementedError(f"{type(self).__name__} must give its pairs' widths")

    def sampler_seed(self) -> int:
        """The seed of the pair order: `data_seed` when set, else `seed`."""
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def grouped_train_sampler(self, train_dataset: Dataset | None = None) -> PairLengthGroupedSampler:
        """The length-grouped sampler over the training pairs, by global batch."""
        args = self.args
        global_batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return PairLengthGroupedSampler(self.pair_widths(dataset), global_batch, self.sampler_seed())

    def _get_train_sampler(self, train_dataset: Dataset | None = None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        return self.grouped_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Dataset):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_eval_sampler(eval_dataset)
        return PairLengthGroupedSampler(self.pair_widths(eval_dataset), self.args.eval_batch_size, self.sampler_seed())
