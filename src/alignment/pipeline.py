"""Run several stages one after another, each as the command a user would type, skipping what is already done.

A pipeline recipe lists stages; each stage is a stage script (by default the one of the recipe folder's stage in
`alignment.stages`) with a recipe and optional overrides. Stages run in order as separate processes, so each gets a
fresh interpreter and exactly the behaviour of a manual run (logging, resolved config, resume). Every stage is started:
one whose `output_dir` holds a run finished with the same recipe reports it complete and exits 0, one finished with
another recipe stops the pipeline naming the keys that differ (`alignment.runtime.reliability.check_output_dir`), and
an interrupted one resumes from its newest complete checkpoint on its own. A stage that fails stops the pipeline with
`StageFailedError`, which names the stage; the stage's own message is already in the log above it.

    stages:
      - recipe: recipes/tiny/sft/config.yaml
      - recipe: recipes/tiny/dpo/config.yaml
        overrides: [--beta, "0.5"]
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.runtime.cli import StageFailedError
from alignment.runtime.preemption import PREEMPTED_EXIT_STATUS, STOP_SIGNALS, Preempted
from alignment.runtime.reliability import is_finished
from alignment.stages import STAGES, stage_of_recipe

logger = logging.getLogger(__name__)

STAGE_KEYS = ("recipe", "script", "overrides")


@dataclass
class PipelineConfig:
    """A pipeline recipe: the stages to run in order, and how to launch them."""

    stages: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Stages in order: `{recipe, script (default: the script of the recipe folder's stage, e.g. "
            "scripts/run_sft.py for recipes/<model>/sft/), overrides}`."
        },
    )
    launcher: str = field(
        default=sys.executable,
        metadata={
            "help": "Command that runs a stage script, e.g. `accelerate launch --num_processes 2`; default: this "
            "Python."
        },
    )
    output_dir: str = field(default="outputs/pipeline", metadata={"help": "Where the pipeline writes its summary."})
    seed: int | None = field(
        default=None,
        metadata={
            "help": "Every stage's `seed`, over its recipe's and its overrides' (`make demo SEED=1`); None: each "
            "stage keeps its own."
        },
    )

    def __post_init__(self):
        if not self.stages:
            raise ValueError("`stages` is empty: list at least one `{recipe: ...}`.")
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, dict) or "recipe" not in stage:
                raise ValueError(f"stages[{index}] must be a mapping with a `recipe`, got {stage!r}")
            unknown = sorted(set(stage) - set(STAGE_KEYS))
            if unknown:
                raise ValueError(f"stages[{index}] has unknown keys {unknown}; valid: {list(STAGE_KEYS)}")
            if not Path(stage["recipe"]).is_file():
                raise ValueError(f"stages[{index}].recipe {stage['recipe']} does not exist")
            if "script" not in stage:
                known = stage_of_recipe(stage["recipe"])
                if known is None:
                    raise ValueError(
                        f"stages[{index}].recipe {stage['recipe']} is not in a stage's folder "
                        f"(recipes/<model>/<{'|'.join(STAGES)}>/): name its `script`"
                    )
                stage["script"] = known.script
            script = stage["script"]
            if not Path(script).is_file():
                raise ValueError(f"stages[{index}].script {script} does not exist")
            stage.setdefault("overrides", [])


def stage_output_dir(stage: dict[str, Any]) -> str:
    """The stage's `output_dir`: from its overrides when given there, else from its recipe."""
    overrides = [str(item) for item in stage["overrides"]]
    if "--output_dir" in overrides:
        return overrides[overrides.index("--output_dir") + 1]
    recipe = RecipeParser.read_recipe(stage["recipe"])
    if "output_dir" not in recipe:
        raise RecipeError(f"{stage['recipe']} sets no `output_dir`: the pipeline needs it to chain stages")
    return recipe["output_dir"]


def run_forwarding_stop_signals(command: list[str]) -> int:
    """Run one stage's command and return its exit status, passing SIGTERM and SIGINT on to it, once each.

    The stage runs in a session of its own, so that Ctrl-C reaches it only through this forwarding (the terminal
    would otherwise signal it too, and a second signal stops a stage at once instead of after its checkpoint)."""
    process = subprocess.Popen(command, start_new_session=True)
    previous = {stop: signal.signal(stop, lambda signum, frame: process.send_signal(signum)) for stop in STOP_SIGNALS}
    try:
        return process.wait()
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def run_pipeline(config: PipelineConfig) -> list[dict[str, Any]]:
    """Run every stage in order; return one record per stage (name, output_dir, status, seconds)."""
    records = []
    for stage in config.stages:
        name = Path(stage["recipe"]).parent.name
        output_dir = stage_output_dir(stage)
        was_finished = is_finished(output_dir)
        overrides = [*map(str, stage["overrides"]), *(["--seed", str(config.seed)] if config.seed is not None else [])]
        command = [*shlex.split(config.launcher), stage["script"], stage["recipe"], *overrides]
        logger.info("Stage %s: %s", name, shlex.join(command))
        start = time.perf_counter()
        returncode = run_forwarding_stop_signals(command)
        seconds = time.perf_counter() - start
        if returncode == PREEMPTED_EXIT_STATUS:
            raise Preempted(
                f"Stage {name} was stopped after {seconds:.0f} s and saved where it stopped (its line above). Run the "
                f"pipeline again: finished stages are not retrained and {name} resumes."
            )
        if returncode != 0:
            raise StageFailedError(
                f"Stage {name} failed (exit {returncode}) after {seconds:.0f} s; its log is above. Fix the "
                f"cause and run the pipeline again: finished stages are not retrained and {name} resumes from its "
                "last complete checkpoint."
            )
        status = "complete" if was_finished else "trained"
        records.append({"stage": name, "output_dir": output_dir, "status": status, "seconds": seconds})
        logger.info("Stage %s: done in %.0f s", name, seconds)
    return records
