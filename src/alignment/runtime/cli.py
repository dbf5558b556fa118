"""The entry point of every script: a user's mistake ends as one message and exit status 2, a bug as a traceback.

    if __name__ == "__main__":
        run_cli(main)

A bad recipe, data row, chat template or output folder is the user's to fix, and its exception already says what and
how; the 10-20 lines of traceback above it, printed once per rank under `accelerate launch`, only hide that. So
`run_cli` prints the message once, on the main process, as `error: <kind>: <message>` on stderr, and exits with
`USER_ERROR_EXIT_STATUS`. The other ranks hit the same error (they parse the same recipe and read the same data) and
exit with the same status silently, a few seconds later: `torchrun` and `accelerate launch` stop every process 0.1 s
after the first one exits, and rank 0 must not be stopped before it has said why. `ALIGNMENT_DEBUG=1` re-raises
instead, with the full traceback on every rank. Any other exception is a bug and propagates unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import torch.distributed as dist
from tqdm.auto import tqdm

from alignment.chat.templates import ChatTemplateError
from alignment.data.rows import DataError, InvalidRowError
from alignment.recipes.parser import RecipeError
from alignment.runtime.preemption import PREEMPTED_EXIT_STATUS, Preempted, stopping_on_signals
from alignment.runtime.reliability import NonFiniteLossError, OutputDirError


class StageFailedError(RuntimeError):
    """A stage's process exited non-zero. Its own error (message or traceback) is in the log above; this only names
    the stage, so `run_cli` prints it as one line instead of a second traceback."""


# The exceptions that mean "the user's input is wrong", each raised with a message that names the input and the fix.
# Add a class here only when every raise of it is such a message: a class also raised for bugs would hide them.
USER_ERRORS: tuple[type[Exception], ...] = (
    RecipeError,  # an unknown recipe key, a bad value, one a config check refuses (alignment.recipes.parser)
    DataError,  # a data source that cannot be used as given: file, split, JSON, columns, weight (alignment.data)
    InvalidRowError,  # a malformed data row, named by source, split and row (alignment.data)
    ChatTemplateError,  # a template, or a row, without an exact loss mask (alignment.chat.templates)
    OutputDirError,  # `output_dir` holds another recipe's finished run or checkpoints (alignment.runtime.reliability)
    NonFiniteLossError,  # the loss became NaN or inf: names the step, checkpoint and likely cause
    StageFailedError,  # a pipeline stage failed; its own message is already in the log above (alignment.pipeline)
)
USER_ERROR_EXIT_STATUS = 2  # as argparse exits on a bad command line
DEBUG_ENV = "ALIGNMENT_DEBUG"
# Seconds a non-main rank of a multi-process launch waits before exiting on a user error, so that rank 0, which hits
# the same error up to a second or two later (start-up and data loading are not in lock step), prints it first.
NON_MAIN_RANK_EXIT_DELAY_S = 5.0


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's `main()`; turn a user error into one message on stderr (main process only) and exit status 2.

    A user error is an instance of `USER_ERRORS` (the recipe parser turns the config dataclasses' `__post_init__`
    checks, ours and transformers', into `RecipeError`s). With
    `ALIGNMENT_DEBUG=1` in the environment the error is re-raised, traceback and all. Any other exception propagates
    unchanged, and so does `SystemExit` (`--help`, a stage already complete). SIGTERM and SIGINT stop the run
    where it can resume (`alignment.runtime.preemption`): one line, `stopped: ...`, and `PREEMPTED_EXIT_STATUS`.
    """
    try:
        with stopping_on_signals():
            main()
        _release_process_group()
    except Preempted as stopped:
        if _is_main_process():
            _report(f"stopped: {stopped}")
        sys.exit(PREEMPTED_EXIT_STATUS)
    except Exception as err:
        kind = _user_error_kind(err)
        if kind is None or _debug():
            raise
        if _is_main_process():
            _report(f"error: {kind}: {_message(err)}")
        elif (_env_int("WORLD_SIZE") or 1) > 1:
            time.sleep(NON_MAIN_RANK_EXIT_DELAY_S)
        sys.exit(USER_ERROR_EXIT_STATUS)


def _release_process_group() -> None:
    """Tear down the distributed process group a multi-process run created, then end the process at once.

    Left to interpreter shutdown, a gloo group's threads can be destroyed while still joinable, and a rank that has
    finished and saved everything then aborts ("terminate called without an active exception", exit -6), failing
    the launch. PyTorch asks every program to call `destroy_process_group` itself, once every rank is done; even
    then, interpreter finalization can free tensors that gloo's worker threads still hold and abort the same way
    (pytorch/pytorch#179291). Every rank has saved and passed the barrier here, so the process ends without that
    finalization, its output flushed.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank has finished (rank 0 saves last): none tears the group down under another
        dist.destroy_process_group()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _report(line: str) -> None:
    """`line` on stderr, on a line of its own even when a progress bar was left open on the current one."""
    open_bar = bool(getattr(tqdm, "_instances", None))
    sys.stderr.write(("\n" if open_bar else "") + line + "\n")
    sys.stderr.flush()


def _user_error_kind(err: Exception) -> str | None:
    """The kind `err` is reported as when it is a user error (its class name), or None for a bug."""
    return type(err).__name__ if isinstance(err, USER_ERRORS) else None


def _message(err: Exception) -> str:
    """The error's own message: `str(err)` shows no `raise ... from` chain; the class name if the message is empty."""
    return str(err) or type(err).__name__


def _debug() -> bool:
    """True when `ALIGNMENT_DEBUG` asks for tracebacks (any value but empty, 0, false, no, off)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _is_main_process() -> bool:
    """Rank 0 by the launcher's environment (`RANK`, else `LOCAL_RANK`; `accelerate launch` and `torchrun` set both),
    without initialising torch.distributed; a process without either is the only one, hence the main one."""
    rank = _env_int("RANK")
    if rank is None:
        rank = _env_int("LOCAL_RANK")
    return rank in (None, 0)


def _env_int(name: str) -> int | None:
    """The integer in environment variable `name`; None when unset, empty or not an integer (no launcher wrote it:
    better a message twice than none)."""
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None
