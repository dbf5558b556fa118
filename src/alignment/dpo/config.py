"""The DPO stage's recipe config: TRL's `DPOConfig` plus the handbook's knobs, with every check on them.

The loss checks and the `loss_type` help are derived from the registry of preference losses
(`alignment.dpo.losses.PREFERENCE_LOSSES`), so a new loss needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from alignment.dpo.losses import (
    LABEL_SMOOTHING_LOSS_TYPES,
    LOSS_TYPES,
    OUR_LOSS_TYPES,
    PREFERENCE_LOSSES,
    REFERENCE_FREE_LOSS_TYPES,
    PreferenceLoss,
)
from alignment.recipes.arguments import ReferenceCacheArguments, StageTrainingArguments


def _loss_type_help() -> str:
    """`loss_type`'s help, from the registry."""
    reference_free = " and ".join(f"`{name}`" for name in REFERENCE_FREE_LOSS_TYPES)
    smoothed = "; ".join(
        f"`{name}` with `label_smoothing > 0` is {loss.smoothed.name}"
        for name, loss in PREFERENCE_LOSSES.items()
        if loss.smoothed is not None
    )
    return (
        f"Preference loss: one of {', '.join(LOSS_TYPES)}; or several of TRL's, weighted by `loss_weights`. "
        f"{reference_free} use no reference model; {smoothed}. Add an SFT term with `pref_ftx`, not with `sft`."
    )


@dataclass
class DPOConfig(StageTrainingArguments, ReferenceCacheArguments, trl.DPOConfig):
    """TRL's `DPOConfig` plus what the Zephyr recipe and LLaMA-Factory's DPO workflow need and TRL 1.16 dropped.

    `loss_type` is one loss, or several of TRL's combined with `loss_weights` (MPO). `pref_ftx` is the one knob for
    an SFT term on the chosen reply (LLaMA-Factory's `pref_ftx`, older TRL's `rpo_alpha`); `sft` is not accepted in
    `loss_type`, so that knob has one spelling.
    """

    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"], metadata={"help": _loss_type_help()})
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
        unknown = [name for name in self.loss_type if name not in PREFERENCE_LOSSES]
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
        own = self.own_loss
        if own is not None:
            smoothed = own is not PREFERENCE_LOSSES[self.loss_type[0]]
            for name, value, default in (
                ("ld_alpha", self.ld_alpha, None),
                ("use_weighting", self.use_weighting, False),
                ("f_divergence_type", self.f_divergence_type, "reverse_kl"),
            ):
                if value != default:
                    raise ValueError(
                        f"`{name}: {value}` is only implemented for TRL's losses, not for `loss_type: "
                        f"{self.loss_type}`{' with label_smoothing' if smoothed else ''}."
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
        smoothed_losses = [PREFERENCE_LOSSES[name] for name in self.loss_type if PREFERENCE_LOSSES[name].smoothed]
        if self.label_smoothing and smoothed_losses and len(self.loss_type) > 1:
            loss = smoothed_losses[0]
            title = loss.smoothed.name[:1].upper() + loss.smoothed.name[1:]
            raise ValueError(f"{title} (`{loss.name}` with `label_smoothing`) cannot be combined with other losses.")
        if self.pref_ftx < 0:
            raise ValueError(f"`pref_ftx: {self.pref_ftx}` must be >= 0 (0 turns the SFT term off).")
        for name in self.loss_type:
            if self.pref_ftx and PREFERENCE_LOSSES[name].own_sft_term:
                raise ValueError(
                    f"`pref_ftx` with `loss_type: {name}`: {PREFERENCE_LOSSES[name].own_sft_term}. Set `pref_ftx: 0`."
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
    def own_loss(self) -> PreferenceLoss | None:
        """The loss `alignment.dpo.losses` computes rather than TRL (at this `label_smoothing`), or None when TRL
        computes `loss_type`. Ours are whole objectives, so only a single loss can be ours."""
        if len(self.loss_type) != 1:
            return None
        loss = PREFERENCE_LOSSES[self.loss_type[0]].at(self.label_smoothing)
        return loss if loss.compute is not None else None

    @property
    def computes_own_loss(self) -> bool:
        """True when `alignment.dpo.losses` computes the loss rather than TRL."""
        return self.own_loss is not None
