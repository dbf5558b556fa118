"""`scripts/run_search.py` end to end on the tiny world: every algorithm writes value traces, SFT rows and a summary
in the forms the next stages read; a run killed midway and resumed writes exactly what an uninterrupted run writes;
a finished run is reported complete, and another recipe on its folder is refused.

The policy is the tiny world's random Llama and the value model its body with a fresh head: the test is about the
plumbing, not about search quality (`benchmarks/search.py` measures that). So that the random traces have both
verdicts, the verifier here accepts a reply of even length (`even_reply`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignment.data.mixture import load_mixture
from alignment.recipes.arguments import DataArguments
from alignment.value.rows import value_row_problem
from tiny_world.chains import write_chain_data

from .conftest import REPO

pytestmark = pytest.mark.slow
# The scripts import the test verifier `tests.test_search:even_reply` from the repository root.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )


def even_reply(prompt: list[dict], reply: str) -> bool:
    """A verifier for random policies: accepts a reply of even length (about half of them)."""
    return len(reply) % 2 == 0


@pytest.fixture(scope="module")
def search_world(tiny_world, tmp_path_factory) -> Path:
    """Chain prompts, and a value model: the tiny world's base body with a new value head, saved as run_value saves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.value.modeling import ValueHead, ValueModel, save_value_model

    root = tmp_path_factory.mktemp("search")
    write_chain_data(root / "chains", num_train=40, num_test=12)
    body = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    torch.manual_seed(0)
    save_value_model(ValueModel(body, ValueHead(body.config.hidden_size, seed=0)), root / "value")
    AutoTokenizer.from_pretrained(tiny_world / "base").save_pretrained(root / "value")
    return root


def search_args(tiny_world: Path, search_world: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "scripts/run_search.py",
        *["--policy", str(tiny_world / "base"), "--value_model", str(search_world / "value")],
        *["--prompts", str(search_world / "chains" / "prompts" / "test.jsonl")],
        *["--verifier", "tests.test_search:even_reply", "--output_dir", str(output_dir), "--disable_tqdm", "true"],
        *["--max_steps", "3", "--max_step_tokens", "5", "--token_budget", "60", "--num_candidates", "3"],
        *extra,
    ]


def outputs(output_dir: Path) -> dict[str, str]:
    return {name: (output_dir / name).read_text() for name in ("traces.jsonl", "sft.jsonl", "progress.jsonl")}


@pytest.mark.parametrize("algorithm", ["greedy", "best_of_n", "beam", "mcts"])
def test_each_search_writes_value_traces_sft_rows_and_a_summary(tiny_world, search_world, tmp_path, algorithm):
    output_dir = tmp_path / algorithm
    result = run(*search_args(tiny_world, search_world, output_dir, "--algorithm", algorithm, "--num_samples", "3"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["prompts"] == 12 and summary["algorithm"] == algorithm
    progress = [json.loads(line) for line in (output_dir / "progress.jsonl").read_text().splitlines()]
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in progress) / 12)
    assert summary["generated_tokens"] == sum(r["generated_tokens"] for r in progress) > 0
    if algorithm == "greedy":
        assert summary["value_calls_per_prompt"] == 0
    else:
        assert summary["value_calls_per_prompt"] > 0 and summary["scored_tokens_per_prompt"] > 0
    if algorithm == "mcts":  # the budget is a cap, overrun by at most one expansion and a greedy completion
        assert all(r["generated_tokens"] <= 60 + 3 * 5 + 3 * 5 for r in progress)
    traces = [json.loads(line) for line in (output_dir / "traces.jsonl").read_text().splitlines()]
    sft = [json.loads(line) for line in (output_dir / "sft.jsonl").read_text().splitlines()]
    assert (summary["traces"], summary["sft_rows"]) == (len(traces), len(sft))
    for row in traces:
        assert value_row_problem(row) is None
        assert all(-1.0 <= step["Q"] <= 1.0 for step in row["response"])
    for row in sft:
        assert row["messages"][-1]["role"] == "assistant" and even_reply(None, row["messages"][-1]["content"])
    if algorithm != "greedy":
        # The two files are what run_value.py and run_sft.py read, through the same mixture loader.
        if traces:
            mixer = {str(output_dir / "traces.jsonl"): 1.0}
            load_mixture(DataArguments(dataset_mixer=mixer, dataset_splits=["train"]))
        assert (output_dir / "run_finished.json").is_file()


def test_a_killed_search_resumes_and_writes_what_an_uninterrupted_one_writes(tiny_world, search_world, tmp_path):
    args = ("--algorithm", "mcts")
    whole = tmp_path / "whole"
    assert run(*search_args(tiny_world, search_world, whole, *args)).returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, *search_args(tiny_world, search_world, killed, *args)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = killed / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if progress.is_file() and len(progress.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(progress.read_text().splitlines())
    assert 4 <= done < 12, "the search was not killed midway"
    assert not (killed / "run_finished.json").exists()
    # As if it had been killed while writing the next prompt: a half-written row in each file.
    for name in ("traces.jsonl", "sft.jsonl", "progress.jsonl"):
        with open(killed / name, "a") as handle:
            handle.write('{"prompt": "Add 1, 2')

    resumed = run(*search_args(tiny_world, search_world, killed, *args))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming: {done} of 12 prompts already searched" in resumed.stdout + resumed.stderr
    assert outputs(killed) == outputs(whole)
    assert json.loads((killed / "summary.json").read_text()) == json.loads((whole / "summary.json").read_text())

    again = run(*search_args(tiny_world, search_world, killed, *args))
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr
    assert outputs(killed) == outputs(whole)
    other = run(*search_args(tiny_world, search_world, killed, "--algorithm", "beam"))
    assert other.returncode == 2
    assert "error: OutputDirError" in other.stderr and "algorithm" in other.stderr
