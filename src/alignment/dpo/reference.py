"""The DPO stage's reference: the frozen model, the on-disk cache of its log-probs, and the switch that stops TRL
from loading a copy nobody reads.

Full fine-tuning keeps a frozen copy of the starting model; LoRA/QLoRA uses the base with the adapter disabled (no
second copy); a reference-free loss (`orpo`, `simpo`) loads none. With `precompute_ref_log_probs`, the reference
log-probs are computed in one pass before training and cached on disk (`ref_logps_cache_dir`), keyed by the
reference weights, the token ids (hence data, template, tokenizer and truncation), the lengths, `ld_alpha` and the
precision (`ref_logps_cache_key`): three epochs, a re-run, a resume or a `beta` sweep reuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pyarrow.compute as pc
import torch
from datasets import Dataset
from huggingface_hub.constants import HF_HOME
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer import dpo_trainer as trl_dpo_trainer

from alignment.dpo.config import DPOConfig
from alignment.recipes.arguments import ModelArguments
from alignment.runtime.loading import load_model, match_embeddings_to_tokenizer

logger = logging.getLogger(__name__)


def load_reference_model(
    model_args: ModelArguments, config: DPOConfig, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel | None:
    """The frozen reference model, or None when no second copy belongs in memory.

    None for a reference-free loss (`orpo`, `simpo`), for LoRA/QLoRA (the trainer disables the adapter to get the
    reference) and with `precompute_ref_log_probs` (the policy computes them before its first step). Otherwise the
    starting model is loaded a second time, the same way as the policy (an adapter folder is merged into its base).
    """
    if config.is_reference_free:
        logger.info("loss_type %s uses no reference model: none is loaded", config.loss_type)
        return None
    if model_args.use_peft:
        logger.info("Reference = the base model with the LoRA adapter disabled (no second copy in memory)")
        return None
    if config.precompute_ref_log_probs:
        logger.info("Reference log-probs are precomputed by the starting policy: no second copy in memory")
        return None
    reference = load_model(model_args, trust_remote_code=config.trust_remote_code)
    match_embeddings_to_tokenizer(reference, tokenizer)
    logger.info(
        "Reference = a frozen copy of %s (%d parameters)", model_args.model_name_or_path, reference.num_parameters()
    )
    return reference


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


def token_ids_hash(dataset: Dataset) -> str:
    """SHA-256 of the pairs' token ids (lengths and values of each column), in row order."""
    digest = hashlib.sha256()
    table = dataset.with_format("arrow")[:]
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        values = table.column(column).combine_chunks()
        digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).tobytes())
        digest.update(values.flatten().to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def ref_logps_cache_key(
    dataset: Dataset, config: DPOConfig, reference_weights_sha256: str, chat_template: str | None
) -> dict:
    """Everything the reference log-probs of `dataset` depend on; also written into the cache file's metadata."""
    return {
        "reference_weights_sha256": reference_weights_sha256,
        "token_ids_sha256": token_ids_hash(dataset),
        "chat_template_sha256": hashlib.sha256((chat_template or "").encode()).hexdigest(),
        "max_length": config.max_length,
        "max_prompt_length": config.max_prompt_length,
        "ld_alpha": config.ld_alpha,
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "rows": len(dataset),
    }


def ref_logps_cache_path(key: dict, cache_dir: str | None) -> Path:
    """The cache file for `key` (`ref_logps_cache_key`) in `cache_dir`, or in `$HF_HOME/alignment/ref_logps`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir or Path(HF_HOME) / "alignment" / "ref_logps").expanduser()
    return folder / f"{digest}.safetensors"


def read_ref_logps(path: Path, dataset: Dataset) -> Dataset:
    """`dataset` with the cached `ref_chosen_logps` and `ref_rejected_logps` columns of `path` added."""
    tensors = load_file(path)
    return dataset.add_column("ref_chosen_logps", tensors["chosen"].tolist()).add_column(
        "ref_rejected_logps", tensors["rejected"].tolist()
    )


def write_ref_logps(path: Path, dataset: Dataset, key: dict) -> None:
    """Cache the `ref_chosen_logps` and `ref_rejected_logps` columns of `dataset` in `path`, with `key` as metadata.

    The file is written under another name and renamed, so a crash mid-write never leaves a cache file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "chosen": torch.tensor(dataset["ref_chosen_logps"], dtype=torch.float32),
        "rejected": torch.tensor(dataset["ref_rejected_logps"], dtype=torch.float32),
    }
    partial = path.with_suffix(".partial")
    save_file(tensors, partial, metadata={name: json.dumps(value) for name, value in key.items()})
    partial.rename(path)
