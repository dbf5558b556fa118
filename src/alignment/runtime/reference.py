"""The frozen reference of the stages that train against one (DPO, KTO): the copy loaded when one belongs in memory,
and the on-disk cache of its log-probs across runs.

Copy. Full fine-tuning keeps a frozen copy of the starting model, loaded as the policy is (an adapter folder merged
into its base); LoRA/QLoRA uses the base with the adapter disabled (no second copy), and with
`precompute_ref_log_probs` the starting policy computes the log-probs before its first step (no second copy either).

Cache. With `precompute_ref_log_probs`, TRL computes the reference log-probs of a split in one pass before training
(`_precompute_ref_logps`). `CachedReferenceLogpsMixin` puts that pass behind a file in `ref_logps_cache_dir`, keyed
by everything the log-probs depend on (`ref_logps_cache_key`: the reference weights, the token ids, hence data,
template, tokenizer and truncation, the lengths and the precision, plus the stage's own keys): a second epoch, a
re-run, a resume or a `beta` sweep reads them instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from huggingface_hub.constants import HF_HOME
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments

from alignment.recipes.arguments import ModelArguments
from alignment.runtime.loading import load_model, match_embeddings_to_tokenizer

logger = logging.getLogger(__name__)


def load_reference_copy(
    model_args: ModelArguments, config: TrainingArguments, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel | None:
    """The frozen reference copy of the starting model, or None under LoRA/QLoRA (the trainer disables the adapter)
    and with `precompute_ref_log_probs` (the policy computes them before its first step)."""
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


def token_ids_hash(dataset: Dataset, columns: tuple[str, ...]) -> str:
    """SHA-256 of the token ids in `columns` (lengths and values of each), in row order."""
    digest = hashlib.sha256()
    table = dataset.with_format("arrow")[:]
    for column in columns:
        values = table.column(column).combine_chunks()
        digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).tobytes())
        digest.update(values.flatten().to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def ref_logps_cache_key(
    dataset: Dataset,
    config: TrainingArguments,
    reference_weights_sha256: str,
    chat_template: str | None,
    id_columns: tuple[str, ...],
    **stage_keys: Any,
) -> dict:
    """Everything the reference log-probs of `dataset` depend on (its token ids in `id_columns`, and the stage's own
    `stage_keys`); also written into the cache file's metadata."""
    return {
        "reference_weights_sha256": reference_weights_sha256,
        "token_ids_sha256": token_ids_hash(dataset, id_columns),
        "chat_template_sha256": hashlib.sha256((chat_template or "").encode()).hexdigest(),
        "max_length": config.max_length,
        **stage_keys,
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "rows": len(dataset),
    }


def ref_logps_cache_path(key: dict, cache_dir: str | None) -> Path:
    """The cache file for `key` (`ref_logps_cache_key`) in `cache_dir`, or in `$HF_HOME/alignment/ref_logps`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir or Path(HF_HOME) / "alignment" / "ref_logps").expanduser()
    return folder / f"{digest}.safetensors"


def read_ref_logps(path: Path, dataset: Dataset, tensors: dict[str, str]) -> Dataset:
    """`dataset` with the cached columns of `path` added (`tensors`: column -> its tensor's name in the file)."""
    cached = load_file(path)
    for column, name in tensors.items():
        dataset = dataset.add_column(column, cached[name].tolist())
    return dataset


def write_ref_logps(path: Path, dataset: Dataset, key: dict, tensors: dict[str, str]) -> None:
    """Cache the columns of `dataset` named by `tensors` in `path`, with `key` as metadata.

    The file is written under another name and renamed, so a crash mid-write never leaves a cache file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {name: torch.tensor(dataset[column], dtype=torch.float32) for column, name in tensors.items()}
    partial = path.with_suffix(".partial")
    save_file(values, partial, metadata={name: json.dumps(value) for name, value in key.items()})
    partial.rename(path)


class CachedReferenceLogpsMixin:
    """Mixed in before a TRL trainer that precomputes reference log-probs (`DPOTrainer`, `KTOTrainer`): its one pass
    behind the on-disk cache (module doc), and `reference_forward_passes`, the reference forward passes (batches)
    this trainer ran. The trainer says what a cache file holds (`ref_logps_tensors`) and what it is keyed by
    (`ref_logps_cache_key`); its config has `ref_logps_cache_dir`."""

    reference_forward_passes = 0

    def ref_logps_tensors(self) -> dict[str, str]:
        """The dataset columns TRL's precomputation adds -> their tensors' names in a cache file."""
        raise NotImplementedError

    def ref_logps_cache_key(self, dataset: Dataset) -> dict:
        """Everything the reference log-probs of `dataset` depend on (`ref_logps_cache_key` of this module)."""
        raise NotImplementedError

    def compute_ref_log_probs(self, model, inputs):
        self.reference_forward_passes += 1
        return super().compute_ref_log_probs(model, inputs)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """TRL's one-pass precomputation, behind the on-disk cache."""
        key = self.ref_logps_cache_key(dataset)
        path = ref_logps_cache_path(key, self.args.ref_logps_cache_dir)
        tensors = self.ref_logps_tensors()
        hit = [path.is_file()]
        broadcast_object_list(hit, from_process=0)
        if hit[0]:
            logger.info(
                "Reference log-probs for %s (%d rows) read from %s: no reference forward pass",
                name,
                len(dataset),
                path,
            )
            return read_ref_logps(path, dataset, tensors)
        passes = self.reference_forward_passes
        computed = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            write_ref_logps(path, computed, key, tensors)
            logger.info(
                "Reference log-probs for %s (%d rows, %d forward passes) cached in %s",
                name,
                len(dataset),
                self.reference_forward_passes - passes,
                path,
            )
        self.accelerator.wait_for_everyone()
        return computed
