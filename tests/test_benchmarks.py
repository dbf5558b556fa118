"""The benchmark harness's pure pieces (`benchmarks/`): token counting and padding on hand-made batches, step timing,
ratios and FLOP estimates against hand-computed numbers, and the data generator's length claims. No timing
assertions: nothing here trains."""

import json
import math
import random
import statistics

import pytest
import torch

from alignment.chat.turns import tokenize_conversation
from alignment.data.pairs import encode_pair
from alignment.value.rows import to_trace, tokenize_trace
from benchmarks.configs import CONFIGURATIONS, QUICK
from benchmarks.data import LengthProfile, TextSampler, chat_rows, preference_rows, trace_rows
from benchmarks.evidence_tables import losses_section, spread
from benchmarks.measure import (
    StepMeter,
    StepRecord,
    TokenCounts,
    batch_token_counts,
    model_flops_utilization,
    peak_flops,
)
from benchmarks.real_data import rendered_length, sharegpt_rows
from benchmarks.report import (
    REAL_VOCABULARY_GOALS,
    Summary,
    flops_per_token,
    keeping_other_sections,
    median_figures,
    paired_ratio,
    real_vocabulary_goal_lines,
    with_sections_replaced,
)
from benchmarks.search import discordant, rule_labelled, sign_test, soundness
from benchmarks.sharegpt import build_tokenizer
from tiny_world import STYLE_FLAW

MAX_LENGTH = 256


def test_padded_batch_counts():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, 6, 7, -100], [-100, 9, -100, -100]]),
    }
    counts = batch_token_counts(batch)
    # 8 positions, 5 real tokens, 3 with a label, 2 rows; a whole-row kernel computes 2 x 4^2 query-key pairs.
    assert counts == TokenCounts(positions=8, non_pad=5, trained=3, sequences=2, attention_pairs=32)
    assert counts.padding_fraction == pytest.approx(3 / 8)
    assert batch_token_counts(batch, varlen_attention=True).attention_pairs == 3**2 + 2**2


def test_padding_free_batch_counts():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9]]),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1]]),
        "labels": torch.tensor([[-100, 6, 7, -100, 9]]),
    }
    counts = batch_token_counts(batch)
    assert counts == TokenCounts(positions=5, non_pad=5, trained=3, sequences=2, attention_pairs=25)
    assert counts.padding_fraction == 0
    assert batch_token_counts(batch, varlen_attention=True).attention_pairs == 9 + 4


