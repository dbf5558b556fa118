"""Online RL against ReST-MCTS* on the chained additions, from the same dSFT policy at the same generated tokens:

* GRPO with the outcome rule alone (`tiny_world.chains:final_answer_is_correct`);
* GRPO with the outcome rule plus the step value model as a process reward (`kind: value_model`, the weakest step);
* the ReST-MCTS* iteration (MCTS* over the self-training prompts, then SFT on its verified traces).

    python benchmarks/grpo_chains.py --seeds 0 1 2 --num_train 500 --num_search 1000 --threads 1

Each GRPO run trains on the iteration's self-training prompts (questions with answers only) for as many steps as
the iteration's training search generated policy tokens, at the greedy policy's tokens per reply; the table reports
the completion tokens each run actually generated. The value model is the iteration's own (stage 3), so the process
reward costs no training of its own. Held-out: greedy accuracy on the 200 test chains, with paired sign tests as in
the search tables.

The runs live in `benchmarks/search.py`'s work folder, one per seed and task variant, so the world, the dSFT policy,
the value model and the iteration are shared with that benchmark (whichever runs first trains them, the other
reuses them). The section replaces its own in `benchmarks/RESULTS.md` and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# `python benchmarks/grpo_chains.py` puts benchmarks/ on the path, not the repository that holds the packages.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.report import write_section  # noqa: E402
from benchmarks.search import (  # noqa: E402
    HELD_OUT_SEARCHES,
    VERIFIER,
    SeedRuns,
    add_arguments,
    discordant,
    paired_row,
    parsed_task,
    spread,
)

COMPLETIONS_PER_STEP = 32  # recipes/tiny/rest_mcts/grpo/config.yaml: 4 prompts x 8 completions
# GRPO's rewards per method, given the seed's value model: the outcome rule, and the rule plus the process reward.
OUTCOME = {"kind": "rule", "path": VERIFIER, "weight": 1.0}
GRPO_REWARDS = {
    "grpo_outcome": lambda value: [OUTCOME],
    "grpo_process": lambda value: [
        OUTCOME,
        {"kind": "value_model", "path": str(value), "weight": 0.5, "aggregate": "min"},
    ],
}
LABELS = {
    "before": "dSFT policy (before)",
    "grpo_outcome": "GRPO, outcome rule",
    "grpo_process": "GRPO, outcome rule + step value model (min)",
    "iteration": "ReST-MCTS* iteration",
}
# Paired on the held-out prompts: (A, B).
PAIRS = (
    ("grpo_outcome", "iteration"),
    ("grpo_process", "iteration"),
    ("grpo_process", "grpo_outcome"),
    ("grpo_outcome", "before"),
    ("grpo_process", "before"),
    ("iteration", "before"),
)
TITLE = "## Online RL against ReST-MCTS* (tiny world, chained additions)"


def completion_tokens(output_dir: Path) -> int:
    """The completion tokens a GRPO run generated: each logged step's mean completion length (one log a step) times
    its completions."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return round(sum(log["completions/mean_length"] * COMPLETIONS_PER_STEP for log in history if "loss" in log))


