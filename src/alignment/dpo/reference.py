"""The DPO stage's reference: which reference a loss needs, the key of its log-prob cache, and the switch that stops
TRL from loading a copy nobody reads.

The copy and the on-disk cache are shared with KTO (`alignment.runtime.reference`): full fine-tuning keeps a frozen
copy of the starting model, LoRA/QLoRA uses the base with the adapter disabled, and with `precompute_ref_log_probs`
the log-probs are cached on disk (`ref_logps_cache_dir`). A reference-free loss (`orpo`, `simpo`) loads none. DPO's
cache key adds `max_prompt_length` and `ld_alpha` to the shared one (`ref_logps_cache_key`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from unittest import mock

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer import dpo_trainer as trl_dpo_trainer

from alignment.dpo.config import DPOConfig
from alignment.recipes.arguments import ModelArguments
from alignment.runtime import reference as shared

logger = logging.getLogger(__name__)

PAIR_ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
# The columns TRL's precomputation adds -> their tensors' names in a cache file.
REF_LOGPS_TENSORS = {"ref_chosen_logps": "chosen", "ref_rejected_logps": "rejected"}


def load_reference_model(
    model_args: ModelArguments, config: DPOConfig, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel | None:
    """The frozen reference model, or None when no second copy belongs in memory: for a reference-free loss (`orpo`,
    `simpo`), and where `alignment.runtime.reference.load_reference_copy` loads none (LoRA, precomputation)."""
    if config.is_reference_free:
        logger.info("loss_type %s uses no reference model: none is loaded", config.loss_type)
        return None
    return shared.load_reference_copy(model_args, config, tokenizer)


@contextlib.contextmanager
def no_reference_model_loaded() -> Iterator[None]:
    """Stop `DPOTrainer.__init__` from loading a reference copy, which it does whenever none is given and neither
    PEFT nor precomputation is on: for `orpo`/`simpo` it would be a whole unused model in memory.

    Within the block, `trl.trainer.dpo_trainer.create_model_from_path`, the loader `DPOTrainer.__init__` calls for
    the reference, returns None.
    """

    def skip(model_id: str, *args, **kwargs) -> None:
        logger.info("Reference-free loss: not loading a reference copy of %s", model_id)
        return None

    with mock.patch.object(trl_dpo_trainer, "create_model_from_path", skip):
        yield


def ref_logps_cache_key(
    dataset: Dataset, config: DPOConfig, reference_weights_sha256: str, chat_template: str | None
) -> dict:
    """Everything the reference log-probs of `dataset` (tokenized pairs) depend on."""
    return shared.ref_logps_cache_key(
        dataset,
        config,
        reference_weights_sha256,
        chat_template,
        PAIR_ID_COLUMNS,
        max_prompt_length=config.max_prompt_length,
        ld_alpha=config.ld_alpha,
    )
