"""Crash safety, end to end: a run killed with SIGKILL and started again ends exactly as if never interrupted,
checkpoints cut off mid-write are skipped, finished outputs are never overwritten, and a diverged run stops without
saving NaN weights; SIGTERM or SIGINT saves where the run stopped; two runs never share an output folder. Each run
goes through `tests/support/launch_probe.py`, which records the examples of every step and
kills the process at a chosen moment."""

import shutil
import signal
import subprocess

import pytest
import torch
import yaml

from alignment.runtime.preemption import PREEMPTED_EXIT_STATUS
from alignment.runtime.reliability import (
    FINISHED_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    RESOLVED_CONFIG_NAME,
    checkpoint_problem,
)
from alignment.stages import STAGES

from .conftest import REPO, logged_losses, probe_records, run_stage, saved_weights, stage_command

pytestmark = pytest.mark.slow

# 8 steps of batch 8, a complete checkpoint every 2 steps.
RUN = [
    *["--max_steps", "8", "--per_device_train_batch_size", "8", "--logging_steps", "1", "--eval_strategy", "no"],
    *["--eval_on_start", "false", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "3"],
]
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tiny_world, tmp_path_factory):
    """stage -> (output_dir, probe records) of a run never interrupted, computed once per stage."""
    runs = {}

    def get(stage: str):
        if stage not in runs:
            output_dir = tmp_path_factory.mktemp(f"{stage}_uninterrupted") / "out"
            result, probe_dir = run_stage(stage, tiny_world, output_dir, *RUN)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[stage] = output_dir, probe_records(probe_dir)
        return runs[stage]

    return get


