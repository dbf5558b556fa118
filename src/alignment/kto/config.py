"""The KTO stage's recipe config: TRL's `KTOConfig` with the checks every stage config runs, the reference log-prob
cache folder, and the desirable/undesirable weights left to the KTO paper's rule for unbalanced data."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from alignment.recipes.arguments import ReferenceCacheArguments, StageTrainingArguments

# The KTO paper (Ethayarajh et al. 2024, eq. 8) keeps desirable_weight * n_desirable / (undesirable_weight *
# n_undesirable) in [1, 4/3]; the rule below sets it to 1, the balanced end of that band.
BALANCE_BAND = (1.0, 4 / 3)


def balanced_weights(
    desirable: int, undesirable: int, desirable_weight: float | None = None, undesirable_weight: float | None = None
) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for a training split with these label counts: a weight the recipe set
    is kept, an unset one makes `desirable_weight * desirable == undesirable_weight * undesirable` (the other unset
    one is 1). A split with one label only leaves unset weights at 1: there is nothing to balance."""
    if not desirable or not undesirable:
        return desirable_weight or 1.0, undesirable_weight or 1.0
    if desirable_weight is None and undesirable_weight is None:
        undesirable_weight = 1.0
    if desirable_weight is None:
        desirable_weight = undesirable_weight * undesirable / desirable
    elif undesirable_weight is None:
        undesirable_weight = desirable_weight * desirable / undesirable
    return desirable_weight, undesirable_weight


def balance_ratio(desirable: int, undesirable: int, desirable_weight: float, undesirable_weight: float) -> float:
    """The KTO paper's ratio of the weighted label counts, which it recommends within `BALANCE_BAND`."""
    return desirable_weight * desirable / (undesirable_weight * undesirable)


@dataclass
class KTOConfig(StageTrainingArguments, ReferenceCacheArguments, trl.KTOConfig):
    """TRL's `KTOConfig` (`loss_type`: `kto` or `apo_zero_unpaired`), with the reference log-prob cache of DPO and
    weights that balance the labels of the training split unless the recipe sets them."""

    desirable_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the loss of desirable (label true) completions. None: chosen from the training split's "
            "label counts by the KTO paper's rule for unbalanced data, desirable_weight * n_desirable = "
            "undesirable_weight * n_undesirable (the balanced end of the paper's band [1, 4/3] for their ratio), "
            "with undesirable_weight 1 when both are unset; the values are logged."
        },
    )
    undesirable_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the loss of undesirable (label false) completions. None: 1, or chosen by the rule of "
            "`desirable_weight` when only that one is set."
        },
    )

    def __post_init__(self):
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}: {value}` must be > 0 (leave it unset for the KTO paper's rule).")
        if self.beta <= 0:
            raise ValueError(f"`beta: {self.beta}` must be > 0.")
        if self.estimates_kl:
            if self.train_sampling_strategy != "sequential":
                raise ValueError(
                    f"`train_sampling_strategy: {self.train_sampling_strategy}` with `loss_type: {self.loss_type}`: "
                    "the KL term pairs each prompt with a neighbour's completion in a fixed-order batch, so rows must "
                    "come in order. Remove the key (the default is `sequential`), or use `loss_type: "
                    "apo_zero_unpaired`, which has no KL term."
                )
            if self.per_device_train_batch_size < 2:
                raise ValueError(
                    f"`per_device_train_batch_size: {self.per_device_train_batch_size}` with `loss_type: "
                    f"{self.loss_type}`: the KL term pairs a prompt with another row's completion of the same "
                    "batch, so a batch needs at least 2 rows."
                )
        super().__post_init__()

    @property
    def estimates_kl(self) -> bool:
        """True when the loss estimates the KL term from mismatched prompt-completion pairs (TRL's `kto`)."""
        return self.loss_type != "apo_zero_unpaired"