def test_preference_and_reward_batches_count_their_trained_tokens():
    dpo = {
        "input_ids": torch.tensor([[5, 6, 7], [5, 8, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "completion_mask": torch.tensor([[0, 1, 1], [0, 1, 0]]),
    }
    assert batch_token_counts(dpo).trained == 3
    reward = {key: dpo[key] for key in ("input_ids", "attention_mask")}
    assert batch_token_counts(reward).trained == 5  # a reward model reads every real token


def test_steady_state_skips_warmup_steps():
    meter = StepMeter()
    meter._train_begin = 0.0
    step = TokenCounts(positions=100, non_pad=80, trained=40, sequences=4, attention_pairs=2000)
    # Steps end at 5 s (warm-up), 6 s and 8 s: the two measured steps took 3 s (and 2 CPU seconds) for 160 tokens.
    meter.steps = [
        StepRecord(5.0, 4.0, step, 900.0),
        StepRecord(6.0, 5.0, step, 300.0),
        StepRecord(8.0, 6.0, step, 200.0),
    ]
    figures = meter.steady_state(warmup_steps=1)
    assert figures["measured_steps"] == 2
    assert figures["non_pad_tokens_per_s"] == pytest.approx(160 / 3)
    assert figures["trained_tokens_per_s"] == pytest.approx(80 / 3)
    assert figures["seconds_per_step"] == pytest.approx(1.5)
    assert figures["non_pad_tokens_per_cpu_s"] == pytest.approx(80)
    assert figures["padding_fraction"] == pytest.approx(0.2)
    assert figures["attention_pairs_per_token"] == pytest.approx(25)
    assert figures["step_seconds"] == pytest.approx([5.0, 1.0, 2.0])
    assert figures["step_peak_memory_mb"] == 250.0  # the measured steps' median: the warm-up step allocates more
    with pytest.raises(ValueError, match="leave none to measure"):
        meter.steady_state(warmup_steps=3)


def test_ratios_medians_and_flops():
    runs = [{"tps": 120.0, "loss": 2.0}, {"tps": 90.0, "loss": 2.0}, None, {"tps": 110.0, "loss": 2.0}]
    reference = [{"tps": 100.0}, {"tps": 100.0}, {"tps": 100.0}, None]
    # Pairs from the same repeat only: 1.2 and 0.9 -> median 1.05 (repeats 3 and 4 each lack one side).
    assert paired_ratio(runs, reference, "tps") == pytest.approx(1.05)
    assert median_figures([{"tps": 1.0, "step_seconds": [1.0]}, {"tps": 3.0, "mfu": None}]) == {"tps": 2.0}

    weights, attention = flops_per_token(
        {"positions_per_token": 1.5, "attention_pairs_per_token": 100.0}, QUICK, num_parameters=1000
    )
    assert weights == 6 * 1000 * 1.5
    assert attention == 12 * QUICK.hidden_size * QUICK.num_layers * 100


def test_a_rerun_keeps_the_sections_other_benchmarks_wrote():
    old = "# Benchmarks\n\n## Results\n\nold table\n\n## ShareGPT: a real corpus\n\ncorpus table\n"
    new = "# Benchmarks\n\n## Results\n\nnew table\n"
    assert keeping_other_sections(new, old) == (
        "# Benchmarks\n\n## Results\n\nnew table\n\n## ShareGPT: a real corpus\n\ncorpus table\n"
    )
    assert keeping_other_sections(new, None) == new
    assert keeping_other_sections(new, new) == new


def test_a_section_replaces_its_namesake_and_keeps_the_rest():
    old = "# Benchmarks\n\nintro\n\n## Results\n\nold table\n\n## Losses\n\nold losses\n\n## ShareGPT\n\ncorpus\n"
    assert with_sections_replaced(old, ["## Losses\n\nnew losses", "## Demo\n\nnew demo\n"]) == (
        "# Benchmarks\n\nintro\n\n## Results\n\nold table\n\n## Losses\n\nnew losses\n\n## ShareGPT\n\ncorpus\n\n"
        "## Demo\n\nnew demo\n"
    )
    assert with_sections_replaced(None, ["## Demo\n\nx"]) == "## Demo\n\nx\n"


def test_the_loss_table_marks_what_reward_hacks():
    def run(rule, sums, accuracy):
        return {"rule_correct": rule, "sum_correct": sums, "reward_accuracy": accuracy, "reward_margin": 1.0,
                "logp_margin": 10.0, "train_seconds": 20.0}  # fmt: skip

    dsft = {"rule_correct": 0.02, "sum_correct": 0.98}
    by_seed = {
        0: {"dsft": dsft, "good": run(0.95, 0.97, 1.0), "broken": run(0.30, 0.40, 1.0), "weak": run(0.1, 0.98, 0.6)},
        1: {"dsft": dsft, "good": run(0.93, 0.96, 1.0), "broken": run(0.96, 0.96, 1.0), "weak": run(0.2, 0.98, 0.7)},
    }
    rows = {line.split(" | ")[0]: line for line in losses_section(by_seed, "cmd", 1.0).splitlines() if "|" in line}
    assert rows["| good"].endswith("| no |") and rows["| weak"].endswith("| no |")  # weak: the objective not met
    assert rows["| broken"].endswith("| **yes** (1/2 seeds) |")
    assert "| 0.930 / 0.940 / 0.950 |" in rows["| good"]
    assert spread([0.5, 0.1, 0.3]) == "0.100 / 0.300 / 0.500" and spread([0.25]) == "0.250"


def test_paired_searches_count_the_prompts_only_one_gets_right(tmp_path):
    outcomes = {"a": [True, True, False, True, False], "b": [True, False, False, False, True]}
    for run, correct in outcomes.items():
        (tmp_path / run).mkdir()
        lines = (json.dumps({"index": index, "correct": right}) for index, right in enumerate(correct))
        (tmp_path / run / "progress.jsonl").write_text("\n".join(lines) + "\n")
    assert discordant(tmp_path / "a", tmp_path / "b") == [2, 1]
    assert discordant(tmp_path / "b", tmp_path / "a") == [1, 2]


def test_sign_test_against_hand_computed_values():
    assert sign_test(5, 0) == 2 / 32  # 5 of 5 discordant prompts one way: 2 * (1/2)^5
    assert sign_test(1, 3) == sign_test(3, 1) == 2 * (1 + 4) / 16
    assert sign_test(6, 2) == 2 * (1 + 8 + 28) / 256
    assert sign_test(2, 2) == sign_test(0, 0) == 1.0  # an even split, and no discordant prompt: no evidence


def test_verified_traces_are_sorted_by_how_their_steps_reach_the_answer():
    def row(reply: str) -> dict:
        return {
            "messages": [{"role": "user", "content": "Add 3, 5, 6 and 8."}, {"role": "assistant", "content": reply}]
        }

    rows = [
        row("3+5=8\n8+6=14\n14+8=22"),  # the gold chain
        row("3+5=8\n8+6=14\n14+8=22\n"),  # the gold chain, a trailing newline
        row("5+8=13\n13+3=16\n16+6=22"),  # another order
        row("3+5=8\n8+6=15\n15+7=22"),  # two misadds that cancel
        row("3+5=8\n8+5=13\n13+9=22"),  # 5 twice and a 9 the prompt lacks: the right sum all the same
    ]
    assert soundness(rows) == [2, 1, 2]
    assert soundness([]) == [0, 0, 0]


def test_tree_traces_are_relabelled_by_the_step_rule():
    tree_row = {
        "prompt": "Add 7, 5, 9 and 3.",
        "response": [{"step": "7+5=12", "Q": -0.5}, {"step": "12+8=20", "Q": 0.2}],
    }
    assert rule_labelled([tree_row]) == [
        {"prompt": "Add 7, 5, 9 and 3.", "response": [{"step": "7+5=12", "Q": 1.0}, {"step": "12+8=20", "Q": -1.0}]}
    ]


def test_mfu_against_the_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA GeForce RTX 4090") is None
    assert model_flops_utilization(1_000_000, 1e6, 1e13) == pytest.approx(0.6)
    assert model_flops_utilization(1_000_000, 1e6, None) is None


def test_text_has_exactly_the_requested_tokens(tiny_tokenizer):
    sampler, rng = TextSampler(tiny_tokenizer), random.Random(0)
    for tokens in (1, 2, 7, 40, 200):
        text = sampler.text(rng, tokens)
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == tokens
        assert tiny_tokenizer.unk_token_id not in ids


def test_chats_are_long_tailed_and_fit_max_length(tiny_tokenizer):
    rows = chat_rows(tiny_tokenizer, 300, max_length=MAX_LENGTH, seed=0)
    chat_lengths = [len(tokenize_conversation(tiny_tokenizer, row["messages"])["input_ids"]) for row in rows]
    assert max(chat_lengths) <= MAX_LENGTH
    assert {len(row["messages"]) // 2 for row in rows} == {1, 2, 3}  # 1-3 exchanges (+ an optional system prompt)
    replies = [
        len(tiny_tokenizer(m["content"], add_special_tokens=False)["input_ids"])
        for row in rows
        for m in row["messages"]
        if m["role"] == "assistant"
    ]
    # Log-normal: the median where the profile puts it (capping only shortens the longest chats' last turns), the
    # mean above the median, a long right tail (sigma 0.9: the 95th percentile at 4.4x the median before capping).
    median = statistics.median(replies)
    assert median == pytest.approx(LengthProfile(MAX_LENGTH).median("assistant"), rel=0.25)
    assert statistics.mean(replies) > 1.2 * median
    assert sorted(replies)[int(0.95 * len(replies))] > 3 * median
    logs = [math.log(n) for n in replies]
    assert statistics.stdev(logs) == pytest.approx(0.9, abs=0.2)


def test_pairs_and_traces_fit_max_length(tiny_tokenizer):
    for row in preference_rows(tiny_tokenizer, 200, max_length=MAX_LENGTH, seed=1):
        encoded = encode_pair(tiny_tokenizer, row)
        for side in ("chosen", "rejected"):
            assert len(encoded["prompt_ids"] + encoded[f"{side}_ids"]) <= MAX_LENGTH
        assert row["rejected"][0]["content"].endswith(STYLE_FLAW)
        assert not row["chosen"][0]["content"].endswith(STYLE_FLAW)
    for row in trace_rows(tiny_tokenizer, 200, max_length=MAX_LENGTH, seed=2):
        assert len(tokenize_trace(tiny_tokenizer, to_trace(row), max_length=None)["input_ids"]) <= MAX_LENGTH
        q = [step["Q"] for step in row["response"]]
        assert q == sorted(q, reverse=True)  # +1 until the first wrong step, -1 from it on


def test_real_chats_and_pairs_fit_and_use_each_conversation_once(real_tokenizer_cache):
    tokenizer = build_tokenizer("qwen3", real_tokenizer_cache)
    rows = sharegpt_rows(tokenizer, {"sft": 3, "dpo": 2, "dpo_test": 2}, max_length=MAX_LENGTH)
    assert [len(rows[name]) for name in ("sft", "dpo", "dpo_test")] == [3, 2, 2]
    for row in rows["sft"]:
        assert MAX_LENGTH // 2 <= rendered_length(tokenizer, row["messages"]) <= MAX_LENGTH
    replies = [row["messages"][-1]["content"] for row in rows["sft"]]
    for row in rows["dpo"] + rows["dpo_test"]:
        assert [m["role"] for m in row["prompt"]] == ["user"]
        for side in ("chosen", "rejected"):
            assert rendered_length(tokenizer, row["prompt"] + row[side]) <= MAX_LENGTH
        assert row["chosen"] != row["rejected"]
        replies += [row["chosen"][0]["content"], row["rejected"][0]["content"]]
    assert len(set(replies)) == len(replies)  # no conversation feeds two rows


def test_real_vocabulary_goals_say_met_or_missed():
    def summary(key: str, memory: float | None, step_time: float | None) -> Summary:
        configuration = next(c for c in CONFIGURATIONS if c.key == key)
        return Summary(configuration, {}, None, None, memory, step_time, repeats=1, failures=0)

    lines = real_vocabulary_goal_lines(
        [summary("sft/trl", None, None), summary("sft/padded", 0.1, 0.62), summary("dpo/defaults", 0.5, 0.9)]
    )
    assert {(stage, name) for stage, name, _, _ in REAL_VOCABULARY_GOALS} >= {("sft", "padded"), ("dpo", "defaults")}
    assert lines == [
        "- SFT `padded` against `trl`: step peak 0.10x (goal <= 0.4x: met); s/step 0.62x (goal <= 1.0x: met)",
        "- DPO `defaults` against `trl`: step peak 0.50x (goal <= 0.4x: missed); s/step 0.90x (goal <= 1.0x: met)",
    ]
