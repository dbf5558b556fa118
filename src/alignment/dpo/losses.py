"""Every preference loss `loss_type` accepts, in one registry (`PREFERENCE_LOSSES`), and the losses of LLaMA-Factory's
DPO workflow that TRL 1.16's `DPOTrainer` lacks, one function per loss.

An entry says who computes the loss (TRL's `DPOTrainer`, or one of the functions here), on what, whether it needs a
reference model and whether it reads `label_smoothing`. `DPOConfig`'s checks, its `loss_type` help and the routing in
`PreferenceTrainer` are all derived from the registry, so a new loss is one entry plus its test.

Every function here takes per-pair tensors (shape `[pairs]`) of one kind (`LossInputs`) and the stage config, and
returns the per-pair loss (shape `[pairs]`), which the trainer averages over the batch, and the extra metrics it logs.
The implicit reward of each is `beta` times its input. Log-probabilities are of the reply tokens only (the prompt is
context):

* `logps`: summed over the reply's tokens, `log π(y|x)`;
* `avg_logps`: averaged over them, `log π(y|x) / |y|` (ORPO and SimPO are defined on these);
* `logratios`: `log π_θ(y|x) - log π_ref(y|x)` (summed log-probs).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from alignment.dpo.config import DPOConfig


class LossInputs(enum.Enum):
    """What a preference loss is computed from, per pair."""

    LOGRATIOS = "summed log-ratios"  # log π_θ(y|x) - log π_ref(y|x): needs a reference model
    AVG_LOGPS = "length-averaged log-probs"  # log π_θ(y|x) / |y|: no reference model


# (chosen, rejected, config) -> (per-pair losses, extra metrics by name, detached).
LossFunction = Callable[[torch.Tensor, torch.Tensor, "DPOConfig"], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class PreferenceLoss:
    """One preference loss: who computes it, on what, and which settings it reads.

    * `name`: the `loss_type` that selects it (for a `smoothed` form, what it is called);
    * `compute`: our function, or None when TRL's `DPOTrainer` computes the loss; only TRL's combine with each other
      (`loss_weights`), ours are whole objectives;
    * `inputs`: what the loss is computed from (TRL's: from the log-ratios TRL computes itself); log-ratios need a
      reference model (`needs_reference`);
    * `reads_label_smoothing`: `label_smoothing` changes the loss (else a non-zero value is refused);
    * `smoothed`: the loss computed instead when `label_smoothing > 0` (`sigmoid` becomes conservative DPO);
    * `own_sft_term`: why `pref_ftx` is refused, when the loss already has an SFT term on the chosen reply.
    """

    name: str
    compute: LossFunction | None
    inputs: LossInputs = LossInputs.LOGRATIOS
    reads_label_smoothing: bool = False
    smoothed: PreferenceLoss | None = None
    own_sft_term: str | None = None

    @property
    def needs_reference(self) -> bool:
        """True when the loss reads log-ratios to a reference model."""
        return self.inputs is LossInputs.LOGRATIOS

    def at(self, label_smoothing: float) -> PreferenceLoss:
        """The loss computed at this `label_smoothing`: `smoothed` when it is > 0 and there is one, else this one."""
        return self.smoothed if label_smoothing > 0 and self.smoothed is not None else self


def log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """`log(1 - exp(x))` for `x < 0`, exact near 0 where `log1p(-exp(x))` rounds `exp(x)` to 1 and returns -inf."""
    return torch.log(-torch.expm1(x))


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, args: DPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO (Hong et al. 2024, arXiv:2403.07691, eqs. 6-7), with `beta` as the paper's λ:

        odds(y|x)  = P(y|x) / (1 - P(y|x)),   log P(y|x) = avg_logps (the length-normalised likelihood)
        L_OR       = -log σ( log odds(y_w|x) - log odds(y_l|x) )
        L_SFT      = -avg_logps(y_w)
        L_ORPO     = L_SFT + β · L_OR

    The two terms are logged as `sft_loss` and `odds_ratio_loss` (LLaMA-Factory's names).
    """
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (log1m_exp(chosen_avg_logps) - log1m_exp(rejected_avg_logps))
    odds_ratio_loss = -F.logsigmoid(log_odds)
    sft_loss = -chosen_avg_logps
    metrics = {"sft_loss": sft_loss.detach(), "odds_ratio_loss": odds_ratio_loss.detach()}
    return sft_loss + args.beta * odds_ratio_loss, metrics


def simpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, args: DPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al. 2024, arXiv:2405.14734, eq. 6), no reference model:

        L_SimPO = -log σ( β/|y_w| · log π(y_w|x) - β/|y_l| · log π(y_l|x) - γ )

    γ is the target reward margin (`simpo_gamma`); the implicit reward is `β · avg_logps`.
    """
    return -F.logsigmoid(args.beta * (chosen_avg_logps - rejected_avg_logps) - args.simpo_gamma), {}


def kto_pair_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, args: DPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Paired KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7 of the HALOs report), as TRL < 0.9 and
    LLaMA-Factory compute it on preference pairs:

        z_w = max(0, mean_batch(r_w)),  z_l = max(0, mean_batch(r_l)),  r = log π_θ(y|x) - log π_ref(y|x)
        L   = ½ [ (1 - σ(β (r_w - z_l))) + (1 - σ(β (z_w - r_l))) ]

    The KL reference point of the desirable half is estimated on the undesirable half and vice versa, detached
    from neither (as in the original). The ½ makes the batch mean equal the mean over the 2·pairs terms.
    """
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(args.beta * (chosen_logratios - rejected_kl))
    rejected_losses = 1 - torch.sigmoid(args.beta * (chosen_kl - rejected_logratios))
    return (chosen_losses + rejected_losses) / 2, {}


