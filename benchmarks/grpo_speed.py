"""`run_grpo.py` against plain TRL `GRPOTrainer`: the same model, prompts, reward and settings, each run in its own
process, alternating, so that the ratio measures what our layer costs (the issue's goal: at least 1.0x).

    python benchmarks/grpo_speed.py                         # the demo's dSFT model (make demo), 3 repeats
    python benchmarks/grpo_speed.py --model outputs/tiny/sft --steps 20 --repeats 3

Both train `recipes/tiny/grpo/config.yaml`'s settings (4 prompts x 8 completions a step, up to 16 completion tokens,
the rule `tiny_world.arithmetic:answer_is_correct`, `beta: 0.1`) on the same prompt-only rows (the prompt turns of
the tiny world's teacher chats, written once to the work folder). Ours is the script a user runs; plain TRL loads
the model and tokenizer with `from_pretrained` and calls `GRPOTrainer` with a function of the same rule. Each run's
completion tokens per second is its completions' tokens (each step's logged mean length times its completions)
over its `train_runtime`; the ratio is ours over TRL's, repeat by repeat. The section replaces its own in
`benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.report import machine_lines, with_sections_replaced  # noqa: E402
from benchmarks.search import spread  # noqa: E402

RECIPE = REPO_ROOT / "recipes" / "tiny" / "grpo" / "config.yaml"
RULE = "tiny_world.arithmetic:answer_is_correct"
TITLE = "## GRPO speed: `run_grpo.py` against plain TRL `GRPOTrainer`"
# Plain TRL with the recipe's settings: the model, tokenizer and prompts from argv, one rule as the reward.
PLAIN_TRL = """
import json, sys
import yaml
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from tiny_world.arithmetic import answer_is_correct

model_dir, prompts, output_dir, steps, recipe = sys.argv[1:6]
settings = yaml.safe_load(open(recipe))
keys = ("num_generations", "per_device_train_batch_size", "max_completion_length", "temperature", "beta",
        "loss_type", "learning_rate", "lr_scheduler_type", "gradient_checkpointing", "seed")

def rule(prompts, completions, **kwargs):
    return [float(answer_is_correct(p, c[-1]["content"])) for p, c in zip(prompts, completions)]

args = GRPOConfig(output_dir=output_dir, max_steps=int(steps), logging_steps=1, save_strategy="no", report_to="none",
                  bf16=False, **{key: settings[key] for key in keys})
trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=rule, args=args,
                      processing_class=AutoTokenizer.from_pretrained(model_dir),
                      train_dataset=load_dataset("json", data_files=prompts, split="train"))
trainer.train()
trainer.save_state()
"""


def write_prompts(teacher_chats: Path, path: Path, count: int) -> None:
    """The prompt turns of the first `count` teacher chats, as prompt-only rows both trainers read."""
    from alignment.data.formats import prompt_turns
    from alignment.data.readers import read_rows

    rows = read_rows(teacher_chats)[:count]
    path.write_text("".join(json.dumps({"prompt": prompt_turns(row["messages"])}) + "\n" for row in rows))


def figures(output_dir: Path, completions_per_step: int) -> dict[str, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    steps = [log for log in history if "completions/mean_length" in log]
    tokens = sum(log["completions/mean_length"] * completions_per_step for log in steps)
    runtime = next(log["train_runtime"] for log in history if "train_runtime" in log)
    return {
        "completion_tokens_per_s": tokens / runtime,
        "mean_length": tokens / completions_per_step / len(steps),
        "reward": statistics.fmean(log["reward"] for log in steps),
        "train_runtime": runtime,
    }


def run(command: list[str], threads: int | None) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/tiny/sft", help="the policy (the demo's dSFT model)")
    parser.add_argument("--teacher_chats", default="data/tiny/sft_teacher/train.jsonl")
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every run (default: the library's)")
    parser.add_argument("--work_dir", default="outputs/grpo_speed")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    import yaml

    settings = yaml.safe_load(RECIPE.read_text())
    completions_per_step = settings["per_device_train_batch_size"]
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts.jsonl"
    write_prompts(Path(args.teacher_chats), prompts, args.prompts)
    results: dict[str, list[dict]] = {"ours": [], "trl": []}
    for repeat in range(args.repeats):
        for name in results:
            output_dir = work / f"{name}_{repeat}"
            shutil.rmtree(output_dir, ignore_errors=True)  # a fresh run each time
            if name == "ours":
                command = [sys.executable, "scripts/run_grpo.py", str(RECIPE), "--model_name_or_path", args.model]
                command += ["--dataset_mixer", json.dumps({str(prompts): 1.0}), "--dataset_splits", '["train"]']
                command += ["--output_dir", str(output_dir), "--save_strategy"]
                command += ["no", "--logging_steps", "1", "--max_steps", str(args.steps), "--disable_tqdm", "true"]
            else:
                command = [sys.executable, "-c", PLAIN_TRL, args.model, str(prompts), str(output_dir)]
                command += [str(args.steps), str(RECIPE)]
            run(command, args.threads)
            results[name].append(figures(output_dir, completions_per_step))
            print(f"repeat {repeat} {name}: {results[name][-1]}", flush=True)
    ratios = [
        ours["completion_tokens_per_s"] / trl["completion_tokens_per_s"]
        for ours, trl in zip(results["ours"], results["trl"], strict=True)
    ]
    lines = [
        TITLE,
        "",
        f"`python benchmarks/grpo_speed.py --model {args.model} --teacher_chats {args.teacher_chats} "
        f"--steps {args.steps} --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f"`: {args.steps} steps of {completions_per_step} completions from `{args.model}`, each run in its own "
        "process, ours and TRL alternating. Median (min-max) over repeats.",
        "",
        "| trainer | completion tok/s | mean completion length | mean reward | train s |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        cells = [
            spread([run[key] for run in runs], fmt)
            for key, fmt in (("completion_tokens_per_s", "{:,.0f}"), ("mean_length", "{:.2f}"), ("reward", "{:.3f}"))
        ]
        runtime = statistics.median(run["train_runtime"] for run in runs)
        lines.append(f"| {'`run_grpo.py`' if name == 'ours' else 'plain TRL'} | {' | '.join(cells)} | {runtime:.1f} |")
    lines += [
        "",
        f"Ours over TRL in completion tokens per second, repeat by repeat: {', '.join(f'{r:.2f}x' for r in ratios)} "
        f"(median {statistics.median(ratios):.2f}x).",
        "",
        *machine_lines("cpu", None, args.threads),
    ]
    text = "\n".join(lines)
    output = Path(args.output)
    output.write_text(with_sections_replaced(output.read_text() if output.is_file() else None, [text]))
    print(text)


if __name__ == "__main__":
    main()
