"""The registry of training stages: name -> the stage unit (`alignment.stage.Stage`) its script, the benchmarks,
`alignment.inspect`, the pipeline and the recipe tests build from. A stage's name is its recipe folder:
`recipes/<model>/<name>/config_*.yaml` is a recipe for `STAGES[name]`, run by `STAGES[name].script`."""

from __future__ import annotations

from pathlib import Path

from alignment.dpo import DPO
from alignment.reward import REWARD
from alignment.sft import SFT
from alignment.stage import Stage
from alignment.value import VALUE

STAGES: dict[str, Stage] = {stage.name: stage for stage in (SFT, DPO, REWARD, VALUE)}


def stage_of_recipe(recipe: str | Path) -> Stage | None:
    """The stage a recipe is for, from its folder name; None when the folder is not a stage's."""
    return STAGES.get(Path(recipe).parent.name)
