"""`ValueTrainer`: the `transformers.Trainer` of the value stage (joint loss over the whole optimizer step, value
metrics, the value head saved and resumed beside the body)."""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import torch
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from alignment.runtime.reliability import CrashSafeTrainerMixin
from alignment.value.config import ValueConfig, is_zero3
from alignment.value.loss import compute_value_metrics, joint_loss, loss_counts
from alignment.value.modeling import VALUE_HEAD_NAME, ValueModel, save_value_model
from alignment.value.rows import ValueCollator

logger = logging.getLogger(__name__)


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
        if self.is_deepspeed_enabled and is_zero3(args):
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
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            response_mask=inputs["response_mask"],
            labels=inputs["labels"],
        )
        mode = "train" if model.training else "eval"
        # In training, this micro-batch's share of the whole step's means; the data-parallel gradient average over
        # processes is undone by the factor `num_processes`.
        step_counts = self._step_counts if mode == "train" else None
        scale = self.accelerator.num_processes if mode == "train" else 1
        loss = joint_loss(
            outputs["label_log_probs"],
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
