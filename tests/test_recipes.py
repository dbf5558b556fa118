"""Every shipped recipe parses against its stage's dataclasses (`alignment.stages`), which its script parses too;
every accelerate config loads with accelerate."""

import importlib.util
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from alignment.recipes.parser import RecipeParser
from alignment.stages import STAGES, stage_of_recipe

from .conftest import REPO

RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if stage_of_recipe(p) is not None)
ACCELERATE_CONFIGS = sorted((REPO / "recipes" / "accelerate_configs").glob("*.yaml"))


def script_dataclasses(script: str) -> tuple:
    """The dataclass tuple a stage script parses its recipe into."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE_DATACLASSES


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_script_parses_its_stage_recipe(name: str):
    stage = STAGES[name]
    assert stage.name == name
    assert script_dataclasses(stage.script) == stage.recipe_dataclasses


def is_pipeline_recipe(path: Path) -> bool:
    """A recipe of `scripts/run_pipeline.py`: its stages in order (tests/test_pipeline.py parses them)."""
    return "stages" in (yaml.safe_load(path.read_text()) or {})


def test_every_recipe_folder_is_covered():
    # Search recipes (`recipes/<model>/<...>/search/`) are `scripts/run_search.py`'s, parsed in tests/test_search.py.
    stray = [
        p
        for p in (REPO / "recipes").rglob("*.yaml")
        if stage_of_recipe(p) is None
        and p.parent.name not in ("accelerate_configs", "search")
        and not is_pipeline_recipe(p)
    ]
    assert not stray, f"recipes outside recipes/<model>/<stage>/: {stray}"
    assert any(p.parent.name == "sft" for p in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_parses_strictly(recipe: Path):
    parser = RecipeParser(stage_of_recipe(recipe).recipe_dataclasses)
    configs = parser.parse([str(recipe)])
    # Every key the recipe writes reaches a dataclass with the value it wrote (none is dropped or renamed).
    written = parser.read_recipe(recipe)
    values = {name: getattr(config, name) for config in configs for name in written if hasattr(config, name)}
    assert set(values) == set(written)


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(config: Path):
    loaded = load_config_from_file(str(config))
    assert loaded.num_processes == 8
    assert loaded.mixed_precision == "bf16"


def test_shipped_accelerate_configs():
    assert {p.name for p in ACCELERATE_CONFIGS} >= {"deepspeed_zero3.yaml", "multi_gpu.yaml", "fsdp.yaml"}
