"""Every stage on real vocabularies: Zephyr's own tokenizer (Mistral-7B-v0.1, legacy SentencePiece) with the Zephyr
recipes, and Qwen3's real vocabulary with its vendor template over multi-turn chats (tiny random models; the
tokenizers are built from pip-shipped files by `tests/support/real_tokenizers.py`).

Two tiers: the tokenized data of each stage checked against the token invariant (`tests/support/invariant.py`) row by
row, with the oracle written from `apply_chat_template` alone; and each script run through its real entry point for a
few steps, which must finish, log finite losses, and train exactly the examples the invariant was checked on (the
probe's fingerprints). The shipped recipes are used with only the model, the data and what a CPU cannot run swapped:
flash attention (`sdpa`), bf16 (fp32), tensorboard (none), 12 data processes (1), and the step count and batch size.
"""

import hashlib
import json
import math
from functools import cache
from pathlib import Path

import pytest
import trl
from datasets import load_dataset
from transformers import AutoConfig, MistralForSequenceClassification

from alignment.chat.templates import load_chat_template
from alignment.chat.turns import encode_chat
from alignment.data.pairs import to_pair
from alignment.dpo.pairs import tokenize_preferences
from alignment.kto.rows import to_unpaired, tokenize_unpaired
from alignment.kto.trainer import with_kl_completions
from alignment.pt.text import DocumentBoundaries, tokenize_documents
from alignment.recipes.arguments import ModelArguments
from alignment.reward.pairs import tokenize_pairs
from alignment.runtime.loading import load_tokenizer
from alignment.sft.rows import tokenize_chats
from alignment.stages import STAGES
from alignment.value.rows import to_trace, tokenize_traces
from tests.support.invariant import check_invariant, expected_turn

from .conftest import logged_losses, probe_records, run_stage

QWEN3_TEMPLATE = str(Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja")
# Each stage's recipe: Zephyr's own where it has one, otherwise the shipped recipe for a Mistral-7B base.
MISTRAL_RECIPES = {
    "sft": "recipes/zephyr-7b-beta/sft/config_full.yaml",
    "dpo": "recipes/zephyr-7b-beta/dpo/config_full.yaml",
    "rm": "recipes/tiny/rm/config.yaml",
    "value": "recipes/mistral-7b/value/config_lora.yaml",
    "pt": "recipes/tiny/pt/config.yaml",
    "kto": "recipes/tiny/kto/config.yaml",
}
# Stages the two parametrized tests below leave out, and why (tests/unit/test_layout.py checks that the recipes and
# these cover the registry).
PENDING = {"grpo": "its real-vocabulary run is the last test: a Qwen3 policy against a reward model on Mistral's"}
CPU_OVERRIDES = [
    *("--attn_implementation", "sdpa", "--bf16", "false", "--dtype", "float32", "--report_to", "none"),
    *("--dataset_num_proc", "1", "--max_steps", "3", "--per_device_train_batch_size", "4"),
    *("--gradient_accumulation_steps", "1", "--per_device_eval_batch_size", "4", "--save_strategy", "no"),
    *("--logging_steps", "1", "--dataset_splits", '["train", "test"]'),
]
STAGE_OVERRIDES = {  # Qwen3 runs the tiny recipes, which name the tiny world's zephyr template: use Qwen3's own
    "qwen3": ["--chat_template", QWEN3_TEMPLATE],
    "mistral": [],
}


def world_tokenizer(world: Path, name: str):
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(world / "base")))
    tokenizer.chat_template = load_chat_template(QWEN3_TEMPLATE if name == "qwen3" else "zephyr")
    return tokenizer


def fingerprint(**fields: list[int]) -> str:
    """As `tests/support/launch_probe.py` fingerprints an example: every `*input_ids` field's unpadded ids, in key
    order."""
    digest = hashlib.sha1()
    for key in sorted(fields):
        digest.update(key.encode() + b":" + ",".join(map(str, fields[key])).encode() + b";")
    return digest.hexdigest()[:16]


