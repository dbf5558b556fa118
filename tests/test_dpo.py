"""End to end: `scripts/run_dpo.py` learns preferences on the tiny world; references cost no memory where they need
not; reference log-probs are computed once; bad pairs are refused by index.

The task: a careless teacher appends `tiny_world.STYLE_FLAW` to 70% of its answers; the tiny model SFT'd on
them answers with the flaw. DPO pairs (`preference_rows(..., rejection="style_flaw")`) prefer the same sum without
it; held-out pairs use operand pairs never seen in training. What DPO must change is measured two ways: held-out
`rewards/accuracies` and the share of greedy answers that are clean (`a+b=<number>` for the asked operands and
nothing else). The share that is also the right sum is reported, not asserted: after a short SFT the model barely
knows addition (0% before DPO, 1.5-3% after it), and DPO on these pairs does not teach it.
"""

import gc
import json

import pytest
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from trl import get_peft_config

from alignment.dpo.config import DPOConfig
from alignment.dpo.pairs import tokenize_preferences
from alignment.dpo.reference import load_reference_model
from alignment.dpo.trainer import PreferenceTrainer
from alignment.recipes.arguments import ModelArguments
from alignment.runtime.loading import load_model
from alignment.runtime.samplers import PairLengthGroupedSampler
from tests.support.greedy import greedy_shares
from tiny_world import (
    operand_pairs,
    preference_rows,
)

from .conftest import REPO, run, write_jsonl

TINY_DPO = "recipes/tiny/dpo/config.yaml"


def dpo_overrides(model, data, output_dir, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        "--dataset_mixer",
        json.dumps({str(data): 1.0}),
        "--output_dir",
        str(output_dir),
        "--disable_tqdm",
        "true",
        *extra,
    ]


