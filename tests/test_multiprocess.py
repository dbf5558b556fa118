"""The multi-GPU path on two CPU processes: every stage under DDP and DeepSpeed ZeRO-3, launched with the shipped
accelerate configs unchanged (plus `--num_processes 2 --mixed_precision no`), trains exactly what one process
trains at the same global batch, and saves outputs a plain process loads without DeepSpeed.

Each stage runs 6 steps three ways: one process x batch 8, DDP 2 x 4, ZeRO-3 2 x 4, through
`tests/support/launch_probe.py`, which records the examples each rank trained on at each step.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO, logged_losses, probe_records, run, run_stage, saved_weights

pytestmark = pytest.mark.multiprocess

CONFIGS = REPO / "recipes" / "accelerate_configs"
ACCELERATE = (sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no")
LAYOUTS = {
    "one_process": (sys.executable,),
    "ddp": (*ACCELERATE, "--config_file", str(CONFIGS / "multi_gpu.yaml")),
    "zero3": (*ACCELERATE, "--config_file", str(CONFIGS / "deepspeed_zero3.yaml")),
}
# LoRA dropout off: each process draws its own dropout masks, which no layout can reproduce (with TRL's default 0.05
# the LoRA losses drift apart by 1e-3 from the third step, once the B matrices are non-zero).
LORA = ["--use_peft", "true", "--lora_target_modules", "all-linear", "--lora_dropout", "0"]
# case: (stage, extra arguments, largest logged-loss difference allowed). Weights may differ by up to 1e-4 more:
# float sums in another order move Adam's normalised steps by ~1e-5 (measured 1.01e-5).
CASES = {
    "sft": ("sft", [], 1e-5),
    "sft_lora": ("sft", LORA, 1e-5),
    # Without the SFT term: TRL's `sft` term is a token mean per micro-batch, so 8 pairs in one process and 4 + 4 in
    # two are averaged differently (measured: losses differ by 1.3e-3 after 8 steps). dpo_lora keeps the recipe's.
    "dpo": ("dpo", ["--pref_ftx", "0"], 1e-5),
    "dpo_lora": ("dpo", LORA, 1e-2),
    "rm": ("rm", [], 1e-5),
    "value": ("value", [], 1e-5),
    # Packed documents, padding-free: the probe fingerprints each document of the one flattened row.
    "pt": ("pt", [], 1e-5),
    # The KL completions are paired within the global micro-batch, so 8 rows in one process and 4 + 4 in two estimate
    # the same KL term. At beta 1: the tiny recipe's beta 10 scales the log-prob sums' float noise tenfold, past 1e-5
    # (measured: 1.1e-5 under ZeRO-3 at step 4).
    "kto": ("kto", ["--beta", "1.0"], 1e-5),
}
# Stages held to a test of their own here, and why (tests/unit/test_layout.py checks CASES and these cover the
# registry).
OWN_TEST = {
    "grpo": "each process samples its own completions, so 2 x 4 cannot equal 1 x 8 to 1e-5: "
    "test_grpo_ranks_split_what_one_process_generates_for",
}
SHORT_RUN = ["--max_steps", "6", "--logging_steps", "1", "--eval_strategy", "no", "--eval_on_start", "false"]


def launch(layout: str, case: str, world: Path, output_dir: Path, extra_env=None):
    stage, case_args, _ = CASES[case]
    batch = "8" if layout == "one_process" else "4"
    return run_stage(
        stage,
        world,
        output_dir,
        *SHORT_RUN,
        *["--save_strategy", "no", "--per_device_train_batch_size", batch, *case_args],
        launcher=LAYOUTS[layout],
        extra_env=extra_env,
    )


RELOAD = """
import json, sys, torch
from alignment.recipes.arguments import ModelArguments
from alignment.runtime.loading import load_model
from alignment.reward.scoring import load_reward_model
from alignment.value.modeling import load_value_model
stage, paths = sys.argv[1], sys.argv[2:]
ids = torch.tensor([[5, 17, 42, 99, 7, 3, 60, 11]])
outputs = []
for path in paths:
    with torch.no_grad():
        if stage == "rm":
            out = load_reward_model(path)[0](input_ids=ids).logits
        elif stage == "value":
            out = load_value_model(path)(input_ids=ids)["values"]
        else:
            out = load_model(ModelArguments(model_name_or_path=path)).eval()(input_ids=ids).logits
    outputs.append(out.flatten().tolist())
