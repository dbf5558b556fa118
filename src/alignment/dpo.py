"""The dDPO stage: its recipe config, preference data as token ids, the reference model, cached reference
log-probs, and a `DPOTrainer` that also computes the losses TRL 1.16 lacks.

Data. Rows in any form of `alignment.preferences` become token ids here, not in TRL (`encode_pair`): the prompt's
inference ids, then each reply's ids after them (`alignment.turns`), so a template that writes its own BOS gets one
BOS, exactly as in SFT and at inference. The prompt keeps its end (`max_prompt_length`: the last turns and the
generation prompt are what the reply depends on); the replies keep their start and are cut to
`max_length - prompt length`. Every cut is counted and logged; a pair whose prompt leaves no room for a reply token,
or whose replies become identical once cut, is dropped and counted, never trained on silently.

Reference. Full fine-tuning keeps a frozen copy of the starting model; LoRA/QLoRA uses the base with the adapter
disabled (no second copy); `orpo` and `simpo` need no reference and none is loaded. With
`precompute_ref_log_probs`, the reference log-probs are computed in one pass before training and cached on disk
(`ref_logps_cache_dir`), keyed by the reference weights, the token ids (hence data, template, tokenizer and
truncation), the lengths, `ld_alpha` and the precision: three epochs, a re-run, a resume or a `beta` sweep reuse them.

Losses. `loss_type` takes every loss of TRL's `DPOTrainer` plus `orpo`, `simpo` and `kto_pair`
(`alignment.preference_losses`); `sigmoid` with `label_smoothing > 0` is conservative DPO; `pref_ftx` adds an SFT
term on the chosen reply to any of them except `orpo`, which has its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pyarrow.compute as pc
import torch
import trl
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from huggingface_hub.constants import HF_HOME
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer import dpo_trainer as trl_dpo_trainer

from alignment.configs import (
    ModelArguments,
    StageTrainingArguments,
)
from alignment.model_utils import load_model, match_embeddings_to_tokenizer
from alignment.preference_losses import (
    OUR_LOSS_TYPES,
    REFERENCE_FREE_LOSS_TYPES,
    conservative_dpo_loss,
    kto_pair_loss,
    orpo_loss,
    simpo_loss,
)
from alignment.preferences import PairGroupedSamplerMixin, encode_pair
from alignment.reliability import CrashSafeTrainerMixin
from alignment.row_encoding import encode_rows

logger = logging.getLogger(__name__)

TRL_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)
LOSS_TYPES = TRL_LOSS_TYPES + OUR_LOSS_TYPES
# Losses whose formula reads `label_smoothing` (`sigmoid` as conservative DPO, see `conservative_dpo_loss`).
LABEL_SMOOTHING_LOSS_TYPES = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired")
REWARD_METRIC_PREFIX = "rewards/"


@dataclass
class DPOConfig(StageTrainingArguments, trl.DPOConfig):
    """TRL's `DPOConfig` plus what the Zephyr recipe and LLaMA-Factory's DPO workflow need and TRL 1.16 dropped.

    `loss_type` is one loss, or several of TRL's combined with `loss_weights` (MPO). `pref_ftx` is the one knob for
    an SFT term on the chosen reply (LLaMA-Factory's `pref_ftx`, older TRL's `rpo_alpha`); `sft` is not accepted in
    `loss_type`, so that knob has one spelling.
    """

    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": f"Preference loss: one of {', '.join(LOSS_TYPES)}; or several of TRL's, weighted by "
            "`loss_weights`. `orpo` and `simpo` use no reference model; `sigmoid` with `label_smoothing > 0` is "
            "conservative DPO. Add an SFT term with `pref_ftx`, not with `sft`."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest prompt in tokens; longer prompts keep their END (the latest turns and the generation "
            "prompt). Must be below `max_length`, so every reply keeps at least `max_length - max_prompt_length` "
            "tokens. None: prompts are only limited by `max_length` (pairs left without room for a reply are dropped "
            "and counted)."
        },
    )
    pref_ftx: float = field(
        default=0.0,
        metadata={
            "help": "Weight of an SFT term added to the preference loss: the mean negative log-likelihood of the "
            "chosen reply's tokens (LLaMA-Factory's `pref_ftx`, TRL's former `rpo_alpha`). Keeps the chosen answers "
            "likely, which stops DPO from reward-hacking into replies that are merely unlike the rejected ones. "
            "Not with `orpo`, whose loss has its own SFT term."
        },
    )
    simpo_gamma: float = field(
        default=0.5,
        metadata={
            "help": "Target reward margin γ of the `simpo` loss (the SimPO paper uses 0.5 to 1.6 with β 2-2.5)."
        },
    )
    ref_logps_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the on-disk cache of reference log-probs (`precompute_ref_log_probs: true`). None: "
            "`$HF_HOME/alignment/ref_logps`, shared by every run of this machine, so re-runs and sweeps reuse it."
        },
    )

    def __post_init__(self):
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        self._check_losses()
        if self.max_prompt_length is not None:
            if self.max_prompt_length < 1:
                raise ValueError(f"`max_prompt_length: {self.max_prompt_length}` must be a positive number of tokens.")
            if self.max_length is not None and self.max_prompt_length >= self.max_length:
                raise ValueError(
                    f"`max_prompt_length: {self.max_prompt_length}` must be below `max_length: {self.max_length}`, "
                    "or no token of the reply would fit: lower it (the Zephyr recipe uses 512 of 1024)."
                )
        if self.truncation_mode != "keep_start":
            raise ValueError(
                f"`truncation_mode: {self.truncation_mode}` is not used: the handbook keeps the end of the prompt "
                "(`max_prompt_length`) and the start of each reply. Remove the key."
            )
        if self.precompute_ref_log_probs and self.is_reference_free:
            raise ValueError(
                f"`precompute_ref_log_probs: true` with `loss_type: {self.loss_type}`: this loss uses no reference "
                "model, so there is nothing to precompute. Remove the key."
            )
        super().__post_init__()

    def _check_losses(self) -> None:
        unknown = [name for name in self.loss_type if name not in LOSS_TYPES]
        if "sft" in unknown:
            raise ValueError(
                "`loss_type: sft` is not used: set `pref_ftx: <weight>` to add the SFT term on the chosen reply."
            )
        if unknown or not self.loss_type:
            raise ValueError(f"`loss_type: {self.loss_type}`: valid losses are {', '.join(LOSS_TYPES)}.")
        ours = [name for name in self.loss_type if name in OUR_LOSS_TYPES]
        if ours and len(self.loss_type) > 1:
            raise ValueError(
                f"`loss_type: {self.loss_type}`: {ours[0]} is a whole objective and cannot be combined with other "
                "losses; only TRL's losses combine (with `loss_weights`)."
            )
        if self.computes_own_loss:
            for name, value, default in (
                ("ld_alpha", self.ld_alpha, None),
                ("use_weighting", self.use_weighting, False),
                ("f_divergence_type", self.f_divergence_type, "reverse_kl"),
            ):
                if value != default:
                    raise ValueError(
                        f"`{name}: {value}` is only implemented for TRL's losses, not for `loss_type: "
                        f"{self.loss_type}`{' with label_smoothing' if self.loss_type == ['sigmoid'] else ''}."
                    )
        if self.label_smoothing and not (0 <= self.label_smoothing < 0.5):
            raise ValueError(
                f"`label_smoothing: {self.label_smoothing}` must be in [0, 0.5): it is a flip probability."
            )
        if self.label_smoothing and not all(name in LABEL_SMOOTHING_LOSS_TYPES for name in self.loss_type):
            raise ValueError(
                f"`label_smoothing: {self.label_smoothing}` has no effect on `loss_type: {self.loss_type}`: it is "
                f"read by {', '.join(LABEL_SMOOTHING_LOSS_TYPES)} only."
            )
        if self.label_smoothing and "sigmoid" in self.loss_type and len(self.loss_type) > 1:
            raise ValueError(
                "Conservative DPO (`sigmoid` with `label_smoothing`) cannot be combined with other losses."
            )
        if self.pref_ftx < 0:
            raise ValueError(f"`pref_ftx: {self.pref_ftx}` must be >= 0 (0 turns the SFT term off).")
        if self.pref_ftx and "orpo" in self.loss_type:
            raise ValueError(
                "`pref_ftx` with `loss_type: orpo`: ORPO already adds an SFT term on the chosen reply (its odds-ratio "
                "term is weighted by `beta`). Set `pref_ftx: 0`."
            )
        if self.simpo_gamma < 0:
            raise ValueError(f"`simpo_gamma: {self.simpo_gamma}` must be >= 0: it is SimPO's target reward margin.")
        if self.beta <= 0:
            raise ValueError(f"`beta: {self.beta}` must be > 0.")
        if self.sync_ref_model and self.is_reference_free:
            raise ValueError(f"`sync_ref_model: true` with `loss_type: {self.loss_type}`, which has no reference.")

    @property
    def is_reference_free(self) -> bool:
        """True when the loss uses no reference model (no copy is loaded, nothing is precomputed)."""
        return all(name in REFERENCE_FREE_LOSS_TYPES for name in self.loss_type)

    @property
    def computes_own_loss(self) -> bool:
        """True when `alignment.preference_losses` computes the loss rather than TRL."""
        return any(name in OUR_LOSS_TYPES for name in self.loss_type) or (
            self.loss_type == ["sigmoid"] and self.label_smoothing > 0
        )


@dataclass
class PreferenceTruncationReport:
    """What tokenization and truncation did to one split of preference pairs."""

    pairs: int
    prompts_truncated: int = 0
    replies_truncated: int = 0
    dropped_no_reply_room: int = 0
    dropped_identical_after_truncation: int = 0

    @property
    def kept(self) -> int:
        return self.pairs - self.dropped_no_reply_room - self.dropped_identical_after_truncation

    def __str__(self) -> str:
        return (
            f"{self.pairs} pairs: {self.prompts_truncated} prompts kept only their end (max_prompt_length), "
            f"{self.replies_truncated} pairs had a reply cut (max_length); dropped {self.dropped_no_reply_room} whose "
            f"prompt left no room for a reply token and {self.dropped_identical_after_truncation} whose replies were "
            f"identical once cut -> {self.kept} pairs"
        )


def _encode_pair(
    tokenizer: PreTrainedTokenizerBase, row: dict, max_length: int | None, max_prompt_length: int | None
) -> dict:
    """Token ids of one pair, truncated, with flags saying what truncation did (see the module doc)."""
    encoded = encode_pair(tokenizer, row)
    prompt_ids = encoded["prompt_ids"]
    replies = {name: encoded[f"{name}_ids"] for name in ("chosen", "rejected")}
    prompt_cut = max_prompt_length is not None and len(prompt_ids) > max_prompt_length
    if prompt_cut:
        prompt_ids = prompt_ids[-max_prompt_length:]
    room = None if max_length is None else max_length - len(prompt_ids)
    reply_cut = room is not None and any(len(ids) > room for ids in replies.values())
    if room is not None:
        replies = {name: ids[: max(room, 0)] for name, ids in replies.items()}
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": replies["chosen"],
        "rejected_ids": replies["rejected"],
        "prompt_cut": prompt_cut,
        "reply_cut": reply_cut,
        "no_room": room is not None and room <= 0,
        "identical": room is not None and room > 0 and replies["chosen"] == replies["rejected"],
    }


def tokenize_preferences(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    max_prompt_length: int | None,
    skip_invalid_rows: bool = False,
    source_of: Callable[[int], str] | None = None,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, PreferenceTruncationReport]:
    """Map preference rows (any form of `alignment.preferences`) to `prompt_ids`, `chosen_ids`, `rejected_ids`.

    The prompt ids are what inference feeds the model, the replies the ids it generates after them up to and
    including the end-of-turn token (`alignment.turns`), cut as the module doc says. Rows must already be valid
    (`load_mixture` with `preference_row_problem`). A row without exact ids is an `InvalidRowError` naming the source
    (`source_of(row)`), split, row and reply, or with `skip_invalid_rows` is dropped and counted by reason.
    """
    empty = {
        "prompt_ids": [],
        "chosen_ids": [],
        "rejected_ids": [],
        "prompt_cut": False,
        "reply_cut": False,
        "no_room": False,
        "identical": False,
    }
    encoded = encode_rows(
        dataset,
        lambda row: [_encode_pair(tokenizer, row, max_length, max_prompt_length)],
        empty=empty,
        split_name=split_name,
        skip_invalid_rows=skip_invalid_rows,
        source_of=source_of,
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} preference pairs",
    ).examples.remove_columns("row")
    report = PreferenceTruncationReport(
        pairs=len(encoded),
        prompts_truncated=sum(encoded["prompt_cut"]),
        replies_truncated=sum(encoded["reply_cut"]),
        dropped_no_reply_room=sum(encoded["no_room"]),
        dropped_identical_after_truncation=sum(encoded["identical"]),
    )
    if report.kept < report.pairs:
        keep = [i for i, (a, b) in enumerate(zip(encoded["no_room"], encoded["identical"], strict=True)) if not a | b]
        encoded = encoded.select(keep)
        logger.warning("%s split: %d pairs dropped by truncation (see below)", split_name, report.pairs - report.kept)
    logger.info("%s split: %s", split_name, report)
    return encoded.remove_columns(["prompt_cut", "reply_cut", "no_room", "identical"]), report


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


def _token_ids_hash(dataset: Dataset) -> str:
    """SHA-256 of the pairs' token ids (lengths and values of each column), in row order."""
    digest = hashlib.sha256()
    table = dataset.with_format("arrow")[:]
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        values = table.column(column).combine_chunks()
        digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).tobytes())
        digest.update(values.flatten().to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def _pair_widths(dataset: Dataset) -> list[int]:
    """Each pair's width in a batch: its prompt plus its longer reply, what the collator pads both rows to."""
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


@contextlib.contextmanager
def _no_reference_model_loaded():
    """Stop `DPOTrainer.__init__` from loading a reference copy, which it does whenever none is given and neither
    PEFT nor precomputation is on: for `orpo`/`simpo` it would be a whole unused model in memory."""

    def skip(model_id: str, *args, **kwargs) -> None:
        logger.info("Reference-free loss: not loading a reference copy of %s", model_id)
        return None

    with mock.patch.object(trl_dpo_trainer, "create_model_from_path", skip):
        yield


class PreferenceTrainer(CrashSafeTrainerMixin, PairGroupedSamplerMixin, trl.DPOTrainer):
    """TRL's `DPOTrainer` on already tokenized pairs (`tokenize_preferences`), with the handbook's additions:

    * `orpo`, `simpo`, `kto_pair` and conservative DPO, computed by `alignment.preference_losses` (TRL computes the
      rest), and `pref_ftx` as TRL's `sft` term (token-mean NLL of the chosen replies) added with that weight;
    * no reference model loaded for reference-free losses;
    * reference log-probs cached on disk across runs (`precompute_ref_log_probs`); `reference_forward_passes` counts
      the reference forward passes (batches) this trainer ran;
    * at evaluation before the first step, the reference is the policy itself, so every implicit reward is 0: the
      `rewards/*` metrics are dropped then instead of logging an accuracy of 0.

    The reference is always the model DPO starts from (the handbook never passes another one).
    """

    def __init__(self, *args, **kwargs):
        config: DPOConfig = kwargs["args"]
        if not isinstance(config, DPOConfig):
            raise TypeError(f"PreferenceTrainer needs alignment.dpo.DPOConfig, got {type(config).__name__}")
        self.reference_forward_passes = 0
        with _no_reference_model_loaded() if config.is_reference_free else contextlib.nullcontext():
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
        return _pair_widths(dataset)

    def compute_ref_log_probs(self, model, inputs):
        self.reference_forward_passes += 1
        return super().compute_ref_log_probs(model, inputs)

    def _cache_key(self, dataset: Dataset) -> dict:
        args = self.args
        return {
            "reference_weights_sha256": self._precompute_model_hash,
            "token_ids_sha256": _token_ids_hash(dataset),
            "chat_template_sha256": hashlib.sha256((self._tokenizer.chat_template or "").encode()).hexdigest(),
            "max_length": args.max_length,
            "max_prompt_length": args.max_prompt_length,
            "ld_alpha": args.ld_alpha,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "rows": len(dataset),
        }

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """TRL's one-pass precomputation, behind an on-disk cache keyed by `_cache_key`."""
        key = self._cache_key(dataset)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        cache_dir = Path(self.args.ref_logps_cache_dir or Path(HF_HOME) / "alignment" / "ref_logps").expanduser()
        path = cache_dir / f"{digest}.safetensors"
        hit = [path.is_file()]
        broadcast_object_list(hit, from_process=0)
        if hit[0]:
            tensors = load_file(path)
            logger.info(
                "Reference log-probs for %s (%d pairs) read from %s: no reference forward pass",
                name,
                len(dataset),
                path,
            )
            return dataset.add_column("ref_chosen_logps", tensors["chosen"].tolist()).add_column(
                "ref_rejected_logps", tensors["rejected"].tolist()
            )
        passes = self.reference_forward_passes
        computed = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tensors = {
                "chosen": torch.tensor(computed["ref_chosen_logps"], dtype=torch.float32),
                "rejected": torch.tensor(computed["ref_rejected_logps"], dtype=torch.float32),
            }
            partial = path.with_suffix(".partial")
            save_file(tensors, partial, metadata={key_: json.dumps(value) for key_, value in key.items()})
            partial.rename(path)
            logger.info(
                "Reference log-probs for %s (%d pairs, %d forward passes) cached in %s",
                name,
                len(dataset),
                self.reference_forward_passes - passes,
                path,
            )
        self.accelerator.wait_for_everyone()
        return computed

    def _reference_logps(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.args.computes_own_loss:
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

        loss_type, beta = self.loss_types[0], self.beta
        metrics = {}
        if loss_type == "orpo":
            losses, sft_losses, odds_ratio_losses = orpo_loss(chosen_avg, rejected_avg, beta)
            metrics["sft_loss"] = sft_losses.detach()
            metrics["odds_ratio_loss"] = odds_ratio_losses.detach()
            chosen_rewards, rejected_rewards = beta * chosen_avg.detach(), beta * rejected_avg.detach()
        elif loss_type == "simpo":
            losses = simpo_loss(chosen_avg, rejected_avg, beta, self.args.simpo_gamma)
            chosen_rewards, rejected_rewards = beta * chosen_avg.detach(), beta * rejected_avg.detach()
        else:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
            chosen_logratios = chosen_logps - ref_chosen_logps.to(chosen_logps.device)
            rejected_logratios = rejected_logps - ref_rejected_logps.to(rejected_logps.device)
            if loss_type == "kto_pair":
                losses = kto_pair_loss(chosen_logratios, rejected_logratios, beta)
            else:
                losses = conservative_dpo_loss(chosen_logratios, rejected_logratios, beta, self.label_smoothing)
            chosen_rewards, rejected_rewards = beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
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