def assert_same_run(output_dir, probe_dir, expected_dir, expected_steps):
    """Same examples at every step (none twice, none skipped), same logged losses, same final weights."""
    steps = probe_records(probe_dir)
    assert sorted(steps) == sorted(expected_steps)
    for step, ranks in steps.items():
        assert ranks["rank0"]["examples"] == expected_steps[step]["rank0"]["examples"], f"step {step}"
    assert logged_losses(output_dir) == logged_losses(expected_dir)
    resumed, expected = saved_weights(output_dir), saved_weights(expected_dir)
    assert resumed.keys() == expected.keys() and expected
    assert max((resumed[key] - tensor).abs().max().item() for key, tensor in expected.items()) == 0.0


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_killed_after_its_second_checkpoint_resumes_to_the_same_weights(
    stage, tiny_world, tmp_path, uninterrupted
):
    expected_dir, expected_steps = uninterrupted(stage)
    output_dir = tmp_path / "out"
    killed, probe_dir = run_stage(stage, tiny_world, output_dir, *RUN, extra_env={"PROBE_KILL_AFTER_CHECKPOINTS": "2"})
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (output_dir / LOCK_NAME).is_file()  # the killed run's lock file, which must not block the next run

    resumed, _ = run_stage(stage, tiny_world, output_dir, *RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {output_dir / 'checkpoint-4'}" in resumed.stdout
    assert_same_run(output_dir, probe_dir, expected_dir, expected_steps)


def test_checkpoints_cut_off_or_truncated_are_skipped_never_loaded(tiny_world, tmp_path, uninterrupted):
    expected_dir, expected_steps = uninterrupted("sft")
    output_dir = tmp_path / "out"
    killed, probe_dir = run_stage("sft", tiny_world, output_dir, *RUN, extra_env={"PROBE_KILL_IN_CHECKPOINT": "3"})
    assert killed.returncode == KILLED
    assert not (output_dir / "checkpoint-6" / MANIFEST_NAME).exists()  # killed while writing it
    weights = output_dir / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # and one cut by hand

    another_recipe, _ = run_stage("sft", tiny_world, output_dir, *RUN, "--learning_rate", "1e-4")
    assert another_recipe.returncode != 0
    assert "holds checkpoints (checkpoint-6 newest) of another recipe" in another_recipe.stderr
    assert "learning_rate: 0.003 there, 0.0001 now" in another_recipe.stderr

    resumed, _ = run_stage("sft", tiny_world, output_dir, *RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Skipping {output_dir / 'checkpoint-6'}: no {MANIFEST_NAME}" in resumed.stdout
    assert f"Skipping {output_dir / 'checkpoint-4'}: model.safetensors has" in resumed.stdout
    assert f"Resuming from {output_dir / 'checkpoint-2'}" in resumed.stdout
    assert_same_run(output_dir, probe_dir, expected_dir, expected_steps)


def test_a_finished_output_is_reported_complete_refused_or_overwritten(tiny_world, tmp_path, uninterrupted):
    expected_dir, _ = uninterrupted("sft")
    output_dir = tmp_path / "out"
    shutil.copytree(expected_dir, output_dir)
    weights = output_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    # A run saved before the package added a key (here `txt_documents`) used that key's default: still the same recipe
    saved = yaml.safe_load((output_dir / RESOLVED_CONFIG_NAME).read_text())
    del saved["txt_documents"]
    (output_dir / RESOLVED_CONFIG_NAME).write_text(yaml.safe_dump(saved))

    same, _ = run_stage("sft", tiny_world, output_dir, *RUN)
    assert same.returncode == 0
    assert f"{output_dir} already holds this stage, finished with the same recipe: nothing to do" in same.stdout
    other, _ = run_stage("sft", tiny_world, output_dir, *RUN, "--max_steps", "4")
    assert other.returncode != 0
    assert f"{output_dir} holds a finished model of another recipe" in other.stderr
    assert "max_steps: 8 there, 4 now" in other.stderr and "overwrite_output_dir: true" in other.stderr
    assert weights.stat().st_mtime_ns == before

    overwritten, _ = run_stage(
        "sft", tiny_world, output_dir, *RUN, "--max_steps", "4", "--overwrite_output_dir", "true"
    )
    assert overwritten.returncode == 0, overwritten.stderr[-3000:]
    assert "Resuming" not in overwritten.stdout  # the old run's checkpoints were removed, not resumed
    assert len(logged_losses(output_dir)) == 4 and weights.stat().st_mtime_ns != before


def test_a_diverging_run_stops_naming_the_step_and_saves_no_nan_weights(tiny_world, tmp_path):
    output_dir = tmp_path / "out"
    result, _ = run_stage("sft", tiny_world, output_dir, *RUN, "--learning_rate", "1e30")
    assert result.returncode != 0
    assert "NonFiniteLossError: The training loss became non-finite at step 4" in result.stderr
    assert f"The last complete checkpoint is {output_dir / 'checkpoint-2'}" in result.stderr
    assert "Likely cause: a learning rate too high for this model (`learning_rate: 1e+30`)" in result.stderr
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "run_finished.json").exists()
    for checkpoint in output_dir.glob("checkpoint-*"):
        assert all(torch.isfinite(tensor).all() for tensor in saved_weights(checkpoint).values()), checkpoint


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_saves_where_it_stopped_and_the_rerun_ends_the_same(
    name, tiny_world, tmp_path, uninterrupted
):
    """A preemption (SIGTERM) or Ctrl-C (SIGINT) during step 3: that step finishes, a complete checkpoint is saved at
    it (not at the periodic step 4), one line says so, and the same command resumes to the uninterrupted weights."""
    expected_dir, expected_steps = uninterrupted("sft")
    output_dir = tmp_path / "out"
    stopped, probe_dir = run_stage(
        "sft", tiny_world, output_dir, *RUN, extra_env={"PROBE_SIGNAL_AT_STEP": f"{name}:2"}
    )
    assert stopped.returncode == PREEMPTED_EXIT_STATUS, stopped.stderr[-3000:]
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert checkpoint_problem(output_dir / "checkpoint-3") is None
    line = f"stopped: Stopped by {name} at step 3: checkpoint {output_dir / 'checkpoint-3'} is complete."
    assert stopped.stderr.count(line) == 1 and stopped.stderr.count("stopped: ") == 1
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert not (output_dir / FINISHED_NAME).exists()

    resumed, _ = run_stage("sft", tiny_world, output_dir, *RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {output_dir / 'checkpoint-3'}" in resumed.stdout
    assert_same_run(output_dir, probe_dir, expected_dir, expected_steps)


def test_a_second_signal_exits_at_once(tiny_world, tmp_path):
    output_dir = tmp_path / "out"
    stopped, _ = run_stage("sft", tiny_world, output_dir, *RUN, extra_env={"PROBE_SIGNAL_AT_STEP": "SIGTERM:2:2"})
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert not (output_dir / "checkpoint-3").exists()


def test_two_runs_started_into_one_output_dir_exactly_one_proceeds(tiny_world, tmp_path):
    output_dir = tmp_path / "out"
    command, env, _ = stage_command("sft", tiny_world, output_dir, *RUN, "--max_steps", "2")
    runs = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = sorted((run.wait(timeout=600), run.stderr.read()) for run in runs)
    (finished, _), (refused, message) = results
    assert (finished, refused) == (0, 2), message[-3000:]
    assert message.count(f"error: OutputDirError: `output_dir: {output_dir}` is in use by another run (pid ") == 1
    assert len(logged_losses(output_dir)) == 2
