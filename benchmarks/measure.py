"""What a benchmark run measures, from the batches it actually trained on and the clock between optimizer steps.

Token counts come from each micro-batch as the trainer received it (`batch_token_counts`):

* positions: every position the model computes, padding included (`input_ids.numel()`);
* non-pad: positions holding a real token: the attention mask's ones, or every position of a padding-free batch
  (one row, sequences told apart by `position_ids`, no attention mask and no pad);
* trained: tokens with a loss: `labels != -100` (SFT, value), `completion_mask` (DPO), or every real token when the
  batch has neither (a reward model reads every token);
* sequences: rows of a padded batch, sequence starts (`position_ids == 0`) of a padding-free one;
* attention pairs: query-key products the attention kernel computes. A kernel over whole rows (SDPA, eager: the CPU
  case) computes every row's width squared, masked pairs included, so the long rows of padding-free and packed
  batches cost it more than the short rows of padded ones; a varlen kernel (flash attention) computes only each
  sequence's own length squared. Both count the full square (a causal kernel may skip half of it).

Memory is measured per optimizer step too: the peak above the step's start (resident memory on CPU, read from
`/proc/self/status` after resetting its high-water mark at each step's start; allocated memory on a GPU), which
leaves out the weights, optimizer state and evaluation that every configuration holds alike, and keeps the logits,
activations and gradients that differ. The process's peak over the whole run is kept as well.

Throughput is measured over the steady-state steps: from the end of the last warm-up step to the end of the last
step, so data loading, collation, logging and the optimizer are inside it, as they are in a real run. It is measured
twice: by the wall clock (what a user waits) and by this process's CPU time, which on a machine shared with other
jobs still measures the work done when each run keeps to one thread (`run.py --threads 1`), while the wall clock then
also counts the time other jobs held the core.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignment.chat.turns import IGNORE_INDEX

# Dense bf16 tensor-core peak of each GPU, FLOP/s (vendor data sheets, without sparsity). Matched in this order against
# `torch.cuda.get_device_name()`, so the PCIe and NVL variants of the H100 come before the SXM entry.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


@dataclass
class TokenCounts:
    """What one or more micro-batches hold (see the module doc); adds up over batches and steps."""

    positions: int = 0
    non_pad: int = 0
    trained: int = 0
    sequences: int = 0
    attention_pairs: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def padding_fraction(self) -> float:
        """Pad positions / all positions."""
        return 1 - self.non_pad / self.positions if self.positions else 0.0


def sequence_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real tokens of each sequence: attention-mask row sums, or the gaps between sequence starts of a padding-free
    row (one row, no pad, `position_ids` restarting at 0 for each sequence)."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return mask.sum(dim=1)
    position_ids = batch["position_ids"][0]
    starts = (position_ids == 0).nonzero().flatten()
    return torch.diff(starts, append=torch.tensor([position_ids.numel()], device=starts.device))


def batch_token_counts(batch: dict[str, torch.Tensor], varlen_attention: bool = False) -> TokenCounts:
    """Positions, real tokens, trained tokens, sequences and attention pairs of one collated micro-batch, for an
    attention kernel over whole rows or a varlen one (see the module doc)."""
    input_ids = batch["input_ids"]
    rows, width = input_ids.shape
    lengths = sequence_lengths(batch)
    non_pad = int(lengths.sum())
    if "labels" in batch:
        trained = int((batch["labels"] != IGNORE_INDEX).sum())
    elif "completion_mask" in batch:
        trained = int(batch["completion_mask"].sum())
    else:
        trained = non_pad
    pairs = int((lengths**2).sum()) if varlen_attention else rows * width * width
    return TokenCounts(input_ids.numel(), non_pad, trained, len(lengths), pairs)


@dataclass
class Stopwatch:
    """Wall-clock and CPU seconds since it was made."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def resident_mib() -> tuple[float, float]:
    """This process's current and peak resident memory, MiB (`/proc/self/status`: VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


class MemoryPeaks:
    """Peak memory of each step above its start, and of the whole process, on `device` ("cpu" or "cuda"): resident
    memory on CPU (the high-water mark is reset at each step's start, which `ru_maxrss` also follows, so the process's
    peak is kept here), allocated memory on CUDA."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.process_peak = 0.0
        self.start = 0.0

    def current_and_peak(self) -> tuple[float, float]:
        if self.cuda:
            return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
        return resident_mib()

    def step_begin(self) -> None:
        self.process_peak = max(self.process_peak, self.current_and_peak()[1])
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start = self.current_and_peak()[0]

    def step_peak(self) -> float:
        """The peak since `step_begin`, above the memory then."""
        return self.current_and_peak()[1] - self.start

    def run_peak(self) -> float:
        return max(self.process_peak, self.current_and_peak()[1])


