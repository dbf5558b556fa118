"""The dSFT trainer: TRL's `SFTTrainer`, made crash safe (see `alignment.reliability`)."""

import trl

from alignment.reliability import CrashSafeTrainerMixin


class SFTTrainer(CrashSafeTrainerMixin, trl.SFTTrainer):
    """TRL's `SFTTrainer` with complete-checkpoint manifests, a finite-loss check on every micro-batch, and no save of
    non-finite weights."""
