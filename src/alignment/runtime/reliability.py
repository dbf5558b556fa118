"""Crash safety for every stage: checkpoints known to be complete, finished outputs never overwritten, and a run
that stops at the first non-finite loss instead of saving NaN weights.

Checkpoints. transformers writes `checkpoint-N/` file by file; a run killed (or a node preempted) midway leaves a
folder that looks like a checkpoint and resumes into a crash or, worse, into a silently wrong state. Every trainer of
the handbook (`CrashSafeTrainerMixin`) writes `checkpoint-N/checkpoint_complete.json` last, after every process has
written its part: the relative path and size of each file. `last_complete_checkpoint` resumes only from a folder whose
manifest exists and matches the files on disk, and names every folder it skips and why. Old checkpoints are rotated
away (`save_total_limit`) only once the new one is complete.

Finished outputs. A stage writes `run_finished.json` into `output_dir` after everything else (`mark_finished`; not the
model card, which TRL also writes at every checkpoint). `check_output_dir` runs before anything is written: a
finished `output_dir` is never written over unless the recipe sets
`overwrite_output_dir: true`; the same recipe run again is told the stage is complete and exits 0 (the pipeline relies
on it); a different recipe pointed at another run's checkpoints is refused, naming the keys that differ. A run holds
an exclusive lock on its `output_dir` (`lock_output_dir`): a second run started into the same folder is refused.

Non-finite losses. `CrashSafeTrainerMixin` checks the loss of every micro-batch on every process and refuses to save
weights that are not finite, so a diverged run stops at the step it diverged, naming the last complete checkpoint and
the likely cause, and no NaN model is ever saved.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

logger = logging.getLogger("alignment")

MANIFEST_NAME = "checkpoint_complete.json"
RESOLVED_CONFIG_NAME = "resolved_config.yaml"
FINISHED_NAME = "run_finished.json"
LOCK_NAME = ".run.lock"
# Keys that change how a run reports or where it keeps its files, never what it trains: a run may resume or be found
# complete with them changed (`output_dir` too: a finished run copied elsewhere is still that run).
KEYS_FREE_ACROSS_RUNS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "log_level",
        "log_level_replica",
        "logging_dir",
        "logging_first_step",
        "logging_nan_inf_filter",
        "save_total_limit",
        "dataloader_num_workers",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_revision",
    }
)
_CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# The descriptors of the output folders this process has locked: kept open, so held, until the process ends.
_HELD_LOCKS: dict[Path, int] = {}


class OutputDirError(RuntimeError):
    """`output_dir` holds another run's finished model or checkpoints."""


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN or infinite during training."""


# Checkpoints


def write_manifest(checkpoint_dir: str | Path) -> None:
    """Mark `checkpoint_dir` complete: write the size of every file in it to its manifest, atomically (a temporary
    file renamed over the final name), so a manifest is either absent or whole."""
    checkpoint_dir = Path(checkpoint_dir)
    files = {
        str(path.relative_to(checkpoint_dir)): path.stat().st_size
        for path in sorted(checkpoint_dir.rglob("*"))
        if path.is_file() and not path.name.startswith(MANIFEST_NAME)
    }
    partial = checkpoint_dir / f"{MANIFEST_NAME}.partial"
    partial.write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
    os.replace(partial, checkpoint_dir / MANIFEST_NAME)


def checkpoint_problem(checkpoint_dir: str | Path) -> str | None:
    """Why `checkpoint_dir` cannot be resumed from (no manifest, a file missing or of another size), or None."""
    manifest_path = Path(checkpoint_dir) / MANIFEST_NAME
    if not Path(checkpoint_dir).is_dir():
        return "no such folder" if not Path(checkpoint_dir).exists() else "a file, not a checkpoint folder"
    if not manifest_path.is_file():
        return f"no {MANIFEST_NAME}: it was cut off while being written, or not written by the handbook"
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as err:
        return f"unreadable {MANIFEST_NAME} ({err})"
    for name, size in files.items():
        path = Path(checkpoint_dir) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest step first."""
    if not Path(output_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := _CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found, reverse=True) if path.is_dir()]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint of `output_dir`; incomplete ones are skipped with a warning, never loaded."""
    for checkpoint in checkpoint_dirs(output_dir):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning("Skipping %s: %s", checkpoint, problem)
    return None


# Output directory


def mark_finished(output_dir: str | Path, global_step: int) -> None:
    """Mark `output_dir` finished; called once its model, tokenizer, plots and model card are all written."""
    partial = Path(output_dir, f"{FINISHED_NAME}.partial")
    partial.write_text(json.dumps({"global_step": global_step}), encoding="utf-8")
    os.replace(partial, Path(output_dir, FINISHED_NAME))


def is_finished(output_dir: str | Path) -> bool:
    """True when `output_dir` holds a finished run: its `run_finished.json` and its resolved config."""
    return Path(output_dir, FINISHED_NAME).is_file() and Path(output_dir, RESOLVED_CONFIG_NAME).is_file()


def differing_keys(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """`{key: (saved value, current value)}` for the keys that change what a run trains. A key missing from the
    saved recipe reads as its value in `defaults`: the run was saved before the package added that key, so a
    finished run is not "another recipe" after an upgrade that only added keys."""
    defaults = defaults or {}
    saved = {**{key: value for key, value in defaults.items() if key in current}, **saved}
    return {
        key: (saved.get(key), current.get(key))
        for key in sorted(set(saved) | set(current))
        if key not in KEYS_FREE_ACROSS_RUNS and saved.get(key) != current.get(key)
    }


def _describe_differences(differences: dict[str, tuple[Any, Any]], limit: int = 12) -> str:
    lines = [f"  {key}: {old!r} there, {new!r} now" for key, (old, new) in list(differences.items())[:limit]]
    if len(differences) > limit:
        lines.append(f"  ... and {len(differences) - limit} more")
    return "\n".join(lines)


def lock_output_dir(output_dir: str | Path) -> None:
    """Take this run's exclusive lock on `output_dir` (created if needed) for the rest of the process's life.

    Two runs started into one folder would both train and one result would silently replace the other; the second
    is refused, naming the holder. The lock is the operating system's (`flock` on `.run.lock`), so it is released
    on any exit, a kill -9 included: a stale lock file never blocks anyone. Under a multi-process launch rank 0
    takes it for the run (`check_output_dir`).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"`output_dir: {output_dir}` is a file: give a folder (it is created if missing).")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(output_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputDirError(f"`output_dir: {output_dir}` cannot be created or written: {err.strerror}.") from err
    if output_dir.resolve() in _HELD_LOCKS:
        os.close(descriptor)
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        holder = os.read(descriptor, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(descriptor)
        raise OutputDirError(
            f"`output_dir: {output_dir}` is in use by another run ({holder}). Wait for it to end, or give this run "
            "another `output_dir`."
        ) from err
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    _HELD_LOCKS[output_dir.resolve()] = descriptor


def check_output_dir(
    output_dir: str | Path, resolved: dict[str, Any], *, overwrite: bool, defaults: dict[str, Any] | None = None
) -> None:
    """Decide, before anything is written, what this run may do with `output_dir` (see the module doc), holding
    its lock (`lock_output_dir`) from here on.

    Exits 0 when `output_dir` holds a finished run of the same recipe; raises `OutputDirError` when it holds a
    finished run of another recipe, or checkpoints of one, unless `overwrite`; with `overwrite`, removes the previous
    run's checkpoints and finish mark so that nothing of it is resumed or taken for this run's result.
    """
    output_dir = Path(output_dir)
    if PartialState().is_main_process:
        lock_output_dir(output_dir)
    config_path = output_dir / RESOLVED_CONFIG_NAME
    finished = is_finished(output_dir)
    checkpoints = checkpoint_dirs(output_dir)
    if not finished and not checkpoints:
        return
    if overwrite:
        logger.warning("`overwrite_output_dir: true`: replacing the previous run in %s", output_dir)
        state = PartialState()
        if state.is_main_process:
            for checkpoint in checkpoints:
                shutil.rmtree(checkpoint)
            (output_dir / FINISHED_NAME).unlink(missing_ok=True)
        state.wait_for_everyone()
        return
    saved = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    foreign = sorted(set(saved) - set(resolved)) if saved is not None else []
    if foreign:  # keys this stage's recipe cannot have: the folder holds another stage's run
        what = "a finished model" if finished else "checkpoints"
        raise OutputDirError(
            f"{output_dir} holds {what} of another stage (its recipe has {', '.join(foreign[:6])}, which this "
            "stage's has not). Point `output_dir` somewhere else: each stage writes its own folder."
        )
    differences = differing_keys(saved, resolved, defaults) if saved is not None else {}
    if finished and not differences:
        logger.info("%s already holds this stage, finished with the same recipe: nothing to do", output_dir)
        sys.exit(0)
    if finished or differences:
        what = "a finished model" if finished else f"checkpoints ({checkpoints[0].name} newest)"
        raise OutputDirError(
            f"{output_dir} holds {what} of another recipe; it differs in:\n{_describe_differences(differences)}\n"
            "Point `output_dir` somewhere else, or set `overwrite_output_dir: true` to replace that run."
        )
    if saved is None:
        logger.warning("%s holds checkpoints but no %s: resuming without checking the recipe", output_dir, config_path)


# Trainer


def _local_shard(parameter: torch.Tensor) -> torch.Tensor:
    """The part of `parameter` this process holds (its partition under DeepSpeed ZeRO-3)."""
    return getattr(parameter, "ds_tensor", parameter)


class CrashSafeTrainerMixin:
    """Mixed in before a transformers `Trainer` subclass: complete-checkpoint manifests written before old
    checkpoints are rotated away, a finite-loss check on every micro-batch, and no save of non-finite weights."""

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        non_finite = torch.tensor(0.0 if torch.isfinite(loss).all() else 1.0, device=loss.device)
        if self.accelerator.num_processes > 1:  # every process stops together, none waits on a dead peer
            non_finite = self.accelerator.reduce(non_finite, reduction="sum")
        if non_finite.item():
            raise NonFiniteLossError(
                f"The training loss became non-finite at step {self.state.global_step + 1} ({loss.item()} here, "
                f"non-finite on {int(non_finite.item())} of {self.accelerator.num_processes} processes). "
                f"{self._divergence_report(inputs)}"
            )
        return loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(_local_shard(p)).all()]
        count = torch.tensor(float(len(bad)), device=self.args.device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        if count.item():
            raise NonFiniteLossError(
                f"Refusing to save to {output_dir or self.args.output_dir}: {int(count.item())} parameters hold "
                f"NaN or infinite values at step {self.state.global_step} (first: {bad[:3]}). "
                f"{self._divergence_report(None)}"
            )
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial) -> None:
        """transformers' checkpoint, then its manifest, then the rotation of old checkpoints (transformers rotates
        before anything could mark the new one complete)."""
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        self.accelerator.wait_for_everyone()  # every process has written its shards and RNG state
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            write_manifest(Path(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"))
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _divergence_report(self, inputs: dict | None) -> str:
        """The last complete checkpoint and the likely cause, for the error that stops a diverged run."""
        checkpoint = last_complete_checkpoint(self.args.output_dir)
        resume = f"The last complete checkpoint is {checkpoint}" if checkpoint else "No complete checkpoint was saved"
        labels = None if inputs is None else inputs.get("labels")
        if labels is not None and not (labels != -100).any():
            cause = (
                "this batch has no trained token (every label is -100): check `max_length` against the data, and "
                "that the chat template marks the assistant turns"
            )
        elif self.args.fp16:
            cause = "fp16 overflow: train in bf16 (`bf16: true`) or lower `learning_rate`"
        else:
            cause = f"a learning rate too high for this model (`learning_rate: {self.args.learning_rate}`)"
        return f"{resume}; no weights were saved after it. Likely cause: {cause}."
