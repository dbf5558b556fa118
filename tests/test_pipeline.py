"""The pipeline runner: stages in order, finished ones reported complete, a failure stops it naming the stage."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignment.pipeline import PipelineConfig, run_pipeline, stage_output_dir
from alignment.recipes.parser import RecipeParser
from alignment.runtime.preemption import PREEMPTED_EXIT_STATUS

from .conftest import REPO

# A stand-in stage script: exits 0 when its run is finished (as `check_output_dir` does for the same recipe), else
# records that it ran and finishes its run as `save_and_card` does (finish mark last).
FAKE_STAGE = """
import sys, pathlib, yaml
recipe = yaml.safe_load(open(sys.argv[1]))
out = pathlib.Path(recipe["output_dir"])
if (out / "run_finished.json").is_file():
    sys.exit(0)
if recipe.get("fail"):
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
with open(recipe["journal"], "a") as journal:
    journal.write(recipe["name"] + "\\n")
(out / "resolved_config.yaml").write_text("x: 1\\n")
(out / "run_finished.json").write_text("{}")
"""


def make_stage(tmp_path, name: str, **extra) -> dict:
    stage_dir = tmp_path / name
    stage_dir.mkdir()
    recipe = stage_dir / "config.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"name": name, "output_dir": str(tmp_path / "out" / name), "journal": str(tmp_path / "journal"), **extra}
        )
    )
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE)
    return {"recipe": str(recipe), "script": str(script)}


def test_stages_run_in_order_and_finished_ones_are_not_retrained(tmp_path):
    config = PipelineConfig(stages=[make_stage(tmp_path, "sft"), make_stage(tmp_path, "dpo")], launcher=sys.executable)
    first = run_pipeline(config)
    assert [(r["stage"], r["status"]) for r in first] == [("sft", "trained"), ("dpo", "trained")]
    assert (tmp_path / "journal").read_text().split() == ["sft", "dpo"]

    # The second stage's run was cut off before its end (no finish mark): only it runs again.
    (tmp_path / "out" / "dpo" / "run_finished.json").unlink()
    second = run_pipeline(config)
    assert [(r["stage"], r["status"]) for r in second] == [("sft", "complete"), ("dpo", "trained")]
    assert (tmp_path / "journal").read_text().split() == ["sft", "dpo", "dpo"]


def test_a_failing_stage_stops_the_pipeline_naming_it(tmp_path):
    stages = [make_stage(tmp_path, "sft", fail=True), make_stage(tmp_path, "dpo")]
    with pytest.raises(RuntimeError, match=r"Stage sft failed \(exit 3\).*resumes from its last complete checkpoint"):
        run_pipeline(PipelineConfig(stages=stages, launcher=sys.executable))
    assert not (tmp_path / "journal").exists()


def test_bad_pipeline_recipes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="`stages` is empty"):
        PipelineConfig(stages=[])
    with pytest.raises(ValueError, match=r"stages\[0\] has unknown keys \['recipie'\]"):
        PipelineConfig(stages=[{"recipe": "x.yaml", "recipie": "y"}])
    with pytest.raises(ValueError, match=r"stages\[0\]\.recipe missing\.yaml does not exist"):
        PipelineConfig(stages=[{"recipe": "missing.yaml"}])


def test_shipped_tiny_pipeline_chains_the_four_stages(monkeypatch):
    monkeypatch.chdir(REPO)
    (config,) = RecipeParser((PipelineConfig,)).parse(["recipes/tiny/pipeline.yaml"])
    assert [stage["script"] for stage in config.stages] == [
        "scripts/run_sft.py",
        "scripts/run_dpo.py",
        "scripts/run_rm.py",
        "scripts/run_value.py",
    ]
    sft = yaml.safe_load(open(config.stages[0]["recipe"]))
    dpo = yaml.safe_load(open(config.stages[1]["recipe"]))
    assert dpo["model_name_or_path"] == sft["output_dir"]  # the SFT output is the DPO policy and reference
    assert json.dumps(sft["dataset_mixer"]) == json.dumps({"data/tiny/sft_teacher": 1.0})


def test_shipped_pt_sft_dpo_pipeline_starts_each_stage_from_the_one_before(monkeypatch):
    monkeypatch.chdir(REPO)
    (config,) = RecipeParser((PipelineConfig,)).parse(["recipes/tiny/pt_sft_dpo.yaml"])
    assert [stage["script"] for stage in config.stages] == [
        "scripts/run_pt.py",
        "scripts/run_sft.py",
        "scripts/run_dpo.py",
    ]
    outputs = [stage_output_dir(stage) for stage in config.stages]
    assert len(set(outputs)) == 3
    for before, stage in zip(outputs, config.stages[1:], strict=False):
        overrides = stage["overrides"]
        assert overrides[overrides.index("--model_name_or_path") + 1] == before


def test_the_pipeline_seed_overrides_every_stage(tmp_path):
    """`seed` (`make demo SEED=1`) is passed last to every stage, so it wins over the recipe and the overrides."""
    script = tmp_path / "argv_stage.py"
    script.write_text("import sys\nopen(sys.argv[1] + '.argv', 'w').write(' '.join(sys.argv[2:]))\n")
    stages = [
        {"recipe": make_stage(tmp_path, "sft")["recipe"], "script": str(script), "overrides": ["--seed", "0"]},
        {"recipe": make_stage(tmp_path, "dpo")["recipe"], "script": str(script)},
    ]
    run_pipeline(PipelineConfig(stages=stages, launcher=sys.executable, seed=7))
    assert (tmp_path / "sft" / "config.yaml.argv").read_text() == "--seed 0 --seed 7"
    assert (tmp_path / "dpo" / "config.yaml.argv").read_text() == "--seed 7"
    run_pipeline(PipelineConfig(stages=stages[1:], launcher=sys.executable))
    assert (tmp_path / "dpo" / "config.yaml.argv").read_text() == ""


# A stage that runs until it is signalled, then records the signal and exits as a preempted stage does.
SIGNALLED_STAGE = """
import pathlib, signal, sys, time, yaml
recipe = yaml.safe_load(open(sys.argv[1]))
journal = pathlib.Path(recipe["journal"])
def stop(signum, frame):
    with journal.open("a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
journal.write_text("started\\n")
time.sleep(120)
"""


def test_a_signalled_pipeline_passes_the_signal_to_its_stage_once_and_says_so(tmp_path):
    stage = make_stage(tmp_path, "sft")
    Path(stage["script"]).write_text(SIGNALLED_STAGE)
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump({"stages": [stage], "output_dir": str(tmp_path / "pipeline")}))
    pipeline = subprocess.Popen(
        [sys.executable, "scripts/run_pipeline.py", str(recipe)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / "journal"
    deadline = time.monotonic() + 120
    while not (journal.is_file() and journal.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    pipeline.send_signal(signal.SIGTERM)
    _, stderr = pipeline.communicate(timeout=120)
    assert pipeline.returncode == PREEMPTED_EXIT_STATUS, stderr[-3000:]
    assert journal.read_text().split() == ["started", "SIGTERM"]  # passed on once
    assert stderr.count("stopped: Stage sft was stopped after") == 1 and "Traceback" not in stderr
