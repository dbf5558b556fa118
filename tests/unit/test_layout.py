"""The package's architecture, held: which modules sit at the top, which way imports run, which names come from
registries, and that a script's `--help` or a recipe error imports no trainer and no `datasets`."""

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from alignment.search.algorithms import SEARCHES, STEP_VALUED_ALGORITHMS
from alignment.search.config import SearchConfig
from alignment.stages import STAGES
from benchmarks.configs import CONFIGURATIONS
from benchmarks.configs import STAGES as BENCHMARKED_STAGES
from benchmarks.search import HELD_OUT_SEARCHES
from tests.test_multiprocess import CASES
from tests.test_multiprocess import OWN_TEST as MULTIPROCESS_OWN_TEST
from tests.test_real_vocabulary import MISTRAL_RECIPES
from tests.test_real_vocabulary import PENDING as REAL_VOCABULARY_PENDING

from ..conftest import REPO

PACKAGE = REPO / "src" / "alignment"
TOP_LEVEL_MODULES = {"__init__", "stages", "pipeline", "evaluation", "inspect"}
LOWER_LAYERS = {"chat", "data"}  # know nothing of recipes, the runtime or stages
STAGE_PACKAGES = {"sft", "dpo", "reward", "value", "grpo", "pt", "kto", "search"}
# What each layer must not import (a package of the first level of `alignment`, or a top-level module).
FORBIDDEN = {
    "chat": {"data", "recipes", "runtime", *STAGE_PACKAGES, *TOP_LEVEL_MODULES - {"__init__"}},
    "data": {"recipes", "runtime", *STAGE_PACKAGES, *TOP_LEVEL_MODULES - {"__init__"}},
    "recipes": {"runtime", *STAGE_PACKAGES, *TOP_LEVEL_MODULES - {"__init__"}},
    "runtime": {*STAGE_PACKAGES, *TOP_LEVEL_MODULES - {"__init__"}},
}


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every `alignment` import in a module, at any depth (function-level ones too): line, module, names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("alignment"):
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("alignment")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_only_the_entry_points_sit_at_the_top():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL_MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path):
    here = module_of(path).split(".")
    layer = here[1] if len(here) > 1 else None
    wrong = []
    for line, module, names in imports(path):
        target = module.split(".")
        first = target[1] if len(target) > 1 else None
        if first in FORBIDDEN.get(layer, ()):
            wrong.append(f"line {line}: {module} ({layer} must not import {first})")
        if first != layer and any(name.startswith("_") for name in names):
            wrong.append(f"line {line}: a private name of {module}: {names}")
    assert not wrong, "\n".join(wrong)


def test_the_layer_rules_name_every_package():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == {"chat", "data", "recipes", "runtime"} | STAGE_PACKAGES
    assert LOWER_LAYERS <= set(FORBIDDEN)


def test_every_stage_unit_is_its_registered_stage():
    for name, entry in STAGES.items():
        assert (entry.stage.name, entry.stage.config_class) == (name, entry.config_class)
        assert entry.config_class.__module__ == f"{entry.unit.partition(':')[0].rpartition('.')[0]}.config"
    scripts = {p.stem.removeprefix("run_") for p in (REPO / "scripts").glob("run_*.py") if "STAGES[" in p.read_text()}
    assert scripts == set(STAGES)


def test_enumerations_of_stages_and_searches_match_their_registries():
    """Tests and benchmarks that must list stages or searches by hand cover exactly the registered ones."""
    assert {stage for stage, _, _ in CASES.values()} | set(MULTIPROCESS_OWN_TEST) == set(STAGES)
    assert set(MISTRAL_RECIPES) | set(REAL_VOCABULARY_PENDING) == set(STAGES)
    assert set(BENCHMARKED_STAGES) == {c.stage for c in CONFIGURATIONS} and set(BENCHMARKED_STAGES) <= set(STAGES)
    algorithms = {overrides[overrides.index("--algorithm") + 1] for overrides in HELD_OUT_SEARCHES.values()}
    assert algorithms == set(SEARCHES)
    assert typing.get_args(typing.get_type_hints(SearchConfig)["algorithm"]) == tuple(SEARCHES)
    assert set(STEP_VALUED_ALGORITHMS) <= set(SEARCHES)


LIGHT_START = """
import json, runpy, sys
for script, argv in json.loads(sys.argv[1]):
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, 2), (script, argv, exit.code)
heavy = [m for m in sys.modules if m == "datasets" or m.endswith("_trainer") or m == "transformers.trainer"
         or m.startswith("alignment.") and m.rpartition(".")[2] in ("trainer", "stage", "mixture", "modeling")]
print(json.dumps(sorted(heavy)))
"""


def test_help_and_a_recipe_error_import_no_trainer_and_no_datasets(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model_name_or_path: base\nlearning_rat: 1.0e-3\noutput_dir: out\n")
    runs = [(entry.script, argv) for entry in STAGES.values() for argv in (["--help"], [str(typo)])]
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_START, json.dumps(runs)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert result.stderr.count("error: RecipeError: Unknown recipe key `learning_rat`") == len(STAGES)
