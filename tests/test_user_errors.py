"""User errors end as one message and exit status 2, through the real entry points; bugs still raise.

Every error here happens before training (recipe parsing, the output folder check, data loading), so each script run
costs only its start-up. The in-process tests call `alignment.runtime.cli.run_cli` directly.
"""

import json
import sys

import pytest
import yaml

import alignment.runtime.cli
from alignment.data.readers import read_rows
from alignment.data.rows import InvalidRowError
from alignment.pipeline import PipelineConfig
from alignment.recipes.parser import RecipeParser
from alignment.runtime.cli import NON_MAIN_RANK_EXIT_DELAY_S, USER_ERROR_EXIT_STATUS, run_cli
from alignment.runtime.reliability import FINISHED_NAME, RESOLVED_CONFIG_NAME

from .conftest import run

TINY_SFT = "recipes/tiny/sft/config.yaml"
TYPO = ["--learning_rat", "1e-3"]
TYPO_MESSAGE = "error: RecipeError: Unknown recipe key `learning_rat`. Did you mean `learning_rate`?\n"
CLI_ENV = ("ALIGNMENT_DEBUG", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def run_clean(*args: str, env: dict[str, str] | None = None):
    """`run(*args)` with ALIGNMENT_DEBUG and the launcher's rank variables unset unless `env` sets them (the tests
    themselves may run with the debug switch on, or under a launcher)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in CLI_ENV:
            patch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        return run(*args)


def sft(*args: str, env: dict[str, str] | None = None):
    """`python scripts/run_sft.py` on the tiny recipe, as a user runs it."""
    return run_clean("scripts/run_sft.py", TINY_SFT, *args, env=env)


def assert_one_message(result, message: str) -> None:
    """Exit status 2, `message` once on stderr, one `error:` line in all, and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == USER_ERROR_EXIT_STATUS, output[-3000:]
    assert result.stderr.count(message) == 1, result.stderr[-3000:]
    assert result.stderr.count("error: ") == 1, result.stderr[-3000:]
    assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def bad_row_run(tiny_world, tmp_path_factory):
    """One SFT run on chats whose row 3 has an unknown role: (the result, its overrides). Its `output_dir` keeps the
    `resolved_config.yaml` written before the data was read."""
    tmp = tmp_path_factory.mktemp("bad_row")
    rows = read_rows(tiny_world / "sft" / "train.jsonl")[:8]
    rows[3]["messages"][1]["role"] = "bot"
    data = tmp / "chats.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = [
        *["--model_name_or_path", str(tiny_world / "base"), "--dataset_mixer", json.dumps({str(data): 1.0})],
        *["--output_dir", str(tmp / "out"), "--max_steps", "1"],
    ]
    return sft(*overrides), overrides


def test_unknown_recipe_key_is_one_message():
    assert_one_message(sft(*TYPO), TYPO_MESSAGE)


def test_bad_value_found_by_a_config_check_is_one_message():
    # `ModelArguments.__post_init__` raises a plain ValueError while the parser builds the dataclasses.
    result = sft("--load_in_4bit", "true")
    assert_one_message(result, "error: RecipeError: `load_in_4bit`/`load_in_8bit` quantize the frozen base model")


def test_malformed_row_is_one_message(bad_row_run):
    result, _ = bad_row_run
    assert_one_message(result, "error: InvalidRowError: ")
    assert result.stderr.count("row 3: unknown role 'bot'") == 1


def test_finished_output_dir_of_another_recipe_is_one_message(bad_row_run):
    _, overrides = bad_row_run
    output_dir = overrides[overrides.index("--output_dir") + 1]
    assert (yaml.safe_load(open(f"{output_dir}/{RESOLVED_CONFIG_NAME}")))["learning_rate"] == 0.003
    with open(f"{output_dir}/{FINISHED_NAME}", "w") as mark:  # as if that run had finished
        json.dump({"global_step": 1}, mark)
    result = sft(*overrides, "--learning_rate", "1e-4")
    assert_one_message(result, f"error: OutputDirError: {output_dir} holds a finished model of another recipe")
    assert "  learning_rate: 0.003 there, 0.0001 now\n" in result.stderr


@pytest.fixture(scope="module")
def good_data_overrides(tiny_world, tmp_path_factory):
    """Overrides that point the tiny SFT recipe at the tiny world's model and chats and a fresh `output_dir`."""
    output_dir = tmp_path_factory.mktemp("good_data") / "out"
    return [
        *["--model_name_or_path", str(tiny_world / "base")],
        *["--dataset_mixer", json.dumps({str(tiny_world / "sft"): 0.05}), "--max_steps", "1"],
        *["--output_dir", str(output_dir)],
    ]


def test_qlora_on_a_machine_without_a_gpu_is_one_message(good_data_overrides):
    result = sft(*good_data_overrides, "--use_peft", "true", "--load_in_4bit", "true")
    assert_one_message(
        result,
        "error: RecipeError: `load_in_4bit`/`load_in_8bit` (QLoRA) needs a CUDA GPU and bitsandbytes; this machine "
        "has no GPU. Set `load_in_4bit: false` to train LoRA adapters on a full-precision base instead.\n",
    )


