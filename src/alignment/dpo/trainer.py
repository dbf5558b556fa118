"""`PreferenceTrainer`: TRL's `DPOTrainer` on the handbook's tokenized pairs, computing the losses TRL 1.16 lacks.

Which losses are ours and what they are computed from comes from the registry (`alignment.dpo.losses`), so the
trainer has no branch per loss: it computes the inputs the loss names (log-ratios to the reference, or
length-averaged log-probs), calls the loss, and logs the implicit rewards `beta · input`.
"""

from __future__ import annotations

import contextlib

import pyarrow.compute as pc
import torch
import trl
from datasets import Dataset

from alignment.dpo.config import DPOConfig
from alignment.dpo.losses import LossInputs
from alignment.dpo.reference import REF_LOGPS_TENSORS, no_reference_model_loaded, ref_logps_cache_key
from alignment.runtime.lm_head import CompactLMHeadMixin
from alignment.runtime.reference import CachedReferenceLogpsMixin
from alignment.runtime.reliability import CrashSafeTrainerMixin
from alignment.runtime.samplers import PairGroupedSamplerMixin

REWARD_METRIC_PREFIX = "rewards/"


class PreferenceTrainer(
    CrashSafeTrainerMixin, CompactLMHeadMixin, CachedReferenceLogpsMixin, PairGroupedSamplerMixin, trl.DPOTrainer
):
    """TRL's `DPOTrainer` on already tokenized pairs (`tokenize_preferences`), with the handbook's additions:

    * `orpo`, `simpo`, `kto_pair` and conservative DPO, computed by `alignment.dpo.losses` (TRL computes the
      rest), and `pref_ftx` as TRL's `sft` term (token-mean NLL of the chosen replies) added with that weight;
    * no reference model loaded for reference-free losses;
    * reference log-probs cached on disk across runs (`precompute_ref_log_probs`, `CachedReferenceLogpsMixin`);
    * at evaluation before the first step, the reference is the policy itself, so every implicit reward is 0: the
      `rewards/*` metrics are dropped then instead of logging an accuracy of 0.

    The reference is always the model DPO starts from (the handbook never passes another one).
    """

    def __init__(self, *args, **kwargs):
        config: DPOConfig = kwargs["args"]
        if not isinstance(config, DPOConfig):
            raise TypeError(f"PreferenceTrainer needs alignment.dpo.DPOConfig, got {type(config).__name__}")
        with no_reference_model_loaded() if config.is_reference_free else contextlib.nullcontext():
            super().__init__(*args, **kwargs)
        if config.computes_own_loss and self.aux_loss_enabled:
            raise ValueError(f"`loss_type: {config.loss_type}` does not add the MoE auxiliary loss: set it off.")
        self.pref_ftx = config.pref_ftx
        if self.pref_ftx and not config.computes_own_loss:
            self.loss_types = [*self.loss_types, "sft"]
            self.loss_weights = [*self.loss_weights, self.pref_ftx]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """The data arrive tokenized and truncated (`tokenize_preferences`); TRL's own preparation is skipped."""
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"The {dataset_name} dataset lacks {sorted(missing)}: prepare it with "
                "alignment.dpo.tokenize_preferences."
            )
        return dataset

    def pair_widths(self, dataset: Dataset) -> list[int]:
        """A pair's prompt plus its longer reply, what the collator pads both rows to (`PairGroupedSamplerMixin`)."""
        widths = []
        for table in (
            dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
            .with_format("arrow")
            .iter(batch_size=10_000)
        ):
            reply = pc.max_element_wise(
                pc.list_value_length(table["chosen_ids"]), pc.list_value_length(table["rejected_ids"])
            )
            widths.extend(pc.add(pc.list_value_length(table["prompt_ids"]), reply).to_pylist())
        return widths

    def ref_logps_tensors(self) -> dict[str, str]:
        return REF_LOGPS_TENSORS

    def ref_logps_cache_key(self, dataset: Dataset) -> dict:
        return ref_logps_cache_key(dataset, self.args, self._precompute_model_hash, self._tokenizer.chat_template)

    def _reference_logps(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        own = self.args.own_loss
        if own is None:
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        non_model_keys = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {key: value for key, value in inputs.items() if key not in non_model_keys}
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1) :]  # zero outside the replies
        logps = per_token_logps.sum(dim=1)
        avg_logps = logps / shift_mask.sum(dim=1).clamp(min=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        chosen_avg, rejected_avg = avg_logps.chunk(2, dim=0)

        if own.inputs is LossInputs.AVG_LOGPS:
            chosen, rejected = chosen_avg, rejected_avg
        else:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
            chosen = chosen_logps - ref_chosen_logps.to(chosen_logps.device)
            rejected = rejected_logps - ref_rejected_logps.to(rejected_logps.device)
        losses, metrics = own.compute(chosen, rejected, self.args)
        chosen_rewards, rejected_rewards = self.beta * chosen.detach(), self.beta * rejected.detach()
        loss = losses.mean()
        if self.pref_ftx:
            chosen_mask, _ = shift_mask.chunk(2, dim=0)
            chosen_per_token, _ = per_token_logps.chunk(2, dim=0)
            sft = -chosen_per_token[chosen_mask.bool()].mean()
            loss = loss + self.pref_ftx * sft
            metrics["sft_loss"] = sft.detach().reshape(1)

        metrics.update(
            {
                "rewards/chosen": chosen_rewards,
                "rewards/rejected": rejected_rewards,
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
                "rewards/margins": chosen_rewards - rejected_rewards,
                "logps/chosen": chosen_logps.detach(),
                "logps/rejected": rejected_logps.detach(),
            }
        )
        for key, value in metrics.items():
            self._metrics[mode][key].append(self.accelerator.gather(value).mean().item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        reference_is_policy = self.state.global_step == 0 and not self.args.is_reference_free
        if not self.model.training and reference_is_policy:
            for key in [key for key in self._metrics["eval"] if key.startswith(REWARD_METRIC_PREFIX)]:
                del self._metrics["eval"][key]
        super().log(logs, start_time)
