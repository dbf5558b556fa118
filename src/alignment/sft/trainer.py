"""The dSFT trainer: TRL's `SFTTrainer` made crash-safe."""

from __future__ import annotations

import trl

from alignment.runtime.lm_head import CompactLMHeadMixin
from alignment.runtime.reliability import CrashSafeTrainerMixin


class SFTTrainer(CrashSafeTrainerMixin, CompactLMHeadMixin, trl.SFTTrainer):
    """TRL's `SFTTrainer` with complete-checkpoint manifests, a finite-loss check on every micro-batch, and no save of
    non-finite weights (`alignment.reliability`)."""
