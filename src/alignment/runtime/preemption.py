"""Preemption and Ctrl-C: a run told to stop saves a complete checkpoint where it stopped, says so, and exits.

Clusters preempt jobs with SIGTERM (Slurm sends it before SIGKILL; `recipes/launch.slurm` asks for it early with
`--signal`), and people press Ctrl-C (SIGINT). Either one, during training, lets the current optimizer step finish;
the trainer then saves a checkpoint at that step (with its manifest, on every rank: `StopOnSignal`), and the script
prints one line saying where it stopped and how to resume, and exits with `PREEMPTED_EXIT_STATUS`. Run the same
command again and it resumes from that checkpoint, ending with the weights of a run never interrupted. Before
training has started there is nothing to save, and the run stops at once with the same status. A second signal
exits at once, with the shell's status for that signal (128 + its number).

Every rank of a multi-process launch stops at the same step: whether any rank was signalled is agreed by one
all-reduce at the end of each step, so no rank saves a step its peers did not reach.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from alignment.runtime.reliability import last_complete_checkpoint

# EX_TEMPFAIL of sysexits.h, "a temporary failure; the user is invited to retry": what a requeue script looks for.
PREEMPTED_EXIT_STATUS = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run was stopped by a signal; the message says where it stopped and how to resume."""


class _StopRequest:
    """The signal this process received, if any; whether training (where a stop waits for the end of the step) is
    running; whether the run's processes agreed to stop (any of them was signalled)."""

    signal: int | None = None
    training: bool = False
    agreed: bool = False


_REQUEST = _StopRequest()


def _on_signal(signum: int, frame) -> None:
    if _REQUEST.signal is not None:  # a second signal: stop now, whatever the run is doing
        os._exit(128 + signum)
    _REQUEST.signal = signum
    name = signal.Signals(signum).name
    if not _REQUEST.training:
        raise Preempted(
            f"Stopped by {name} outside training: nothing in progress to save. Run the same command again; finished "
            f"work is kept (exit status {PREEMPTED_EXIT_STATUS})."
        )
    sys.stderr.write(f"\n{name} received: finishing this step and saving a checkpoint; send it again to stop now.\n")
    sys.stderr.flush()


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as above inside the block (the main thread only, as Python requires); the previous
    handlers come back after it."""
    previous = {stop_signal: signal.signal(stop_signal, _on_signal) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def stop_requested(device: torch.device) -> bool:
    """True when this process, or any process of the run, has been signalled to stop."""
    requested = _REQUEST.signal is not None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([float(requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        requested = bool(flag.item())
    return requested


class StopOnSignal(TrainerCallback):
    """Ends training after the step during which a stop signal arrived, saving a checkpoint at that step."""

    def on_train_begin(self, args, state, control, **kwargs):
        _REQUEST.training = True

    def on_step_end(self, args, state, control, **kwargs):
        if stop_requested(args.device):
            _REQUEST.agreed = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        _REQUEST.training = False


def raise_if_stopped(global_step: int, output_dir: str) -> None:
    """After training: `Preempted`, saying where the run stopped, when it was stopped by a signal."""
    if not _REQUEST.agreed:
        return
    checkpoint = last_complete_checkpoint(output_dir)
    name = signal.Signals(_REQUEST.signal).name if _REQUEST.signal is not None else "a signal to another process"
    saved = f"checkpoint {checkpoint} is complete" if checkpoint else "no checkpoint could be saved"
    raise Preempted(
        f"Stopped by {name} at step {global_step}: {saved}. Run the same command again to resume from it "
        f"(exit status {PREEMPTED_EXIT_STATUS})."
    )