print(json.dumps({"deepspeed_imported": "deepspeed" in sys.modules, "outputs": outputs}))
"""


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_and_zero3_train_what_one_process_trains(case, tiny_world, tmp_path):
    outputs = {}
    for layout in LAYOUTS:
        output_dir = tmp_path / layout
        result, probe_dir = launch(layout, case, tiny_world, output_dir)
        assert result.returncode == 0, f"{layout}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        processes = 1 if layout == "one_process" else 2
        assert f"World size {processes}: global batch 8 = per-device batch {8 // processes}" in result.stdout
        outputs[layout] = (output_dir, probe_records(probe_dir))
    stage, _, tolerance = CASES[case]
    weight_tolerance = tolerance + 1e-4

    single_dir, single_steps = outputs["one_process"]
    assert sorted(single_steps) == list(range(6))
    for layout in ("ddp", "zero3"):
        output_dir, steps = outputs[layout]
        for step, ranks in steps.items():
            assert sorted(ranks) == ["rank0", "rank1"] and {r["world_size"] for r in ranks.values()} == {2}
            first, second = ranks["rank0"]["examples"], ranks["rank1"]["examples"]
            # Disjoint halves of exactly the batch the single process trained on at that step.
            assert not set(first) & set(second), f"{layout} step {step}: both ranks trained on the same example"
            assert sorted(first + second) == sorted(single_steps[step]["rank0"]["examples"]), f"{layout} {step}"
        assert logged_losses(output_dir) == pytest.approx(logged_losses(single_dir), abs=tolerance), layout
        single, multi = saved_weights(single_dir), saved_weights(output_dir)
        assert single.keys() == multi.keys() and single
        for key, tensor in single.items():
            assert multi[key].shape == tensor.shape, key  # ZeRO-3 saved the gathered tensor, not a shard
            assert (multi[key] - tensor).abs().max() <= weight_tolerance, (layout, key)
        if "lora" in case:
            assert all(tensor.abs().sum() > 0 for key, tensor in multi.items() if "lora_B" in key)

    if stage == "dpo":
        # The reference: a copy prepared by DeepSpeed for full DPO, none (the adapter disabled) for LoRA.
        reference = {r["reference"] for ranks in outputs["zero3"][1].values() for r in ranks.values()}
        assert reference == ({None} if "lora" in case else {"DeepSpeedEngine"})

    reload = run("-c", RELOAD, stage, str(single_dir), str(outputs["zero3"][0]), timeout=300)
    assert reload.returncode == 0, reload.stderr[-3000:]
    reloaded = json.loads(reload.stdout.strip().splitlines()[-1])
    assert not reloaded["deepspeed_imported"]
    one, zero3 = (torch.tensor(values) for values in reloaded["outputs"])
    assert (one - zero3).abs().max() <= 10 * weight_tolerance


def test_a_launch_whose_trainer_sees_one_process_stops(tiny_world, tmp_path):
    """Without the CPU switch, transformers gives each of two DDP processes a world of one: each would train a full
    copy on all the data. The world-size check stops it before any training."""
    result, probe_dir = launch("ddp", "sft", tiny_world, tmp_path / "out", extra_env={"PROBE_KEEP_CPU_SWITCH": "0"})
    assert result.returncode != 0
    message = "error: RecipeError: 2 processes were launched (WORLD_SIZE=2) but the trainer sees a world of 1"
    assert result.stderr.count(message) == 1  # rank 0 reports, rank 1 exits quietly
    # No traceback of ours: the only one is the launcher's own report that a child exited with status 2.
    assert result.stderr.count("RecipeError") == 1
    assert not list(probe_dir.glob("rank*.jsonl")), "a training step ran"


# GRPO, 3 steps of 2 prompts x 4 completions (global batch 8), short completions.
GRPO_SHORT_RUN = ["--max_steps", "3", "--num_generations", "4", "--max_completion_length", "8", "--beta", "0.1"]


def test_grpo_ranks_split_what_one_process_generates_for(tiny_world, tmp_path):
    """Each step, the two ranks of DDP and of ZeRO-3 sample completions for disjoint halves of exactly the prompts
    (each prompt once per completion) that one process samples for; the reward is logged for the whole batch; each
    layout saves whole tensors, moved from the initial weights."""
    # The random base model never writes a right sum: reward the length of its reply, so that rewards vary.
    (tmp_path / "length_rule.py").write_text("def length(prompt, reply):\n    return len(reply)\n")
    rewards = json.dumps([{"kind": "rule", "path": "length_rule:length"}])
    steps = {}
    for layout in LAYOUTS:
        batch = "8" if layout == "one_process" else "4"
        extra = [*GRPO_SHORT_RUN, "--per_device_train_batch_size", batch, "--save_strategy", "no", "--logging_steps"]
        result, probe_dir = run_stage(
            "grpo",
            tiny_world,
            tmp_path / layout,
            *[*extra, "1", "--rewards", rewards],
            launcher=LAYOUTS[layout],
            extra_env={"PYTHONPATH": str(tmp_path)},
        )
        assert result.returncode == 0, f"{layout}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        steps[layout] = probe_records(probe_dir)
    initial = saved_weights(tiny_world / "base")
    for layout in ("ddp", "zero3"):
        assert sorted(steps["one_process"]) == sorted(steps[layout]) == [0, 1, 2]
        for step, ranks in steps[layout].items():
            assert sorted(ranks) == ["rank0", "rank1"] and {r["world_size"] for r in ranks.values()} == {2}
            first, second = ranks["rank0"]["examples"], ranks["rank1"]["examples"]
            single = steps["one_process"][step]["rank0"]["examples"]
            assert len(first) == len(second) == 4
            assert sorted(first + second) == sorted(single) and len(set(single)) == 2, (layout, step)
        history = json.loads((tmp_path / layout / "trainer_state.json").read_text())["log_history"]
        assert len([log for log in history if "reward" in log]) == 3
        trained = saved_weights(tmp_path / layout)
        assert initial.keys() == trained.keys() and initial
        assert all(trained[key].shape == tensor.shape for key, tensor in initial.items())  # gathered, not a shard
        assert any((trained[key] - tensor).abs().max() > 0 for key, tensor in initial.items()), layout
