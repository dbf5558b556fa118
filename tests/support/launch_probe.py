"""Test-only wrapper: `accelerate launch tests/support/launch_probe.py scripts/run_X.py ARGS...` runs the script
unchanged and records, for each rank, what it trained on.

`PROBE_DIR/rank<N>.jsonl` gets one line per training micro-batch: the step, the world size the trainer saw, the class
of the DPO reference model (or null), and a fingerprint per example (a hash of its unpadded tokens, so a batch of 8
in one process and two batches of 4 in two processes give the same fingerprints for the same examples).

`PROBE_KILL_AFTER_CHECKPOINTS=N` makes the process SIGKILL itself right after its N-th checkpoint is complete;
`PROBE_KILL_IN_CHECKPOINT=N` kills it in the middle of writing its N-th checkpoint (after the model and optimizer,
before the RNG state, the trainer state and the manifest): a preempted node, at a chosen moment.

`PROBE_SIGNAL_AT_STEP=SIGTERM:3` makes the process send itself SIGTERM (or SIGINT) in the middle of the optimizer
step that follows step 3, once; `SIGTERM:3:2` sends it twice: a preemption, or an impatient second Ctrl-C.

`PROBE_KEEP_CPU_SWITCH=0` disables the scripts' switch to `use_cpu` on machines without an accelerator, which
recreates the silent one-copy-per-process launch that `alignment.runtime.lifecycle.check_world_size` must stop.
"""

import hashlib
import json
import os
import runpy
import signal
import sys
from pathlib import Path

import torch
import transformers

import alignment.recipes.arguments
import alignment.runtime.reliability


def _fingerprints(inputs: dict) -> list[str]:
    """One hash per example over every `*input_ids` field, keeping only the positions its mask marks; for GRPO, whose
    trainer samples the completions inside the step, one hash per prompt; for a padding-free batch (one row, no
    attention mask), one hash per sequence in it, which starts where its position ids restart at 0."""
    if isinstance(inputs, list):  # GRPO's rows before generation: the prompts, one per completion to sample
        return [hashlib.sha1(json.dumps(row["prompt"]).encode()).hexdigest()[:16] for row in inputs]
    if "position_ids" in inputs and "attention_mask" not in inputs:
        starts = (inputs["position_ids"][0] == 0).nonzero().flatten().tolist()
        pieces = [inputs["input_ids"][0][start:end] for start, end in zip(starts, [*starts[1:], None], strict=True)]
        return [_fingerprints({"input_ids": piece[None]})[0] for piece in pieces]
    keys = sorted(k for k, v in inputs.items() if isinstance(v, torch.Tensor) and k.endswith("input_ids"))
    digests = [hashlib.sha1() for _ in range(len(inputs[keys[0]]))]
    for key in keys:
        mask = inputs.get(key.replace("input_ids", "attention_mask"))
        for row, digest in enumerate(digests):
            ids = inputs[key][row] if mask is None else inputs[key][row][mask[row].bool()]
            digest.update(key.encode() + b":" + ",".join(map(str, ids.tolist())).encode() + b";")
    return [d.hexdigest()[:16] for d in digests]


def _recording(training_step):
    def wrapped(self, model, inputs, *args, **kwargs):
        reference = getattr(self, "ref_model", None)
        record = {
            "step": self.state.global_step,
            "world_size": self.args.world_size,
            "reference": None if reference is None else type(reference).__name__,
            "examples": _fingerprints(inputs),
        }
        with Path(os.environ["PROBE_DIR"], f"rank{self.args.process_index}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        _signal_at(self.state.global_step)
        return training_step(self, model, inputs, *args, **kwargs)

    return wrapped


_SIGNALLED = []


def _signal_at(step: int) -> None:
    """`PROBE_SIGNAL_AT_STEP`'s signal, sent to this process the first time training reaches `step`."""
    name, at, *count = os.environ.get("PROBE_SIGNAL_AT_STEP", "::").split(":")
    if name and step == int(at) and not _SIGNALLED:
        _SIGNALLED.append(step)
        for _ in range(int(count[0]) if count else 1):
            os.kill(os.getpid(), getattr(signal, name))


def _killing_on_call(function, calls: int, *, after: bool):
    """`function`, made to SIGKILL this process at its `calls`-th call (before or after running it)."""
    seen = []

    def wrapped(*args, **kwargs):
        seen.append(1)
        if not after and len(seen) == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        result = function(*args, **kwargs)
        if after and len(seen) == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapped


if __name__ == "__main__":
    transformers.Trainer.training_step = _recording(transformers.Trainer.training_step)
    if "PROBE_KILL_AFTER_CHECKPOINTS" in os.environ:
        calls = int(os.environ["PROBE_KILL_AFTER_CHECKPOINTS"])
        reliability = alignment.runtime.reliability
        reliability.write_manifest = _killing_on_call(reliability.write_manifest, calls, after=True)
    if "PROBE_KILL_IN_CHECKPOINT" in os.environ:
        calls = int(os.environ["PROBE_KILL_IN_CHECKPOINT"])
        trainer = transformers.Trainer
        trainer._save_rng_state = _killing_on_call(trainer._save_rng_state, calls, after=False)
    if os.environ.get("PROBE_KEEP_CPU_SWITCH", "1") == "0":
        alignment.recipes.arguments.use_cpu_without_accelerator = lambda config: None
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path.insert(0, str(Path(script).parent))
    runpy.run_path(script, run_name="__main__")
