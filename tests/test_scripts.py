"""End to end: `scripts/run_sft.py` and `python -m alignment.inspect` through their real entry points, offline.

The tiny world (random 4-layer Llama, BPE tokenizer trained in-process, addition chats) is built by `conftest.py`.
"""

import json

import pytest
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.chat.templates import load_chat_template
from alignment.chat.turns import IGNORE_INDEX
from alignment.data.readers import read_rows
from tiny_world import NUM_TRAIN_ROWS, held_out_loss

from .conftest import REPO, run

TINY_SFT = "recipes/tiny/sft/config.yaml"
SFT_STEPS = 100
# Held-out loss per assistant token (all turns). Measured on this fixture at 100 steps: untrained 5.89, trained with
# the handbook's mask 0.64, trained with a last-assistant-turn-only mask (what a completion-only collator searching
# for one response template gives on multi-turn chats) 6.81: it never learns the greeting reply. 1.0 sits between.
LOSS_THRESHOLD = 1.0


def tiny_overrides(tiny_world, output_dir) -> list[str]:
    return [
        "--model_name_or_path",
        str(tiny_world / "base"),
        "--dataset_mixer",
        json.dumps({str(tiny_world / "sft"): 1.0}),
        "--output_dir",
        str(output_dir),
        "--disable_tqdm",
        "true",
    ]


