"""The GRPO trainer: TRL's `GRPOTrainer` made crash-safe (manifests, the finite-loss check, no NaN saved)."""

from __future__ import annotations

import trl

from alignment.runtime.reliability import CrashSafeTrainerMixin


class GRPOTrainer(CrashSafeTrainerMixin, trl.GRPOTrainer):
    """TRL's `GRPOTrainer` with complete-checkpoint manifests, a finite-loss check on every micro-batch, and no save
    of non-finite weights (`alignment.runtime.reliability`)."""
