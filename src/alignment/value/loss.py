"""The value stage's loss and metrics: `joint_loss` (SFT cross-entropy plus the weighted squared error of the value
at each step's last token), its denominators `loss_counts`, and the evaluation metrics (`value_metrics`, `auroc`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import EvalPrediction

from alignment.chat.turns import IGNORE_INDEX
from alignment.value.formats import Q_IGNORE

# Makes an empty set of Q positions give a value loss of 0 instead of 0/0 (the authors' constant).
VALUE_LOSS_EPS = 1e-3


@dataclass
class JointLoss:
    """`joint_loss`'s total and its two terms, fp32 scalars."""

    total: torch.Tensor
    sft: torch.Tensor
    value: torch.Tensor


def joint_loss(
    label_log_probs: torch.Tensor,
    labels: torch.Tensor,
    values: torch.Tensor,
    q: torch.Tensor,
    value_loss_weight: float,
    step_counts: torch.Tensor | None = None,
) -> JointLoss:
    """`sft + value_loss_weight * value` (see `alignment.value`); every term fp32.

    `label_log_probs` are `ValueModel`'s: `log p(labels[:, t] | tokens < t)` where a label is set, 0 elsewhere, so
    their negated sum is the summed next-token cross-entropy of the labels. The sums of this micro-batch are divided
    by `step_counts` (label tokens, Q positions) when given, the counts of the whole optimizer step; else by this
    micro-batch's own counts.
    """
    token_losses = -label_log_probs.float().sum()
    positions = q != Q_IGNORE
    num_tokens, num_steps = loss_counts(labels, q) if step_counts is None else step_counts
    sft = token_losses / num_tokens.clamp(min=1)
    # `where` before squaring, not a product with the mask: a value at a padded position may be anything, NaN
    # included, and NaN * 0 is NaN in the loss and in its gradient.
    errors = torch.where(positions, values.float() - q.float(), 0.0)
    squared = errors**2
    value = squared.sum() / (num_steps + VALUE_LOSS_EPS)
    return JointLoss(total=sft + value_loss_weight * value, sft=sft, value=value)


def loss_counts(labels: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`[label tokens, Q positions]` of a batch, the denominators of `joint_loss`."""
    return torch.stack([(labels[:, 1:] != IGNORE_INDEX).sum(), (q != Q_IGNORE).sum()])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean labels `positive` (ties count one half)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples.")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def value_metrics(values: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Metrics over the positions where `q` is not `Q_IGNORE` (arrays of the same shape, any layout).

    `value_mse`: mean (value - Q)^2. `sign_accuracy`: share of steps with Q != 0 whose value has Q's sign.
    `auroc`: of the value against step correctness (Q > 0), over steps with Q != 0; absent with one class only.
    `value_steps`: the number of Q positions.
    """
    values, q = np.asarray(values, dtype=np.float64), np.asarray(q, dtype=np.float64)
    positions = q != Q_IGNORE
    v, t = values[positions], q[positions]
    if not len(t):
        return {"value_steps": 0}
    metrics = {"value_mse": float(np.mean((v - t) ** 2)), "value_steps": int(len(t))}
    signed = t != 0
    if signed.any():
        metrics["sign_accuracy"] = float(np.mean(np.sign(v[signed]) == np.sign(t[signed])))
        correct = t[signed] > 0
        if correct.any() and not correct.all():
            metrics["auroc"] = auroc(v[signed], correct)
    return metrics


def compute_value_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`value_metrics` of the values and Q the trainer's evaluation loop gathered."""
    return value_metrics(prediction.predictions, prediction.label_ids)
