"""End to end: `scripts/run_rm.py` through its real entry point on the offline tiny world; `alignment.reward.score`.

The preference task: after the addition chat's question, `chosen` is the bare correct sum and `rejected` the same sum
with a style flaw appended (`tiny_world.STYLE_FLAW`). Chosen and rejected share every prompt token, so the
better answer is decidable from the reply's text alone, and only from it.
"""

import json
import random
import re
from functools import partial

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from alignment.data.readers import read_rows
from alignment.recipes.arguments import DataArguments, ModelArguments
from alignment.recipes.parser import RecipeParser
from alignment.reward.config import RewardConfig, reward_peft_config
from alignment.reward.pairs import tokenize_pairs
from alignment.reward.scoring import score
from alignment.reward.trainer import PairwiseRewardTrainer, reward_statistics
from tiny_world import operand_pairs, preference_rows

from .conftest import REPO
from .conftest import run as run_script

TINY_RM = "recipes/tiny/rm/config.yaml"
RM_STEPS = 20
# Held-out pair accuracy (ties count as wrong). Measured on this fixture: untrained head 0.29-0.5 (eval_on_start);
# after 30 steps of the tiny recipe 1.00 (the margin is ~6 nats by step 20). A model reading the first token sees
# identical inputs for chosen and rejected (they share the prompt), ties on every pair and scores 0.00. 0.9 sits
# between with room for noise on either side.
ACCURACY_THRESHOLD = 0.9


# Training runs here take longer than the other scripts' tests under load.
run = partial(run_script, timeout=900)


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def rm_data(tmp_path_factory):
    """`rm/{train,test}.jsonl` as `build_tiny_world` writes them (held-out pairs use unseen operands)."""
    root = tmp_path_factory.mktemp("rm_data")
    train_pairs, test_pairs = operand_pairs(0)
    write_jsonl(root / "train.jsonl", preference_rows(train_pairs, 2000, 2, rejection="style_flaw"))
    write_jsonl(root / "test.jsonl", preference_rows(test_pairs, 200, 3, rejection="style_flaw"))
    return root


def overrides(tiny_world, data, output_dir, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(tiny_world / "base"),
        "--dataset_mixer",
        json.dumps({str(data): 1.0}),
        "--output_dir",
        str(output_dir),
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        *extra,
    ]


def held_out_conversations(data) -> tuple[list[list[dict]], list[list[dict]]]:
    rows = read_rows(data / "test.jsonl")
    return [row["prompt"] + row["chosen"] for row in rows], [row["prompt"] + row["rejected"] for row in rows]


def assert_scores_match_eval(output_dir, data) -> dict:
    """Scores of the reloaded model reproduce the statistics the trained model logged in memory before saving."""
    logged = json.loads((output_dir / "eval_results.json").read_text())
    chosen, rejected = held_out_conversations(data)
    rewards = score(str(output_dir), chosen + rejected, batch_size=64)
    reloaded = reward_statistics(torch.tensor(rewards[: len(chosen)]), torch.tensor(rewards[len(chosen) :]))
    for key, value in reloaded.items():
        assert value == pytest.approx(logged[f"eval_{key}"], abs=1e-4), key
    return reloaded