@cache  # the data test and the training test of a stage check the same rows once
def checked_examples(world: Path, name: str, stage: str) -> frozenset[str]:
    """Tokenize the stage's train split as the script does, check every row against the invariant, and return the
    fingerprints of the examples (so a run can be shown to train exactly these)."""
    tokenizer = world_tokenizer(world, name)
    rows = load_dataset(str(world / stage), split="train")
    if stage == "sft":
        data, report = tokenize_chats(rows, tokenizer, max_length=256)
        expected = []
        for row in rows:
            encoding = encode_chat(tokenizer, row["messages"])
            check_invariant(tokenizer, row["messages"], encoding)
            expected += encoding.examples
        assert data.to_list() == expected
        # Qwen3 renders an earlier turn without the empty think block its last turn gets: every 2-turn chat expands.
        assert report.expanded_rows == (len(rows) if name == "qwen3" else 0)
        return frozenset(fingerprint(input_ids=example["input_ids"]) for example in expected)
    if stage in ("dpo", "rm"):
        if stage == "dpo":
            data, _ = tokenize_preferences(rows, tokenizer, max_length=256, max_prompt_length=None)
        else:
            data = tokenize_pairs(rows, tokenizer, max_length=256)
        fingerprints = set()
        for row, example in zip(rows, data, strict=True):
            pair = to_pair(row)  # multi-turn prompts: the prompt is what inference renders, each reply follows it
            expected = {
                side: expected_turn(tokenizer, [*pair.prompt, reply], len(pair.prompt))
                for side, reply in (("chosen", pair.chosen), ("rejected", pair.rejected))
            }
            if stage == "dpo":
                assert example["prompt_ids"] == expected["chosen"][0] == expected["rejected"][0]
                assert example["chosen_ids"] == expected["chosen"][1]
                assert example["rejected_ids"] == expected["rejected"][1]
                sequences = [example["prompt_ids"] + example[f"{side}_ids"] for side in ("chosen", "rejected")]
            else:
                sequences = [example[f"{side}_ids"] for side in ("chosen", "rejected")]
                assert sequences == [expected[side][0] + expected[side][1] for side in ("chosen", "rejected")]
            # Both trainers batch a pair as two rows, prompt + chosen and prompt + rejected.
            fingerprints.update(fingerprint(input_ids=sequence) for sequence in sequences)
        return frozenset(fingerprints)
    if stage == "kto":
        data, _ = tokenize_unpaired(rows, tokenizer, max_length=256)
        for row, example in zip(rows, data, strict=True):
            unpaired = to_unpaired(row)
            prompt_ids, reply_ids = expected_turn(
                tokenizer, [*unpaired.prompt, unpaired.completion], len(unpaired.prompt)
            )
            assert (example["prompt_ids"], example["completion_ids"]) == (prompt_ids, reply_ids)
        # Each row is trained beside its KL sequence: its prompt with the completion of the row before it in its
        # batch (the runs below take batches of 4 in one process).
        data = with_kl_completions(data, group_size=4)
        return frozenset(
            fingerprint(
                input_ids=e["prompt_ids"] + e["completion_ids"], KL_input_ids=e["prompt_ids"] + e["KL_completion_ids"]
            )
            for e in data
        )
    if stage == "pt":
        # The oracle is the tokenizer's own call: its BOS where it adds one (Mistral), none where it adds none (Qwen3),
        # then EOS, which pt appends to every document.
        data, _ = tokenize_documents(
            rows, tokenizer, boundaries=DocumentBoundaries.of(tokenizer), max_length=256, cut_long=False
        )
        expected = [tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id] for row in rows]
        assert data["input_ids"] == expected
        assert {ids[0] == tokenizer.bos_token_id for ids in expected} == {name == "mistral"}
        return frozenset(fingerprint(input_ids=ids) for ids in expected)
    data, _ = tokenize_traces(rows, tokenizer, max_length=256)
    for row, example in zip(rows, data, strict=True):
        trace = to_trace(row)
        messages = [{"role": "user", "content": trace.prompt}] if isinstance(trace.prompt, str) else trace.prompt
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
        assert example["input_ids"][: len(prompt)] == prompt  # the inference prompt
        ends = [i for i, q in enumerate(example["Q"]) if q != -100.0]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        for end, step in zip(ends, trace.steps, strict=True):  # each step ends where prompt + steps so far end
            text += step.strip() + "\n"
            assert example["input_ids"][: end + 1] == tokenizer(text, add_special_tokens=False)["input_ids"]
    return frozenset(fingerprint(input_ids=example["input_ids"]) for example in data)


