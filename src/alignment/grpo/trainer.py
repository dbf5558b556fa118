"""The GRPO trainer: TRL's `GRPOTrainer` made crash-safe (manifests, the finite-loss check, no NaN saved), with the
cost of generation in its log.

Generation dominates online RL, so every training log line carries, over the steps since the previous one:

* `generation/share_of_time`: the share of wall time spent generating completions (TRL's `_generate`: tokenizing
  the prompts, sampling, decoding);
* `generation/completion_tokens_per_s`: the completion tokens this process generated per second of generation.
"""

from __future__ import annotations

import time

import trl

from alignment.runtime.lm_head import CompactLMHeadMixin
from alignment.runtime.reliability import CrashSafeTrainerMixin


class GRPOTrainer(CrashSafeTrainerMixin, CompactLMHeadMixin, trl.GRPOTrainer):
    """TRL's `GRPOTrainer` with complete-checkpoint manifests, a finite-loss check on every micro-batch, no save of
    non-finite weights (`alignment.runtime.reliability`), and generation's share of the time logged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._window_start: float | None = None  # the start of the steps the next log line covers
        self._generation_seconds = 0.0
        self._completion_tokens = 0

    def _generate(self, prompts: list):
        """TRL's generation, timed, with the completion tokens it produced counted (training only)."""
        start = time.perf_counter()
        output = super()._generate(prompts)
        if self.model.training:
            self._window_start = self._window_start or start
            self._generation_seconds += time.perf_counter() - start
            self._completion_tokens += sum(len(ids) for ids in output[1])  # (prompt_ids, completion_ids, ...)
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._generation_seconds > 0 and self.model.training:
            now = time.perf_counter()
            logs["generation/share_of_time"] = self._generation_seconds / (now - self._window_start)
            logs["generation/completion_tokens_per_s"] = self._completion_tokens / self._generation_seconds
            self._window_start, self._generation_seconds, self._completion_tokens = now, 0.0, 0
        super().log(logs, start_time)
