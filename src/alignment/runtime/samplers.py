"""Batch samplers a stage's trainer mixes in: preference pairs grouped by length (DPO and reward models).

Pairs are two rows that must train together, and transformers' own length grouping reads an `input_ids` column that
pairs do not have; the mixin replaces the trainer's sampler hooks (`alignment.runtime.private_hooks` lists them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from datasets import Dataset
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


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