@pytest.fixture(scope="module")
def rm_output(tiny_world, rm_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("rm")
    result = run(
        "scripts/run_rm.py",
        TINY_RM,
        *overrides(tiny_world, rm_data, output_dir, "--max_steps", str(RM_STEPS), "--eval_steps", str(RM_STEPS)),
        "--logging_steps",
        "10",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir, result.stdout + result.stderr


@pytest.mark.slow
def test_reward_model_learns_the_preference(rm_output):
    output_dir, log = rm_output
    state = json.loads((output_dir / "trainer_state.json").read_text())
    accuracies = [entry["eval_accuracy"] for entry in state["log_history"] if "eval_accuracy" in entry]
    print(f"held-out accuracy: before {accuracies[0]:.3f}, after {accuracies[-1]:.3f}")
    assert accuracies[0] < ACCURACY_THRESHOLD  # eval_on_start: the random head
    assert accuracies[-1] >= ACCURACY_THRESHOLD
    train_logs = [entry for entry in state["log_history"] if "rewards/chosen_std" in entry]
    assert train_logs and {"accuracy", "margin", "rewards/rejected_mean"} <= set(train_logs[-1])
    assert "training with length grouping" in log  # the tiny recipe groups pairs by length


@pytest.mark.slow
def test_full_model_scores_are_the_same_after_reload(rm_output, rm_data):
    output_dir, _ = rm_output
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "resolved_config.yaml"):
        assert (output_dir / name).is_file(), name
    reloaded = assert_scores_match_eval(output_dir, rm_data)
    assert reloaded["accuracy"] >= ACCURACY_THRESHOLD


class FirstTokenReward(LlamaForSequenceClassification):
    """The control: the same model, but the reward is read at the first token instead of the last real one."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return SequenceClassifierOutputWithPast(logits=self.score(hidden[:, 0]))


@pytest.mark.slow
def test_a_model_reading_the_first_token_fails_the_threshold(tiny_world, rm_data, tmp_path):
    """Same data, recipe hyperparameters and steps as the learning test; only the read position differs."""
    from datasets import load_dataset

    recipe = yaml.safe_load((REPO / TINY_RM).read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    splits = {
        split: tokenize_pairs(load_dataset(str(rm_data), split=split), tokenizer, max_length=recipe["max_length"])
        for split in ("train", "test")
    }
    args = RewardConfig(
        output_dir=str(tmp_path),
        max_steps=RM_STEPS,
        per_device_train_batch_size=recipe["per_device_train_batch_size"],
        per_device_eval_batch_size=recipe["per_device_eval_batch_size"],
        learning_rate=float(recipe["learning_rate"]),
        lr_scheduler_type=recipe["lr_scheduler_type"],
        warmup_steps=recipe["warmup_steps"],
        weight_decay=0.0,
        bf16=False,
        gradient_checkpointing=False,
        train_sampling_strategy=recipe["train_sampling_strategy"],
        save_strategy="no",
        report_to="none",
        seed=recipe["seed"],
        disable_tqdm=True,
    )
    torch.manual_seed(recipe["seed"])
    model = FirstTokenReward.from_pretrained(tiny_world / "base", num_labels=1)
    trainer = PairwiseRewardTrainer(
        model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["test"], processing_class=tokenizer
    )
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    print(f"held-out accuracy reading the first token: {accuracy:.3f}")
    assert accuracy < ACCURACY_THRESHOLD


@pytest.mark.slow
def test_lora_trains_and_saves_the_score_head_and_scores_the_same_after_reload(tiny_world, rm_data, tmp_path):
    result = run(
        "scripts/run_rm.py",
        TINY_RM,
        *overrides(tiny_world, rm_data, tmp_path, "--max_steps", "5", "--eval_on_start", "false"),
        "--eval_strategy",
        "no",
        "--use_peft",
        "true",
        "--lora_task_type",
        "SEQ_CLS",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "model.safetensors").exists()
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    assert any("score" in name for name in adapter)  # the head is saved in full with the adapter
    assert sum("lora_B" in name for name in adapter) == 8  # q and v in each of the 4 layers
    assert_scores_match_eval(tmp_path, rm_data)


def chit_chat_pairs(n: int, seed: int) -> list[dict]:
    """Plain-string pairs of very different lengths: a one-line reply next to a long ramble."""
    rng = random.Random(seed)
    words = ["sure", "well", "maybe", "the", "weather", "is", "nice", "today", "and", "tomorrow", "too"]
    rows = []
    for i in range(n):
        size = rng.choice([2, 5, 40, 80])
        reply = " ".join(rng.choice(words) for _ in range(size))
        rows.append({"prompt": f"Tell me something, friend number {i}.", "chosen": reply, "rejected": reply + " meh"})
    return rows


@pytest.mark.slow
def test_length_grouping_runs_on_pairs_and_lowers_padding(tiny_world, tmp_path):
    data = tmp_path / "chat"
    write_jsonl(data / "train.jsonl", chit_chat_pairs(256, 0))
    write_jsonl(data / "test.jsonl", chit_chat_pairs(16, 1))
    extra = ["--max_steps", "3", "--per_device_train_batch_size", "8", "--eval_on_start", "false"]
    result = run(
        "scripts/run_rm.py",
        TINY_RM,
        *overrides(tiny_world, data, tmp_path / "out", *extra, "--max_length", "512", "--eval_strategy", "no"),
        "--train_sampling_strategy",
        "group_by_length",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    found = re.search(r"Padding fraction .*: ([\d.]+) with length grouping, ([\d.]+) without", log)
    with_grouping, without = float(found.group(1)), float(found.group(2))
    print(f"padding fraction: {with_grouping:.3f} with length grouping, {without:.3f} without")
    assert "training with length grouping" in log
    assert without > 0.4 and with_grouping < without / 3


def test_bad_row_is_refused_with_its_index(tiny_world, rm_data, tmp_path):
    rows = read_rows(rm_data / "train.jsonl")[:10]
    rows[4]["rejected"] = rows[4]["chosen"]
    write_jsonl(tmp_path / "bad" / "train.jsonl", rows)
    result = run("scripts/run_rm.py", TINY_RM, *overrides(tiny_world, tmp_path / "bad", tmp_path / "out"))
    assert result.returncode != 0
    assert "row 4: chosen and rejected replies are identical" in result.stderr


def test_qlora_on_a_cpu_machine_is_a_clear_error(tiny_world, rm_data, tmp_path):
    result = run(
        "scripts/run_rm.py",
        TINY_RM,
        *overrides(tiny_world, rm_data, tmp_path),
        "--use_peft",
        "true",
        "--lora_task_type",
        "SEQ_CLS",
        "--load_in_4bit",
        "true",
    )
    assert result.returncode != 0
    assert "needs a CUDA GPU and bitsandbytes; this machine has no GPU" in result.stderr


@pytest.mark.parametrize("recipe", ["recipes/tiny/rm/config.yaml", "recipes/qwen2-0.5b/rm/config_lora.yaml"])
def test_shipped_recipes_parse_with_the_scripts_dataclasses(recipe):
    parser = RecipeParser((ModelArguments, DataArguments, RewardConfig))
    model_args, _, training_args = parser.parse_dict(parser.read_recipe(REPO / recipe))
    if model_args.use_peft:
        peft_config = reward_peft_config(model_args)
        assert peft_config.r == 4 and set(peft_config.target_modules) == {"q_proj", "k_proj", "v_proj"}
        assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4"
        assert "score" in peft_config.modules_to_save
    assert training_args.train_sampling_strategy == "group_by_length"
