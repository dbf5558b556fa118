"""The registry of training stages: the one place a stage's name is written.

Each entry names a stage (its recipe folder: `recipes/<model>/<name>/config_*.yaml` is a recipe for `STAGES[name]`),
its config class and its `Stage` subclass, by import path. The scripts, the benchmarks, `alignment.inspect`, the
pipeline and the tests take every list of stages from here. Entries are imported only when used, so that a script's
`--help` and a recipe error import the stage's config alone, never its trainer, TRL's trainers or `datasets`:

    scripts/run_sft.py:  run_cli(STAGES["sft"].run)   # parse with SFTConfig; only a valid recipe imports SFTStage

To add a stage: a package `alignment/<stage>/` (config.py, rows, trainer.py, stage.py with a `Stage` subclass), one
`StageEntry` below, `scripts/run_<name>.py` and `recipes/tiny/<name>/config.yaml`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from alignment.recipes.arguments import DataArguments, ModelArguments, Recipe
from alignment.recipes.parser import RecipeParser

if TYPE_CHECKING:
    from alignment.runtime.stage import Stage


def import_object(path: str) -> object:
    """The object a `package.module:name` path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageEntry:
    """A registered stage: its name, and where its config class and its `Stage` subclass live."""

    name: str
    config: str  # `module:class` of the stage's training config (light: a dataclass over TRL's config)
    unit: str  # `module:class` of the stage's `Stage` subclass (imports its trainer)

    @property
    def script(self) -> str:
        """The stage's script, relative to the repository root."""
        return f"scripts/run_{self.name}.py"

    @cached_property
    def config_class(self) -> type:
        return import_object(self.config)

    @property
    def recipe_dataclasses(self) -> tuple[type, ...]:
        """Every key of a recipe for this stage is a field of one of these."""
        return (ModelArguments, DataArguments, self.config_class)

    def parse(self, argv: list[str] | None = None) -> Recipe:
        """The recipe in `argv` (or the command line), parsed strictly (`alignment.recipes.parser`)."""
        return Recipe(*RecipeParser(self.recipe_dataclasses).parse(argv))

    @cached_property
    def stage(self) -> Stage:
        """The stage's one unit, imported on first use."""
        return import_object(self.unit)(self.name, self.config_class)

    def run(self, argv: list[str] | None = None) -> None:
        """The stage's script: parse the recipe first, then import the stage and run it (`Stage.run`)."""
        recipe = self.parse(argv)
        self.stage.run(recipe)


STAGES: dict[str, StageEntry] = {
    entry.name: entry
    for entry in (
        StageEntry("sft", config="alignment.sft.config:SFTConfig", unit="alignment.sft.stage:SFTStage"),
        StageEntry("dpo", config="alignment.dpo.config:DPOConfig", unit="alignment.dpo.stage:DPOStage"),
        StageEntry("rm", config="alignment.reward.config:RewardConfig", unit="alignment.reward.stage:RewardStage"),
        StageEntry("value", config="alignment.value.config:ValueConfig", unit="alignment.value.stage:ValueStage"),
        StageEntry("grpo", config="alignment.grpo.config:GRPOConfig", unit="alignment.grpo.stage:GRPOStage"),
        StageEntry("pt", config="alignment.pt.config:PTConfig", unit="alignment.pt.stage:PTStage"),
        StageEntry("kto", config="alignment.kto.config:KTOConfig", unit="alignment.kto.stage:KTOStage"),
    )
}


def stage_of_recipe(recipe: str | Path) -> StageEntry | None:
    """The stage a recipe is for, from its folder name; None when the folder is not a stage's."""
    return STAGES.get(Path(recipe).parent.name)