@pytest.fixture(scope="module")
def sft_output(tiny_world, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("sft")
    result = run(
        "scripts/run_sft.py",
        TINY_SFT,
        *tiny_overrides(tiny_world, output_dir),
        "--max_steps",
        str(SFT_STEPS),
        "--eval_steps",
        "50",
        "--save_steps",
        "50",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir


@pytest.mark.slow
def test_sft_learns_every_assistant_turn(sft_output, tiny_world):
    rows = read_rows(tiny_world / "sft" / "test.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(sft_output)
    before = held_out_loss(AutoModelForCausalLM.from_pretrained(tiny_world / "base"), tokenizer, rows)
    after = held_out_loss(AutoModelForCausalLM.from_pretrained(sft_output), tokenizer, rows)
    print(f"held-out assistant-token loss: before {before:.3f}, after {after:.3f}")
    assert before > 5.0
    assert after < LOSS_THRESHOLD


@pytest.mark.slow
def test_last_turn_only_mask_does_not_reach_the_threshold(tiny_world, tmp_path):
    """The control: same data, steps and optimiser, but only the last assistant turn trained."""
    from datasets import load_dataset
    from trl import SFTTrainer

    from alignment.sft.config import SFTConfig
    from alignment.sft.rows import tokenize_chats

    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    train, _ = tokenize_chats(load_dataset(str(tiny_world / "sft"), split="train"), tokenizer, max_length=128)

    def last_turn_only(row):
        labels = row["labels"]
        end = max(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        start = end
        while start > 0 and labels[start - 1] != IGNORE_INDEX:
            start -= 1
        return {"labels": [label if start <= i <= end else IGNORE_INDEX for i, label in enumerate(labels)]}

    recipe = yaml.safe_load((REPO / TINY_SFT).read_text())
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=SFT_STEPS,
        per_device_train_batch_size=recipe["per_device_train_batch_size"],
        learning_rate=float(recipe["learning_rate"]),
        lr_scheduler_type=recipe["lr_scheduler_type"],
        warmup_steps=recipe["warmup_steps"],
        weight_decay=0.0,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    SFTTrainer(model=model, args=args, train_dataset=train.map(last_turn_only), processing_class=tokenizer).train()
    loss = held_out_loss(model, tokenizer, read_rows(tiny_world / "sft" / "test.jsonl"))
    print(f"held-out assistant-token loss with a last-turn-only mask: {loss:.3f}")
    assert loss > LOSS_THRESHOLD


@pytest.mark.slow
def test_sft_saves_everything_a_user_needs(sft_output):
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "resolved_config.yaml",
        "plot_loss.png",
    ):
        assert (sft_output / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(sft_output)
    assert tokenizer.chat_template == load_chat_template("zephyr")
    generation = json.loads((sft_output / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids("</s>")
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    resolved = yaml.safe_load((sft_output / "resolved_config.yaml").read_text())
    assert resolved["max_steps"] == SFT_STEPS and resolved["chat_template"] == "zephyr"
    assert "alignment-handbook" in (sft_output / "README.md").read_text()
    state = json.loads((sft_output / "trainer_state.json").read_text())
    eval_losses = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert eval_losses[0] > 5.0 and eval_losses[-1] < LOSS_THRESHOLD  # eval_on_start logs the untrained loss
    assert sorted(p.name for p in sft_output.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-50"]


@pytest.mark.slow
def test_lora_trains_and_saves_only_the_adapter(tiny_world, tmp_path):
    result = run(
        "scripts/run_sft.py",
        TINY_SFT,
        *tiny_overrides(tiny_world, tmp_path),
        "--use_peft",
        "true",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--max_steps",
        "10",
        "--eval_strategy",
        "no",
        "--eval_on_start",
        "false",
        "--save_strategy",
        "no",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "model.safetensors").exists()
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert len(lora_b) == 8  # q and v in each of the 4 layers
    assert all(tensor.abs().sum() > 0 for tensor in lora_b)  # LoRA B starts at zero: non-zero means it trained


def test_malformed_row_stops_the_run_naming_it(tiny_world, tmp_path):
    rows = read_rows(tiny_world / "sft" / "train.jsonl")[:10]
    rows[3]["messages"][1]["role"] = "bot"
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = tiny_overrides(tiny_world, tmp_path / "out")
    overrides[overrides.index("--dataset_mixer") + 1] = json.dumps({str(data): 1.0})
    result = run("scripts/run_sft.py", TINY_SFT, *overrides, "--max_steps", "1")
    assert result.returncode != 0
    assert "row 3: unknown role 'bot'" in result.stderr

    skipped = run(
        "scripts/run_sft.py",
        TINY_SFT,
        *overrides,
        "--max_steps",
        "1",
        "--skip_invalid_rows",
        "true",
        "--test_split_size",
        "0.2",
        "--save_strategy",
        "no",
        "--eval_on_start",
        "false",
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "dropped 1 invalid (unknown role: 1)" in skipped.stdout + skipped.stderr


def test_recipe_typo_fails_before_any_work(tiny_world, tmp_path):
    result = run("scripts/run_sft.py", TINY_SFT, *tiny_overrides(tiny_world, tmp_path), "--learning_rat", "1e-3")
    assert result.returncode != 0
    assert "Unknown recipe key `learning_rat`. Did you mean `learning_rate`?" in result.stderr


def test_qlora_on_a_cpu_machine_is_a_clear_error(tiny_world, tmp_path):
    result = run(
        "scripts/run_sft.py",
        TINY_SFT,
        *tiny_overrides(tiny_world, tmp_path),
        "--use_peft",
        "true",
        "--load_in_4bit",
        "true",
    )
    assert result.returncode != 0
    assert "needs a CUDA GPU and bitsandbytes; this machine has no GPU" in result.stderr


def test_inspect_reports_truncation_and_padding(tiny_world):
    overrides = tiny_overrides(tiny_world, "unused")
    full = run("-m", "alignment.inspect", TINY_SFT, "--json", *overrides)
    assert full.returncode == 0, full.stderr[-3000:]
    stats = json.loads(full.stdout)["splits"]["train"]
    assert stats["examples"] == NUM_TRAIN_ROWS and stats["truncated"] == 0 and stats["lost_every_trained_token"] == 0
    assert 0.0 < stats["padding_fraction"] < 0.5

    # Every chat's final answer sits past token 20, so cutting there truncates every example and leaves some (those
    # whose greeting reply also starts past 20: the ones with a system prompt) with no trained token at all.
    short = json.loads(run("-m", "alignment.inspect", TINY_SFT, "--json", *overrides, "--max_length", "20").stdout)
    short_stats = short["splits"]["train"]
    assert short_stats["truncated"] == NUM_TRAIN_ROWS
    assert 0 < short_stats["lost_every_trained_token"] < NUM_TRAIN_ROWS


def test_inspect_marks_exactly_the_assistant_turns(tiny_world):
    result = run("-m", "alignment.inspect", TINY_SFT, "--num_examples", "1", *tiny_overrides(tiny_world, "unused"))
    assert result.returncode == 0, result.stderr[-3000:]
    first = read_rows(tiny_world / "sft" / "train.jsonl")[0]["messages"]
    replies = [m["content"] for m in first if m["role"] == "assistant"]
    rendered = result.stdout.split("---", 2)[2]
    assert [f"«{reply}</s>»" in rendered for reply in replies] == [True, True]
    assert rendered.count("«") == 2


@pytest.mark.slow
def test_padding_free_batches_train_the_same_tokens_as_padded_ones(tiny_world, tmp_path):
    """`padding_free: true` (one row per batch, sequences told apart by position ids) runs through run_sft.py, whose
    own truncation comes first, and gives the padded batch's loss on the same first batch (a wrong attention mask
    across the concatenated chats, or a different set of trained tokens, would change it)."""
    first_losses = []
    for name, extra in (("padded", []), ("padding_free", ["--padding_free", "true"])):
        output_dir = tmp_path / name
        result = run(
            "scripts/run_sft.py",
            TINY_SFT,
            *tiny_overrides(tiny_world, output_dir),
            *["--max_steps", "1", "--logging_steps", "1", "--eval_strategy", "no", "--eval_on_start", "false"],
            *["--save_strategy", "no", *extra],
        )
        assert result.returncode == 0, result.stderr[-3000:]
        history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
        first_losses.append(next(entry["loss"] for entry in history if "loss" in entry))
    assert first_losses[1] == pytest.approx(first_losses[0], abs=1e-4)