@dataclass
class StepRecord:
    end: float  # time.perf_counter() at the end of the optimizer step
    cpu_end: float  # time.process_time() then
    counts: TokenCounts
    peak_memory_mb: float  # the step's peak above its start (`MemoryPeaks.step_peak`)


class StepMeter(TrainerCallback):
    """Times every optimizer step and keeps the token counts of its micro-batches (given by `MeteredTrainerMixin`)."""

    def __init__(self, synchronize_cuda: bool = False, varlen_attention: bool = False):
        self.synchronize_cuda = synchronize_cuda
        self.varlen_attention = varlen_attention
        self.memory = MemoryPeaks("cuda" if synchronize_cuda else "cpu")
        self.steps: list[StepRecord] = []
        # DPO's one reference pass over each split: (wall, CPU) seconds by split name.
        self.reference_pass_seconds: dict[str, tuple[float, float]] = {}
        self._pending = TokenCounts()
        self._train_begin = 0.0

    def add_batches(self, batches: list[dict[str, torch.Tensor]]) -> None:
        for batch in batches:
            self._pending = self._pending + batch_token_counts(batch, self.varlen_attention)

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_begin = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self.memory.step_begin()

    def on_step_end(self, args, state, control, **kwargs):
        if self.synchronize_cuda:  # GPU work is asynchronous: the step ends when its kernels do
            torch.cuda.synchronize()
        self.steps.append(StepRecord(time.perf_counter(), time.process_time(), self._pending, self.memory.step_peak()))
        self._pending = TokenCounts()

    def steady_state(self, warmup_steps: int) -> dict[str, float | list[float]]:
        """Rates over the steps after the first `warmup_steps` (at least one, whose end starts the clock); shares and
        per-token figures over every step (length-grouped batches come longest first: a part would be biased); and
        the duration of every step."""
        if not 1 <= warmup_steps < len(self.steps):
            raise ValueError(f"{len(self.steps)} steps leave none to measure after {warmup_steps} warm-up steps")
        measured = self.steps[warmup_steps:]
        seconds = measured[-1].end - self.steps[warmup_steps - 1].end
        cpu_seconds = measured[-1].cpu_end - self.steps[warmup_steps - 1].cpu_end
        total = sum((step.counts for step in measured), TokenCounts())
        epoch = sum((step.counts for step in self.steps), TokenCounts())
        ends = [self._train_begin, *(step.end for step in self.steps)]
        return {
            "steps": len(self.steps),
            "measured_steps": len(measured),
            "seconds_per_step": seconds / len(measured),
            "sequences_per_step": epoch.sequences / len(self.steps),
            "trained_tokens_per_s": total.trained / seconds,
            "non_pad_tokens_per_s": total.non_pad / seconds,
            "cpu_seconds_per_step": cpu_seconds / len(measured),
            "non_pad_tokens_per_cpu_s": total.non_pad / cpu_seconds,
            "positions_per_s": total.positions / seconds,
            "padding_fraction": epoch.padding_fraction,
            "positions_per_token": epoch.positions / epoch.non_pad,
            "attention_pairs_per_token": epoch.attention_pairs / epoch.non_pad,
            "step_seconds": [end - start for start, end in zip(ends[:-1], ends[1:], strict=True)],
            "step_peak_memory_mb": statistics.median(step.peak_memory_mb for step in measured),
            "peak_memory_mb": self.memory.run_peak(),
        }


class MeteredTrainerMixin:
    """Mixed in before a `Trainer` subclass: hands the micro-batches of every optimizer step to its `StepMeter`, and
    times a DPO trainer's precomputation of reference log-probs split by split.

    `get_batch_samples` is where the Trainer fetches one step's micro-batches, so the counts belong to exactly the step
    that trains on them (the data loader itself prefetches a batch ahead, so counting in the collator would not).
    """

    @property
    def step_meter(self) -> StepMeter:
        return next(callback for callback in self.callback_handler.callbacks if isinstance(callback, StepMeter))

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.step_meter.add_batches(batches)
        return batches, num_items_in_batch

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's `DPOTrainer` hook (only DPO trainers call it): one reference pass over the split `name`, timed."""
        stopwatch = Stopwatch()
        dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        self.step_meter.reference_pass_seconds[name] = stopwatch.elapsed()
        return dataset


def metered(trainer_class: type) -> type:
    """`trainer_class` with `MeteredTrainerMixin` in front (pass a `StepMeter` in its `callbacks`)."""
    return type(f"Metered{trainer_class.__name__}", (MeteredTrainerMixin, trainer_class), {})


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU named `device_name`, or None when it is not in `PEAK_BF16_FLOPS`."""
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in device_name), None)


def model_flops_utilization(num_parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    """MFU: 6 N FLOPs per trained-on token (forward 2N + backward 4N) at `tokens_per_s`, over the `peak` FLOP/s."""
    return 6 * num_parameters * tokens_per_s / peak if peak else None