@pytest.mark.parametrize("stage", [name for name in STAGES if name not in PENDING])
@pytest.mark.parametrize("name", ["mistral", "qwen3"])
def test_stage_data_meets_the_invariant_on_real_vocabularies(name, stage, mistral_world, qwen_world):
    world = mistral_world if name == "mistral" else qwen_world
    assert len(checked_examples(world, name, stage)) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("stage", [name for name in STAGES if name not in PENDING])
@pytest.mark.parametrize("name", ["mistral", "qwen3"])
def test_stage_trains_on_real_vocabularies(name, stage, mistral_world, qwen_world, tmp_path):
    world = mistral_world if name == "mistral" else qwen_world
    recipe = MISTRAL_RECIPES[stage] if name == "mistral" else f"recipes/tiny/{stage}/config.yaml"
    result, probe_dir = run_stage(
        stage, world, tmp_path / stage, *CPU_OVERRIDES, *STAGE_OVERRIDES[name], recipe=recipe
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = logged_losses(tmp_path / stage)
    assert len(losses) >= 3 and all(math.isfinite(loss) for loss in losses)
    trained = {
        fp for step in probe_records(probe_dir).values() for record in step.values() for fp in record["examples"]
    }
    if stage == "sft" and name == "mistral":
        # Zephyr's SFT recipe packs chats into rows: a packed row is no single example's fingerprint.
        assert trained
    else:
        assert trained and trained <= checked_examples(world, name, stage)
    metrics = json.loads((tmp_path / stage / "train_results.json").read_text())
    print(f"{name} {stage}: {metrics['train_runtime'] / 3:.2f} s/step")


@pytest.mark.slow
def test_grpo_trains_a_qwen3_policy_against_a_reward_model_on_mistrals_vocabulary(qwen_world, mistral_world, tmp_path):
    """Three GRPO steps: the policy on Qwen3's 151k vocabulary and vendor template, the reward a one-output classifier
    on Mistral's 32k SentencePiece vocabulary and the zephyr template. Each side tokenizes with its own tokenizer."""
    reward_model = tmp_path / "rm"
    config = AutoConfig.from_pretrained(mistral_world / "base", num_labels=1)
    MistralForSequenceClassification(config).save_pretrained(reward_model)
    reward_tokenizer = world_tokenizer(mistral_world, "mistral")
    reward_tokenizer.save_pretrained(reward_model)
    rewards = [{"kind": "reward_model", "path": str(reward_model)}]
    result, _ = run_stage(
        "grpo",
        qwen_world,
        tmp_path / "grpo",
        *("--attn_implementation", "sdpa", "--bf16", "false", "--dtype", "float32", "--report_to", "none"),
        *("--max_steps", "3", "--per_device_train_batch_size", "8", "--num_generations", "4", "--logging_steps", "1"),
        *("--max_completion_length", "8", "--save_strategy", "no", "--rewards", json.dumps(rewards)),
        *STAGE_OVERRIDES["qwen3"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())["log_history"]
    rewards_logged = [entry["rewards/reward_model_rm/mean"] for entry in history if "loss" in entry]
    assert len(rewards_logged) == 3 and all(math.isfinite(value) for value in rewards_logged)
    assert len(logged_losses(tmp_path / "grpo")) == 3