# loss_type -> overrides of the tiny recipe (sigmoid + pref_ftx 1.0, beta 1.0, lr 3e-4, 30 steps of 32 pairs).
# Measured on this fixture (200 held-out pairs), before -> after 30 steps:
#   loss                             held-out rewards/accuracies   clean greedy share   rule-correct share
#   sigmoid + pref_ftx 1.0           (dropped: rewards are 0) -> 1.00   0.00 -> 1.00          0.00 -> 0.015
#   simpo (beta 2, gamma 0.5) + pref_ftx 1.0    0.00 -> 1.00        0.00 -> 1.00          0.00 -> 0.04
#   orpo (beta = lambda = 1)         0.00 -> 1.00                  0.00 -> 1.00          0.00 -> 0.035
# (The recipe's former lr 1e-3 with 16 pairs gave the same clean shares.) Earlier, on that recipe, the control:
#   simpo without pref_ftx           0.00 -> 1.00                  0.00 -> 0.20          0.00 -> 0.00
# Reference-free losses score the start: the SFT model gives the flawed reply the higher mean log-prob. Plain SimPO
# reward-hacks (chosen log-prob -6.9 -> -10.8, answers like `83+377`): held-out preference accuracy alone cannot tell,
# the clean share can; on another SFT run of the same data it kept 0.99 clean, so it is fragile, not a fixed failure.
# Every loss over 3 seeds, from the demo's 2,000-step SFT model: benchmarks/RESULTS.md.
LEARNING = {
    "sigmoid": [],
    "simpo": ["--loss_type", "simpo", "--beta", "2.0", "--simpo_gamma", "0.5", "--pref_ftx", "1.0"],
    "orpo": ["--loss_type", "orpo", "--beta", "1.0", "--pref_ftx", "0"],
}
# Thresholds well below the 1.00 measured after DPO and far above the start (0.00 for both: the control) and plain
# SimPO's clean share (0.20).
MIN_HELD_OUT_ACCURACY = 0.9
MIN_CLEAN_SHARE = 0.8


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", list(LEARNING))
def test_dpo_unlearns_the_teachers_flaw(loss_type, sft_model, dpo_data, sft_greedy_shares, tmp_path):
    result = run(
        "scripts/run_dpo.py",
        TINY_DPO,
        *dpo_overrides(sft_model, dpo_data, tmp_path, "--save_strategy", "no", *LEARNING[loss_type]),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    evals = [entry for entry in history if "eval_loss" in entry]
    before, after = evals[0], evals[-1]
    clean_before, correct_before = sft_greedy_shares
    clean_after, correct_after = greedy_shares(tmp_path, dpo_data)
    print(
        f"{loss_type}: held-out rewards/accuracies {before.get('eval_rewards/accuracies')} -> "
        f"{after['eval_rewards/accuracies']:.3f}; clean greedy share {clean_before:.3f} -> {clean_after:.3f}; "
        f"rule-correct share {correct_before:.3f} -> {correct_after:.3f}"
    )
    assert before["step"] == 0 and after["step"] > 0
    if loss_type == "sigmoid":
        # At step 0 the reference is the policy: every implicit reward is 0, so the metrics are dropped.
        assert "eval_rewards/accuracies" not in before and "eval_logps/chosen" in before
    else:
        assert before["eval_rewards/accuracies"] < MIN_HELD_OUT_ACCURACY  # the control: the SFT model prefers flaws
    assert clean_before < MIN_CLEAN_SHARE  # the control: the SFT model answers with the flaw
    assert after["eval_rewards/accuracies"] >= MIN_HELD_OUT_ACCURACY
    assert clean_after >= MIN_CLEAN_SHARE
    if loss_type == "orpo":
        assert "eval_sft_loss" in after and "eval_odds_ratio_loss" in after


def make_trainer(model_dir, data_rows, tmp_path, *, use_peft=False, max_length=128, **config) -> PreferenceTrainer:
    """What `scripts/run_dpo.py` builds, in-process, so tests can look inside the trainer."""
    model_args = ModelArguments(
        model_name_or_path=str(model_dir), use_peft=use_peft, lora_target_modules=["q_proj", "v_proj"]
    )
    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        max_length=max_length,
        ref_logps_cache_dir=str(tmp_path / "cache"),
        **{"per_device_train_batch_size": 16, **config},
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data, _ = tokenize_preferences(
        Dataset.from_list(data_rows), tokenizer, max_length=args.max_length, max_prompt_length=None
    )
    return PreferenceTrainer(
        model=load_model(model_args),
        ref_model=load_reference_model(model_args, args, tokenizer),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )


def causal_lms() -> list[PreTrainedModel]:
    """Every whole language model alive (not their inner `LlamaModel`s, which are models too)."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, PreTrainedModel) and hasattr(obj, "lm_head")]


def models_created_by(build) -> tuple[object, list[PreTrainedModel]]:
    """Run `build()` and return its result and every language model it left alive (the trainer holds them)."""
    before = {id(obj) for obj in causal_lms()}
    result = build()
    return result, [obj for obj in causal_lms() if id(obj) not in before]


def parameter_count(models) -> int:
    return sum(p.numel() for model in models for p in model.parameters())


@pytest.fixture(scope="module")
def few_rows():
    train_pairs, _ = operand_pairs(0)
    return preference_rows(train_pairs, 32, seed=3)


def test_lora_reference_is_the_base_with_the_adapter_disabled(tiny_world, few_rows, tmp_path):
    base = tiny_world / "base"
    full, full_models = models_created_by(lambda: make_trainer(base, few_rows, tmp_path / "full"))
    lora, lora_models = models_created_by(lambda: make_trainer(base, few_rows, tmp_path / "lora", use_peft=True))
    base_parameters = AutoModelForCausalLM.from_pretrained(base).num_parameters()
    lora_parameters = sum(p.numel() for p in lora.model.parameters() if p.requires_grad)
    print(
        f"parameters in memory: full fine-tuning {parameter_count(full_models)} (policy + reference copy), "
        f"LoRA {parameter_count(lora_models)} (base + adapter {lora_parameters}): reference costs "
        f"{base_parameters} parameters less"
    )
    assert len(full_models) == 2 and full.ref_model is not None  # the control: a frozen copy
    assert parameter_count(full_models) == 2 * base_parameters
    assert lora.ref_model is None and len(lora_models) == 1
    assert parameter_count(lora_models) == base_parameters + lora_parameters


@pytest.mark.parametrize("loss_type", ["orpo", "simpo"])
def test_reference_free_losses_load_no_reference_model(loss_type, tiny_world, few_rows, tmp_path):
    trainer, models = models_created_by(
        lambda: make_trainer(tiny_world / "base", few_rows, tmp_path, loss_type=loss_type)
    )
    assert trainer.ref_model is None
    assert len(models) == 1  # the policy only: TRL would otherwise have loaded a copy from the model's path
    trainer.train_dataset = trainer.train_dataset.select(range(16))
    trainer.args.max_steps = 1
    trainer.train()  # and the loss needs none
    assert trainer.reference_forward_passes == 0


def test_reference_log_probs_are_computed_once_and_cached(tiny_world, few_rows, tmp_path):
    base = tiny_world / "base"
    first = make_trainer(base, few_rows, tmp_path, precompute_ref_log_probs=True)
    assert first.reference_forward_passes == 2  # 32 pairs in batches of 16
    assert first.ref_model is None  # the starting policy computed them: no copy kept
    second = make_trainer(base, few_rows, tmp_path, precompute_ref_log_probs=True, beta=0.5)  # a beta sweep
    assert second.reference_forward_passes == 0
    assert second.train_dataset["ref_chosen_logps"] == pytest.approx(first.train_dataset["ref_chosen_logps"])
    changed = make_trainer(base, few_rows, tmp_path, precompute_ref_log_probs=True, max_length=100)
    assert changed.reference_forward_passes == 2  # same token ids (nothing is cut), but a different key
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_bad_pair_stops_the_run_naming_its_row(tiny_world, dpo_data, tmp_path):
    rows = [json.loads(line) for line in (dpo_data / "train.jsonl").read_text().splitlines()[:8]]
    rows[5]["rejected"] = rows[5]["chosen"]
    write_jsonl(tmp_path / "bad" / "train.jsonl", rows)
    result = run(
        "scripts/run_dpo.py", TINY_DPO, *dpo_overrides(tiny_world / "base", tmp_path / "bad", tmp_path / "out")
    )
    assert result.returncode != 0
    assert "row 5: chosen and rejected replies are identical" in result.stderr


def test_tiny_recipe_starts_from_the_tiny_sft_output():
    recipe = yaml.safe_load((REPO / TINY_DPO).read_text())
    assert recipe["model_name_or_path"] == "outputs/tiny/sft"
    assert recipe["loss_type"] == "sigmoid" and recipe["pref_ftx"] > 0  # plain sigmoid reward-hacks (module doc)


def test_group_by_length_groups_pairs_by_their_padded_width(tiny_world, few_rows, tmp_path):
    trainer = make_trainer(
        tiny_world / "base",
        few_rows,
        tmp_path,
        train_sampling_strategy="group_by_length",
        per_device_train_batch_size=4,
    )
    sampler = trainer._get_train_sampler()
    data = trainer.train_dataset
    widths = [
        len(prompt) + max(len(chosen), len(rejected))
        for prompt, chosen, rejected in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
    ]
    assert isinstance(sampler, PairLengthGroupedSampler) and sampler.lengths == widths and sampler.batch_size == 4
    order = list(sampler)
    assert sorted(order) == list(range(len(data)))  # every pair once per epoch
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    padded = sum(4 * max(widths[i] for i in batch) - sum(widths[i] for i in batch) for batch in batches)
    random_batches = [list(range(i, i + 4)) for i in range(0, len(order), 4)]
    padded_random = sum(4 * max(widths[i] for i in b) - sum(widths[i] for i in b) for b in random_batches)
    assert padded < padded_random
    assert trainer._get_eval_sampler(data).lengths == widths  # evaluation groups too (transformers' own would fail)
