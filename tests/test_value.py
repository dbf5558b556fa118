"""End to end: `scripts/run_value.py` learns step values on the synthetic sums task; a shifted Q position does not.

The task (`tiny_world.steps.step_rows`): prompts "Add each pair: 3+4, 2+1, 4+4.", one sum per step, Q = +1 while
every sum so far is right and -1 from the first wrong one on. Held-out traces are drawn with another seed.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.data.readers import read_rows
from alignment.recipes.arguments import ModelArguments
from alignment.value.config import ValueConfig
from alignment.value.formats import Q_IGNORE
from alignment.value.loss import value_metrics
from alignment.value.modeling import VALUE_HEAD_NAME, ValueHead, ValueModel, build_value_model, load_value_model
from alignment.value.rows import tokenize_traces
from alignment.value.scoring import score_steps, score_traces
from alignment.value.trainer import ValueTrainer
from tiny_world import write_step_data

from .conftest import REPO, run

TINY_VALUE = "recipes/tiny/value/config.yaml"
VALUE_STEPS = yaml.safe_load((REPO / TINY_VALUE).read_text())["max_steps"]
# Held-out step metrics over the 587 steps of the 200 held-out traces. Baselines: +1 everywhere gets sign accuracy
# 0.586 (the positive share); the step index alone (earlier steps are more often still correct) gets AUROC 0.631.
# Measured with the recipe (400 steps of 16 at lr 1e-3): trained, sign accuracy 1.000 and AUROC 1.000 (also on
# the worlds of seeds 1 and 2, benchmarks/RESULTS.md); with Q one token early (the control below) 0.462 / 0.477,
# though it learned, at the wrong position (at 200 steps its training value loss fell lower than the real run's:
# 0.10 vs 0.40). The thresholds are the demo's target (AUROC 0.90), far above the control and both baselines.
SIGN_ACCURACY_THRESHOLD = 0.90
AUROC_THRESHOLD = 0.90


@pytest.fixture(scope="module")
def value_data(tmp_path_factory):
    return write_step_data(tmp_path_factory.mktemp("value_data"), seed=0)


def overrides(tiny_world, data_dir, output_dir) -> list[str]:
    return [
        "--model_name_or_path",
        str(tiny_world / "base"),
        "--dataset_mixer",
        json.dumps({str(data_dir): 1.0}),
        "--output_dir",
        str(output_dir),
        "--disable_tqdm",
        "true",
    ]


def held_out(value_data) -> tuple[list[tuple[str, list[str]]], np.ndarray]:
    rows = read_rows(value_data / "test.jsonl")
    traces = [(row["prompt"], [step["step"] for step in row["response"]]) for row in rows]
    return traces, np.array([step["Q"] for row in rows for step in row["response"]])


def held_out_metrics(model, tokenizer, value_data) -> dict[str, float]:
    traces, q = held_out(value_data)
    values = np.array([v for trace in score_traces(model, tokenizer, traces, batch_size=64) for v in trace])
    return value_metrics(values, q)


@pytest.fixture(scope="module")
def value_output(tiny_world, value_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("value")
    result = run(
        "scripts/run_value.py",
        TINY_VALUE,
        *overrides(tiny_world, value_data, output_dir),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir


@pytest.mark.slow
def test_value_model_learns_held_out_step_values(value_output, value_data):
    tokenizer = AutoTokenizer.from_pretrained(value_output)
    metrics = held_out_metrics(load_value_model(value_output), tokenizer, value_data)
    print(f"held-out step values after {VALUE_STEPS} steps: {metrics}")
    assert metrics["sign_accuracy"] > SIGN_ACCURACY_THRESHOLD
    assert metrics["auroc"] > AUROC_THRESHOLD

    # The trainer's own evaluation reads the same positions as `score_steps`: same numbers.
    final = json.loads((value_output / "eval_results.json").read_text())
    assert final["eval_value_steps"] == len(held_out(value_data)[1])
    assert final["eval_sign_accuracy"] == pytest.approx(metrics["sign_accuracy"], abs=1e-9)
    # AUROC ranks every positive/negative pair: values that differ by ~1e-7 between the trainer's padded eval batches
    # and `score_steps` can swap near-tied pairs (seen: 0.866387 vs 0.866399). A wrong read position moves it by 0.3.
    assert final["eval_auroc"] == pytest.approx(metrics["auroc"], abs=1e-4)
    counts = json.loads((value_output / "truncation_results.json").read_text())
    assert counts["train_steps_lost_to_truncation"] == counts["eval_steps_lost_to_truncation"] == 0
    # eval_on_start: the untrained model is far below both thresholds.
    state = json.loads((value_output / "trainer_state.json").read_text())
    start = next(entry for entry in state["log_history"] if entry["step"] == 0 and "eval_auroc" in entry)
    assert start["eval_auroc"] < 0.7 and start["eval_sign_accuracy"] < 0.7


@pytest.fixture(scope="module")
def shifted_control(tiny_world, value_data, tmp_path_factory):
    """The control: the recipe's data, steps and optimiser, but every Q moved one token earlier (the value is
    trained at the token before each step's newline, the mistake of applying the LM's label shift to Q)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    recipe = yaml.safe_load((REPO / TINY_VALUE).read_text())
    train, _ = tokenize_traces(
        load_dataset("json", data_files=str(value_data / "train.jsonl"), split="train"),
        tokenizer,
        max_length=recipe["max_length"],
    )

    def one_token_earlier(row):
        q = [Q_IGNORE] * len(row["Q"])
        for i, value in enumerate(row["Q"]):
            if value != Q_IGNORE:
                q[i - 1] = value
        return {"Q": q}

    args = ValueConfig(
        output_dir=str(tmp_path_factory.mktemp("control")),
        max_steps=VALUE_STEPS,
        per_device_train_batch_size=recipe["per_device_train_batch_size"],
        learning_rate=float(recipe["learning_rate"]),
        lr_scheduler_type=recipe["lr_scheduler_type"],
        warmup_steps=recipe["warmup_steps"],
        weight_decay=0.0,
        padding_side=recipe["padding_side"],
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
    )
    model = ValueModel(AutoModelForCausalLM.from_pretrained(tiny_world / "base"), ValueHead(128))
    trainer = ValueTrainer(
        model=model, args=args, train_dataset=train.map(one_token_earlier), processing_class=tokenizer
    )
    trainer.train()
    return trainer, tokenizer


