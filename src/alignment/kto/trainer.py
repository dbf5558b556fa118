"""`UnpairedPreferenceTrainer`: TRL's `KTOTrainer` on the handbook's tokenized KTO rows, crash-safe, with the
reference log-prob cache of DPO and the label-balancing weights of `alignment.kto.config`."""

from __future__ import annotations

import logging

import trl
from datasets import Dataset

from alignment.kto.config import BALANCE_BAND, KTOConfig, balance_ratio, balanced_weights
from alignment.runtime.lm_head import CompactLMHeadMixin
from alignment.runtime.reference import CachedReferenceLogpsMixin, ref_logps_cache_key
from alignment.runtime.reliability import CrashSafeTrainerMixin

logger = logging.getLogger(__name__)

UNPAIRED_ID_COLUMNS = ("prompt_ids", "completion_ids")


def with_kl_completions(dataset: Dataset, group_size: int) -> Dataset:
    """`dataset` with `KL_completion_ids`: in each group of `group_size` consecutive rows, every row takes the
    completion of the row before it (the first the last's), the mismatched pairs from which KTO estimates its KL term.

    `group_size` is the global micro-batch (per-device batch x processes), so that the rows of one step and their
    mismatched completions are the same whether one process trains the batch or several split it."""

    def rotate(batch: dict) -> dict:
        completions = batch["completion_ids"]
        return {"KL_completion_ids": completions[-1:] + completions[:-1]}

    return dataset.map(rotate, batched=True, batch_size=group_size, desc="Pairing KL completions")


class UnpairedPreferenceTrainer(CrashSafeTrainerMixin, CompactLMHeadMixin, CachedReferenceLogpsMixin, trl.KTOTrainer):
    """TRL's `KTOTrainer` on already tokenized rows (`alignment.kto.tokenize_unpaired`), with:

    * the KL completions paired within each global micro-batch (`with_kl_completions`), so DDP and ZeRO-3 train
      what one process trains;
    * `desirable_weight` and `undesirable_weight`, where the recipe leaves them unset, balanced from the training
      split's label counts (`balanced_weights`) and logged;
    * reference log-probs cached on disk across runs (`precompute_ref_log_probs`, `CachedReferenceLogpsMixin`).
    """

    def __init__(self, *args, **kwargs):
        config: KTOConfig = kwargs["args"]
        if not isinstance(config, KTOConfig):
            raise TypeError(f"UnpairedPreferenceTrainer needs alignment.kto.KTOConfig, got {type(config).__name__}")
        super().__init__(*args, **kwargs)
        labels = self.train_dataset["label"]
        desirable, undesirable = sum(labels), len(labels) - sum(labels)
        self.desirable_weight, self.undesirable_weight = balanced_weights(
            desirable, undesirable, config.desirable_weight, config.undesirable_weight
        )
        ratio = (
            balance_ratio(desirable, undesirable, self.desirable_weight, self.undesirable_weight)
            if (desirable and undesirable)
            else None
        )
        logger.info(
            "KTO weights: desirable_weight %.4g, undesirable_weight %.4g (%s) for %d desirable and %d undesirable "
            "training rows%s",
            self.desirable_weight,
            self.undesirable_weight,
            "as the recipe sets them"
            if None not in (config.desirable_weight, config.undesirable_weight)
            else "the KTO paper's rule for the unset ones",
            desirable,
            undesirable,
            "" if ratio is None else f": weighted ratio {ratio:.3f}",
        )
        if ratio is not None and not BALANCE_BAND[0] <= ratio <= BALANCE_BAND[1]:
            logger.warning(
                "The weighted ratio desirable_weight * n_desirable / (undesirable_weight * n_undesirable) = %.3f is "
                "outside the KTO paper's recommended [1, 4/3]: unset one of the weights to have it chosen.",
                ratio,
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """The rows arrive tokenized and truncated (`tokenize_unpaired`); TRL's own preparation is skipped, and only
        the KL completions are added."""
        missing = {"prompt_ids", "completion_ids", "label"} - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"The {dataset_name} dataset lacks {sorted(missing)}: prepare it with alignment.kto.tokenize_unpaired."
            )
        if not self.calculate_KL:
            return dataset
        return with_kl_completions(dataset, args.per_device_train_batch_size * args.world_size)

    def ref_logps_tensors(self) -> dict[str, str]:
        return {"ref_logps": "completion", **({"ref_KL_logps": "kl_completion"} if self.calculate_KL else {})}

    def ref_logps_cache_key(self, dataset: Dataset) -> dict:
        columns = (*UNPAIRED_ID_COLUMNS, *(("KL_completion_ids",) if self.calculate_KL else ()))
        return ref_logps_cache_key(
            dataset, self.args, self._precompute_model_hash, self._tokenizer.chat_template, columns
        )