def seed_figures(runs: SeedRuns) -> dict:
    """The three methods and the dSFT policy on one seed: held-out greedy accuracy, generated tokens, minutes."""
    chains = runs.world / "chains"
    sft0, _, value0, searched, sft1, value1 = runs.iteration()
    greedy = HELD_OUT_SEARCHES["greedy"]
    held_out = {
        "before": runs.search("test_greedy", sft0, value0, "test", greedy),
        "iteration": runs.search("test_greedy_iter1", sft1, value1, "test", greedy),
    }
    tokens = {"iteration": searched["generated_tokens"]}
    steps = round(tokens["iteration"] / (COMPLETIONS_PER_STEP * held_out["before"]["generated_tokens_per_prompt"]))
    prompts = json.dumps({str(chains / "prompts"): 1.0})
    for method, rewards in GRPO_REWARDS.items():
        overrides = ["--model_name_or_path", str(sft0), "--dataset_mixer", prompts, "--max_steps", str(steps)]
        trained = runs.stage(method, "grpo/config.yaml", [*overrides, "--rewards", json.dumps(rewards(value0))])
        tokens[method] = completion_tokens(trained)
        held_out[method] = runs.search(f"test_greedy_{method}", trained, value0, "test", greedy)
    iteration = ("search_train", "sft_iter1", "value_iter1")
    minutes = {method: runs.seconds.get(method, 0) / 60 for method in GRPO_REWARDS}
    minutes["iteration"] = sum(runs.seconds.get(name, 0) for name in iteration) / 60
    paired = {f"{a} vs {b}": discordant(runs.root / run_name(a), runs.root / run_name(b)) for a, b in PAIRS}
    return {
        "accuracy": {method: result["accuracy"] for method, result in held_out.items()},
        "tokens": tokens,
        "minutes": minutes,
        "grpo_steps": steps,
        "paired": paired,
    }


def run_name(method: str) -> str:
    """The held-out greedy search of a method (the names `benchmarks/search.py` gives its own)."""
    return {"before": "test_greedy", "iteration": "test_greedy_iter1"}.get(method, f"test_greedy_{method}")


def section(figures: dict[int, dict], command: str) -> str:
    seeds = sorted(figures)
    per_seed = [figures[seed] for seed in seeds]
    lines = [
        TITLE,
        "",
        f"`{command}` (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}; {os.cpu_count()} cores). From "
        "the same dSFT policy, GRPO trains on the iteration's self-training prompts for "
        f"{spread([f['grpo_steps'] for f in per_seed], '{:.0f}')} steps of {COMPLETIONS_PER_STEP} completions: the "
        "policy tokens the iteration's training search generated. Held-out: greedy on the 200 chains of "
        "`prompts/test.jsonl`; accuracy = final answer right. Median (min-max) over seeds.",
        "",
        "| method | held-out greedy accuracy | per seed | policy tokens generated in training | minutes |",
        "|---|---|---|---|---|",
    ]
    for method, label in LABELS.items():
        accuracy = [f["accuracy"][method] for f in per_seed]
        tokens = [f["tokens"][method] for f in per_seed] if method != "before" else None
        minutes = [f["minutes"][method] for f in per_seed] if method != "before" else None
        lines.append(
            f"| {label} | {spread(accuracy, '{:.3f}')} | {' / '.join(f'{a:.3f}' for a in accuracy)} "
            f"| {spread(tokens, '{:.0f}') if tokens else '-'} | {spread(minutes, '{:.1f}') if minutes else '-'} |"
        )
    lines += [
        "",
        "Paired on the held-out prompts: prompts A gets right and B wrong, and the reverse, per seed and over the "
        "seeds together, with the exact sign test of the split:",
        "",
        "| A vs B | " + " | ".join(f"seed {seed}" for seed in seeds) + " | all seeds | sign-test p |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    lines += [
        paired_row(f"{LABELS[a]} vs {LABELS[b]}", [f["paired"][f"{a} vs {b}"] for f in per_seed]) for a, b in PAIRS
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "benchmarks/search.py's work folder: the runs both benchmarks share")
    args, task = parsed_task(parser)
    start = time.perf_counter()
    figures = {}
    for seed in args.seeds:
        root = Path(args.work_dir) / task.folder(seed)
        cached = root / "grpo_figures.json"
        if not cached.is_file():
            cached.write_text(json.dumps(seed_figures(SeedRuns(root, seed, task)), indent=2))
        figures[seed] = json.loads(cached.read_text())
    command = f"python benchmarks/grpo_chains.py --seeds {' '.join(map(str, args.seeds))}{task.flags()}"
    write_section(section(figures, command), args.output)
    print(f"\n{(time.perf_counter() - start) / 60:.1f} min; written to {args.output}")


if __name__ == "__main__":
    main()