@pytest.mark.slow
def test_off_by_one_q_position_fails_the_thresholds(shifted_control, value_data):
    trainer, tokenizer = shifted_control
    metrics = held_out_metrics(trainer.model, tokenizer, value_data)
    print(f"held-out step values, Q trained one token early: {metrics}")
    assert metrics["sign_accuracy"] < SIGN_ACCURACY_THRESHOLD
    assert metrics["auroc"] < AUROC_THRESHOLD


@pytest.mark.slow
def test_scores_are_equal_before_save_and_after_reload(shifted_control, value_data, tmp_path):
    trainer, tokenizer = shifted_control
    traces, _ = held_out(value_data)
    before = score_traces(trainer.model, tokenizer, traces[:40])
    trainer.save_model(str(tmp_path))
    assert (tmp_path / VALUE_HEAD_NAME).is_file() and (tmp_path / "model.safetensors").is_file()
    after = score_traces(load_value_model(tmp_path), AutoTokenizer.from_pretrained(tmp_path), traces[:40])
    assert np.allclose(np.concatenate(before), np.concatenate(after), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_scores_equal_single_scores_and_prefix_scores(value_output, value_data, side):
    tokenizer = AutoTokenizer.from_pretrained(value_output)
    tokenizer.padding_side = side
    model = load_value_model(value_output)
    traces, _ = held_out(value_data)
    traces = traces[:24]  # 2 to 4 steps each: batches mix lengths, so most rows are padded
    batched = score_traces(model, tokenizer, traces, batch_size=8)
    single = [score_steps(model, tokenizer, prompt, steps) for prompt, steps in traces]
    assert np.allclose(np.concatenate(batched), np.concatenate(single), atol=1e-5)
    # A partial solution scores as the same steps inside the full trace (what a tree search relies on).
    prompt, steps = next((p, s) for p, s in traces if len(s) >= 3)
    assert score_steps(model, tokenizer, prompt, steps[:2]) == pytest.approx(single[traces.index((prompt, steps))][:2])


@pytest.mark.slow
def test_every_checkpoint_and_the_output_hold_the_value_head(value_output, tiny_world):
    checkpoints = sorted(value_output.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-200", "checkpoint-400"]  # save_steps 200 of 400
    for folder in [*checkpoints, value_output]:
        head = load_file(folder / VALUE_HEAD_NAME)
        assert head["weight"].shape == (1, 128) and head["weight"].dtype == torch.float32
        assert (folder / "model.safetensors").is_file()
    assert not torch.equal(load_file(checkpoints[0] / VALUE_HEAD_NAME)["weight"], head["weight"])
    for name in ("README.md", "resolved_config.yaml", "tokenizer.json", "generation_config.json"):
        assert (value_output / name).is_file(), name

    # Resuming reads the body and the head back: a fresh trainer loading checkpoint-100 scores as that checkpoint.
    tokenizer = AutoTokenizer.from_pretrained(value_output)
    model = ValueModel(AutoModelForCausalLM.from_pretrained(tiny_world / "base"), ValueHead(128))
    args = ValueConfig(output_dir=str(value_output / "unused"), report_to="none")
    ValueTrainer(model=model, args=args, processing_class=tokenizer)._load_from_checkpoint(str(checkpoints[0]))
    prompt, steps = "Add each pair: 3+4, 2+1.", ["3+4=7", "2+1=4"]
    expected = score_steps(load_value_model(checkpoints[0]), tokenizer, prompt, steps)
    assert score_steps(model, tokenizer, prompt, steps) == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_lora_saves_adapter_and_value_head_and_reloads(tiny_world, value_data, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    model_args = ModelArguments(
        model_name_or_path=str(tiny_world / "base"), use_peft=True, lora_target_modules=["q_proj", "v_proj"]
    )
    args = ValueConfig(
        output_dir=str(tmp_path),
        max_steps=6,
        save_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        report_to="none",
        disable_tqdm=True,
    )
    model = build_value_model(model_args, args, tokenizer)
    assert [n for n, p in model.named_parameters() if p.requires_grad and "lora" not in n] == [
        "value_head.weight",
        "value_head.bias",
    ]
    train, _ = tokenize_traces(
        load_dataset("json", data_files=str(value_data / "train.jsonl"), split="train[:64]"), tokenizer, max_length=128
    )
    trainer = ValueTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "checkpoint-3", tmp_path / "checkpoint-6", tmp_path / "final"):
        assert (folder / "adapter_model.safetensors").is_file() and (folder / VALUE_HEAD_NAME).is_file()
        assert not (folder / "model.safetensors").exists()
    traces, _ = held_out(value_data)
    before = score_traces(model, tokenizer, traces[:16])
    after = score_traces(load_value_model(tmp_path / "final"), tokenizer, traces[:16])
    assert np.allclose(np.concatenate(before), np.concatenate(after), atol=1e-5)


def test_stepwise_supervision_rows_train_through_the_script(tiny_world, tmp_path):
    from tiny_world import step_rows

    data = tmp_path / "stepwise"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in step_rows(32, 0, form="stepwise")))
    result = run(
        "scripts/run_value.py",
        TINY_VALUE,
        *overrides(tiny_world, data, tmp_path / "out"),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--test_split_size",
        "0.25",
        "--eval_on_start",
        "false",
        "--save_strategy",
        "no",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert final["eval_value_steps"] > 0 and 0 <= final["eval_sign_accuracy"] <= 1
    assert (tmp_path / "out" / VALUE_HEAD_NAME).is_file()
