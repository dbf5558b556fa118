"""`PairwiseRewardTrainer`: TRL's `RewardTrainer` with length-grouped pair batches and exact reward statistics."""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from datasets import Dataset
from torch.utils.data import Sampler
from trl import RewardTrainer

from alignment.reward.pairs import pair_padding_fraction, pair_token_lengths
from alignment.runtime.reliability import CrashSafeTrainerMixin
from alignment.runtime.samplers import PairGroupedSamplerMixin

logger = logging.getLogger(__name__)

REWARD_STATISTICS = (
    "accuracy",
    "margin",
    "rewards/chosen_mean",
    "rewards/chosen_std",
    "rewards/rejected_mean",
    "rewards/rejected_std",
)


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
