"""End to end: `scripts/run_pt.py` lowers the held-out perplexity of the tiny model on the tiny world's text, its
output is the next stage's model (pt -> sft), and bad input ends as one message with exit status 2.

The token-level contract (every token a label, EOS between packed documents, position ids restarting) is held by
`tests/unit/pt/test_text.py` on the trainer the stage builds; this file runs the script."""

import json
import math
import shutil
from functools import partial

import pytest

from alignment.runtime.cli import USER_ERROR_EXIT_STATUS, run_cli
from alignment.stages import STAGES

from .conftest import run
from .test_user_errors import CLI_ENV

TINY_PT = "recipes/tiny/pt/config.yaml"
# 16 steps of 8 packed rows (~32 documents each) from the random tiny Llama: held-out perplexity 364 -> 21.9
# (measured); a model that learned nothing stays near the vocabulary's 350.
PT_STEPS = 16
PERPLEXITY_AFTER = 30.0


def perplexities(output_dir) -> list[float]:
    """exp(eval_loss) of every evaluation the run logged, in order."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [math.exp(entry["eval_loss"]) for entry in history if "eval_loss" in entry]


@pytest.fixture(scope="module")
def pt_output(tiny_world, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pt") / "out"
    result = run(
        "scripts/run_pt.py",
        TINY_PT,
        *["--model_name_or_path", str(tiny_world / "base"), "--output_dir", str(output_dir)],
        *["--dataset_mixer", json.dumps({str(tiny_world / "pt"): 1.0}), "--disable_tqdm", "true"],
        *["--max_steps", str(PT_STEPS), "--per_device_train_batch_size", "8", "--eval_steps", str(PT_STEPS)],
        *["--save_strategy", "no"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result.stdout


@pytest.mark.slow
def test_pt_lowers_held_out_perplexity_and_logs_its_document_policy(pt_output):
    output_dir, log = pt_output
    before, *_, after = perplexities(output_dir)
    assert before > 200 and after < PERPLEXITY_AFTER, (before, after)
    assert "every document starts with no BOS (the tokenizer adds none) and ends with EOS '</s>'" in log
    assert log.count("pt documents: ") == 1
    assert "train split: 8000 documents" in log and "Generation stops at ['</s>']" in log


@pytest.mark.slow
def test_a_pt_model_is_the_next_stages_model(pt_output, tiny_world, tmp_path):
    output_dir, _ = pt_output
    result = run(
        "scripts/run_sft.py",
        "recipes/tiny/sft/config.yaml",
        *["--model_name_or_path", str(output_dir), "--output_dir", str(tmp_path / "sft")],
        *["--dataset_mixer", json.dumps({str(tiny_world / "sft"): 0.01}), "--disable_tqdm", "true"],
        *["--max_steps", "2", "--eval_strategy", "no", "--eval_on_start", "false", "--save_strategy", "no"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sft" / "run_finished.json").is_file()


def run_pt_in_process(argv: list[str], monkeypatch, capsys) -> str:
    """`run_pt.py argv` in this process (every error here comes before training): the one message it printed."""
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(partial(STAGES["pt"].run, [TINY_PT, *argv]))
    assert exit_info.value.code == USER_ERROR_EXIT_STATUS
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    return errors[0]


def test_bad_pt_input_is_one_message(tiny_world, tmp_path, monkeypatch, capsys):
    def pt(mixer, *extra, model=tiny_world / "base"):
        output_dir = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        argv = ["--model_name_or_path", str(model), "--dataset_mixer", json.dumps(mixer), "--output_dir"]
        return run_pt_in_process([*argv, str(output_dir), *extra], monkeypatch, capsys)

    chats = str(tiny_world / "sft" / "test.jsonl")
    assert "no raw text format matches its columns (it has: messages)" in pt({chats: 1.0})
    without_template = tmp_path / "base"
    shutil.copytree(tiny_world / "base", without_template)
    (without_template / "chat_template.jinja").unlink()
    message = pt([{"path": chats, "format": "messages"}], model=without_template)
    assert "`format: messages` renders each chat by the chat template, and the tokenizer has none" in message
    (tmp_path / "empty").mkdir()
    assert "has no .json/.jsonl/.parquet/.txt files" in pt({str(tmp_path / "empty"): 1.0})
    assert "error: RecipeError: `completion_only_loss: true`" in pt({chats: 1.0}, "--completion_only_loss", "true")
