"""The preference losses of LLaMA-Factory's DPO workflow that TRL 1.16's `DPOTrainer` lacks, one function per loss.

Every function takes per-pair tensors (shape `[pairs]`) and returns the per-pair loss (shape `[pairs]`); the trainer
averages it over the batch. Log-probabilities are of the reply tokens only (the prompt is context):

* `logps`: summed over the reply's tokens, `log π(y|x)`;
* `avg_logps`: averaged over them, `log π(y|x) / |y|` (ORPO and SimPO are defined on these);
* `logratios`: `log π_θ(y|x) - log π_ref(y|x)` (summed log-probs).

TRL's own losses (`sigmoid`, `ipo`, `robust`, ...) stay in TRL; `alignment.dpo.PreferenceTrainer` routes each
`loss_type` to the right one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Losses computed here, and the subset that needs no reference model at all.
OUR_LOSS_TYPES = ("orpo", "simpo", "kto_pair")
REFERENCE_FREE_LOSS_TYPES = ("orpo", "simpo")


def log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """`log(1 - exp(x))` for `x < 0`, exact near 0 where `log1p(-exp(x))` rounds `exp(x)` to 1 and returns -inf."""
    return torch.log(-torch.expm1(x))


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al. 2024, arXiv:2403.07691, eqs. 6-7), with `beta` as the paper's λ:

        odds(y|x)  = P(y|x) / (1 - P(y|x)),   log P(y|x) = avg_logps (the length-normalised likelihood)
        L_OR       = -log σ( log odds(y_w|x) - log odds(y_l|x) )
        L_SFT      = -avg_logps(y_w)
        L_ORPO     = L_SFT + β · L_OR

    Returns `(loss, sft_loss, odds_ratio_loss)` per pair: the last two are logged as `sft_loss` and
    `odds_ratio_loss` (LLaMA-Factory's names).
    """
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (log1m_exp(chosen_avg_logps) - log1m_exp(rejected_avg_logps))
    odds_ratio_loss = -F.logsigmoid(log_odds)
    sft_loss = -chosen_avg_logps
    return sft_loss + beta * odds_ratio_loss, sft_loss, odds_ratio_loss


def simpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (Meng et al. 2024, arXiv:2405.14734, eq. 6), no reference model:

        L_SimPO = -log σ( β/|y_w| · log π(y_w|x) - β/|y_l| · log π(y_l|x) - γ )

    `gamma` is the target reward margin (`simpo_gamma`); the implicit reward is `β · avg_logps`.
    """
    return -F.logsigmoid(beta * (chosen_avg_logps - rejected_avg_logps) - gamma)


def kto_pair_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """Paired KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7 of the HALOs report), as TRL < 0.9 and
    LLaMA-Factory compute it on preference pairs:

        z_w = max(0, mean_batch(r_w)),  z_l = max(0, mean_batch(r_l)),  r = log π_θ(y|x) - log π_ref(y|x)
        L   = ½ [ (1 - σ(β (r_w - z_l))) + (1 - σ(β (z_w - r_l))) ]

    The KL reference point of the desirable half is estimated on the undesirable half and vice versa, detached
    from neither (as in the original). The ½ makes the batch mean equal the mean over the 2·pairs terms.
    """
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_kl))
    rejected_losses = 1 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))
    return (chosen_losses + rejected_losses) / 2


def conservative_dpo_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float, label_smoothing: float
) -> torch.Tensor:
    """Conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy preferences"): the sigmoid loss with each
    label flipped with probability ε (`label_smoothing`):

        L_cDPO = -(1 - ε) · log σ(β Δ) - ε · log σ(-β Δ),   Δ = r_w - r_l

    TRL 1.16's `sigmoid` ignores `label_smoothing` (only `robust`, `exo_pair` and `aot*` read it), so
    `loss_type: sigmoid` with `label_smoothing > 0` is computed here; ε = 0 is plain DPO.
    """
    delta = chosen_logratios - rejected_logratios
    return -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