def conservative_dpo_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, args: DPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy preferences"): the sigmoid loss with each
    label flipped with probability ε (`label_smoothing`):

        L_cDPO = -(1 - ε) · log σ(β Δ) - ε · log σ(-β Δ),   Δ = r_w - r_l

    TRL 1.16's `sigmoid` ignores `label_smoothing` (only `robust`, `exo_pair` and `aot*` read it), so
    `loss_type: sigmoid` with `label_smoothing > 0` is computed here; ε = 0 is plain DPO.
    """
    delta, beta, epsilon = chosen_logratios - rejected_logratios, args.beta, args.label_smoothing
    return -(1 - epsilon) * F.logsigmoid(beta * delta) - epsilon * F.logsigmoid(-beta * delta), {}


_TRL = None  # computed by TRL's `DPOTrainer`, on its own log-ratios (`ipo` and `sigmoid_norm` average them per token)
PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    loss.name: loss
    for loss in (
        PreferenceLoss(
            "sigmoid",
            _TRL,
            reads_label_smoothing=True,
            smoothed=PreferenceLoss("conservative DPO", conservative_dpo_loss, reads_label_smoothing=True),
        ),
        PreferenceLoss("hinge", _TRL),
        PreferenceLoss("ipo", _TRL),
        PreferenceLoss("exo_pair", _TRL, reads_label_smoothing=True),
        PreferenceLoss("nca_pair", _TRL),
        PreferenceLoss("robust", _TRL, reads_label_smoothing=True),
        PreferenceLoss("bco_pair", _TRL),
        PreferenceLoss("sppo_hard", _TRL),
        PreferenceLoss("aot", _TRL, reads_label_smoothing=True),
        PreferenceLoss("aot_unpaired", _TRL, reads_label_smoothing=True),
        PreferenceLoss("apo_zero", _TRL),
        PreferenceLoss("apo_down", _TRL),
        PreferenceLoss("discopop", _TRL),
        PreferenceLoss("sigmoid_norm", _TRL),
        PreferenceLoss(
            "orpo",
            orpo_loss,
            LossInputs.AVG_LOGPS,
            own_sft_term="ORPO already adds an SFT term on the chosen reply (its odds-ratio term is weighted by "
            "`beta`)",
        ),
        PreferenceLoss("simpo", simpo_loss, LossInputs.AVG_LOGPS),
        PreferenceLoss("kto_pair", kto_pair_loss),
    )
}

# The tables `DPOConfig` validates against, derived from the registry.
LOSS_TYPES = tuple(PREFERENCE_LOSSES)
OUR_LOSS_TYPES = tuple(name for name, loss in PREFERENCE_LOSSES.items() if loss.compute is not None)
REFERENCE_FREE_LOSS_TYPES = tuple(name for name, loss in PREFERENCE_LOSSES.items() if not loss.needs_reference)
# `sigmoid` reads it as conservative DPO (its `smoothed` form).
LABEL_SMOOTHING_LOSS_TYPES = tuple(name for name, loss in PREFERENCE_LOSSES.items() if loss.reads_label_smoothing)