def test_resuming_from_an_incomplete_checkpoint_is_one_message(good_data_overrides, tmp_path):
    checkpoint = tmp_path / "checkpoint-5"
    checkpoint.mkdir()
    result = sft(*good_data_overrides, "--resume_from_checkpoint", str(checkpoint))
    assert_one_message(
        result,
        f"error: RecipeError: `resume_from_checkpoint: {checkpoint}` cannot be resumed from: no "
        "checkpoint_complete.json: it was cut off while being written, or not written by the handbook.\n",
    )


def test_debug_switch_shows_the_traceback():
    result = sft(*TYPO, env={"ALIGNMENT_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "alignment.recipes.parser.RecipeError: Unknown recipe key `learning_rat`" in result.stderr
    assert "error: " not in result.stderr


def test_a_failed_pipeline_stage_is_named_without_a_second_traceback(tmp_path):
    stage_dir = tmp_path / "sft"
    stage_dir.mkdir()
    (stage_dir / "config.yaml").write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out" / "sft")}))
    script = tmp_path / "failing_stage.py"  # a stage that fails the way a script does on a user error
    script.write_text("import sys\nsys.stderr.write('error: RecipeError: the stage says why\\n')\nsys.exit(2)\n")
    stage = {"recipe": str(stage_dir / "config.yaml"), "script": str(script)}
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump({"stages": [stage], "output_dir": str(tmp_path / "pipeline")}))
    result = run_clean("scripts/run_pipeline.py", str(recipe))
    assert result.returncode == USER_ERROR_EXIT_STATUS, result.stderr[-3000:]
    assert result.stderr.count("error: RecipeError: the stage says why") == 1
    assert result.stderr.count("error: StageFailedError: Stage sft failed (exit 2)") == 1
    assert "Traceback" not in result.stdout + result.stderr


# In process: the wrapper itself.


@pytest.fixture
def main_process(monkeypatch):
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)


def raising(err: BaseException):
    def main():
        raise err

    return main


def test_a_bug_still_raises(main_process):
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)
    with pytest.raises(ValueError, match="not from a recipe"):  # a ValueError outside recipe parsing is a bug
        run_cli(raising(ValueError("not from a recipe")))


def test_a_chained_user_error_shows_its_message_not_the_chain(main_process, capsys):
    def main():
        try:
            {}["messages"]
        except KeyError as err:
            raise InvalidRowError("chats.jsonl", "train", 3, "no `messages`") from err

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == USER_ERROR_EXIT_STATUS
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: InvalidRowError: chats.jsonl (split 'train') row 3: no `messages`. Fix the data, or set "
        "`skip_invalid_rows: true` to drop such rows and log a count per reason.\n"
    )


def test_a_config_check_during_parsing_is_a_recipe_error(main_process, capsys):
    with pytest.raises(SystemExit):
        run_cli(lambda: RecipeParser((PipelineConfig,)).parse_dict({"stages": []}))
    assert capsys.readouterr().err == "error: RecipeError: `stages` is empty: list at least one `{recipe: ...}`.\n"


@pytest.mark.parametrize("rank", [{"RANK": "1"}, {"LOCAL_RANK": "3"}, {"RANK": "2", "LOCAL_RANK": "0"}])
def test_a_non_main_rank_exits_silently(main_process, monkeypatch, capsys, rank):
    """As under `accelerate launch`, where every rank hits the same error: only rank 0 says it. (In process: a script
    run costs seconds, and the rank is read from the environment either way.)"""
    for name, value in rank.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(raising(InvalidRowError("chats.jsonl", "train", 3, "no `messages`")))
    assert exit_info.value.code == USER_ERROR_EXIT_STATUS
    assert capsys.readouterr() == ("", "")


def test_a_non_main_rank_of_a_launch_exits_after_rank_0_has_reported(main_process, monkeypatch, capsys):
    """`torchrun` stops every process 0.1 s after the first exits: rank 1 must not stop rank 0 before it prints."""
    slept = []
    monkeypatch.setattr(alignment.runtime.cli.time, "sleep", slept.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit):
        run_cli(raising(InvalidRowError("chats.jsonl", "train", 3, "no `messages`")))
    assert slept == [NON_MAIN_RANK_EXIT_DELAY_S] and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        run_cli(raising(InvalidRowError("chats.jsonl", "train", 3, "no `messages`")))
    assert slept == [NON_MAIN_RANK_EXIT_DELAY_S] and capsys.readouterr().err.startswith("error: InvalidRowError: ")


def test_debug_reraises_the_user_error(main_process, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_DEBUG", "1")
    err = InvalidRowError("chats.jsonl", "train", 3, "no `messages`")
    with pytest.raises(InvalidRowError) as raised:
        run_cli(raising(err))
    assert raised.value is err


def test_system_exit_passes_through(main_process):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: sys.exit(0))  # `--help`, or a stage already complete
    assert exit_info.value.code == 0


def test_an_error_during_a_progress_bar_starts_its_own_line(main_process, capsys):
    """The NaN error stops training mid-bar: its line must not be glued to the end of the bar's."""
    from tqdm.auto import tqdm

    def main():
        bar = tqdm(total=10)
        bar.update(3)
        raise InvalidRowError("chats.jsonl", "train", 3, "no `messages`")

    with pytest.raises(SystemExit):
        run_cli(main)
    err = capsys.readouterr().err
    assert "\nerror: InvalidRowError: chats.jsonl" in err and err.count("error: ") == 1
