"""The markdown sections of `benchmarks/evidence.py`: each figure as min / median / max over seeds, with the
targets it must meet and the paper's ordering it is compared with."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import yaml

from benchmarks.evidence_runs import RECIPES
from benchmarks.report import machine_lines

# The demo's targets (issue "Alignment evidence that holds on any machine"): figure, test, as written.
DEMO_TARGETS: list[tuple[str, Callable[[float], bool], str]] = [
    ("dpo_rule_correct", lambda x: x >= 0.90, ">= 0.90"),
    ("sft_rule_correct", lambda x: x <= 0.05, "<= 0.05"),
    ("sum_correct_change", lambda x: x >= -0.02, ">= -0.02"),
    ("value_auroc", lambda x: x >= 0.90, ">= 0.90"),
]
# Zephyr (Tunstall et al. 2023), Table 3: MT-Bench and AlpacaEval win rate of each set-up on Mistral-7B.
ZEPHYR_TABLE_3 = {
    "ddpo_only": ("dDPO without dSFT", 4.76, 30.76),
    "dsft": ("dSFT", 6.64, 85.65),
    "dsft_then_sft_on_chosen": ("dSFT, then 1 SFT epoch on the chosen replies", 6.19, 78.54),
    "dsft_then_ddpo": ("dSFT, then dDPO", 7.00, 86.07),
}
# A loss reward-hacks when its own objective calls the held-out pairs won while the greedy replies are not what the
# pairs prefer (rule-correct below this) or lost arithmetic the SFT model had.
HACK_RULE_CORRECT = 0.5
HACK_SUM_DROP = 0.05


def spread(values: list[float], digits: int = 3) -> str:
    """`min / median / max`, or the one value of a single seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return " / ".join(f"{x:.{digits}f}" for x in (min(values), statistics.median(values), max(values)))


def footer(command: str, minutes: float, seeds: list[int]) -> list[str]:
    return [
        "",
        f"Seeds {', '.join(map(str, seeds))}; each cell is min / median / max over them. `{command}` "
        f"({minutes:.0f} min; runs already finished in its `--work_dir` are reused, not retrained), on:",
        *machine_lines("cpu", None, None),
    ]


def demo_figures(run: dict) -> dict[str, float]:
    """The demo's headline figures of one seed."""
    return {
        "sft_rule_correct": run["sft"]["rule_correct"],
        "sft_sum_correct": run["sft"]["sum_correct"],
        "dpo_rule_correct": run["dpo"]["rule_correct"],
        "dpo_sum_correct": run["dpo"]["sum_correct"],
        "sum_correct_change": run["dpo"]["sum_correct"] - run["sft"]["sum_correct"],
        "dpo_reward_accuracy": run["dpo"]["reward_accuracy"],
        "rm_accuracy": run["rm"]["accuracy"],
        "value_auroc": run["value"]["auroc"],
        "value_sign_accuracy": run["value"]["sign_accuracy"],
    }


DEMO_LABELS = {
    "sft_rule_correct": "dSFT rule-correct (exactly `a+b=<sum>`)",
    "sft_sum_correct": "dSFT sum-correct (the sum right, style ignored)",
    "dpo_rule_correct": "dDPO rule-correct",
    "dpo_sum_correct": "dDPO sum-correct",
    "sum_correct_change": "dDPO - dSFT sum-correct",
    "dpo_reward_accuracy": "dDPO held-out reward accuracy (its own eval)",
    "rm_accuracy": "reward model accuracy on held-out pairs",
    "value_auroc": "value model held-out step AUROC",
    "value_sign_accuracy": "value model held-out step sign accuracy",
}


def demo_section(by_seed: dict[int, dict], command: str, minutes: float) -> str:
    per_seed = {seed: demo_figures(run) for seed, run in by_seed.items()}
    targets = {name: (test, text) for name, test, text in DEMO_TARGETS}
    lines = [
        "## The tiny pipeline over seeds (`make demo`)",
        "",
        "Held-out: 200 prompts on operand pairs never trained on (greedy), 200 preference pairs, 200 step traces.",
        "",
        "| figure | min / median / max | target | met on every seed |",
        "|---|---|---|---|",
    ]
    for name, label in DEMO_LABELS.items():
        values = [figures[name] for figures in per_seed.values()]
        test, text = targets.get(name, (None, ""))
        met = "" if test is None else ("yes" if all(test(x) for x in values) else "**no**")
        lines.append(f"| {label} | {spread(values)} | {text} | {met} |")
    seconds = {stage: [run[stage].get("train_seconds") for run in by_seed.values()] for stage in ("sft", "dpo")}
    lines += [
        "",
        "Training time (s): dSFT " + spread(seconds["sft"], 0) + ", dDPO " + spread(seconds["dpo"], 0) + ".",
        *footer(command, minutes, list(by_seed)),
    ]
    return "\n".join(lines)


def ablation_section(by_seed: dict[int, dict], command: str, minutes: float) -> str:
    lines = [
        "## Zephyr's ablation in miniature (`make ablation`)",
        "",
        "Zephyr's Table 3 (Mistral-7B, MT-Bench / AlpacaEval win rate) next to the tiny task (held-out greedy "
        "replies): rule-correct needs both the sum and the style the pairs prefer; sum-correct is the arithmetic "
        "alone.",
        "",
        "| set-up | Zephyr MT-Bench | Zephyr AlpacaEval | rule-correct | sum-correct |",
        "|---|---|---|---|---|",
    ]
    medians = {}
    for key, (label, mt_bench, alpaca) in ZEPHYR_TABLE_3.items():
        rule = [run[key]["rule_correct"] for run in by_seed.values()]
        sums = [run[key]["sum_correct"] for run in by_seed.values()]
        medians[key] = statistics.median(rule)
        lines.append(f"| {label} | {mt_bench:.2f} | {alpaca:.2f} | {spread(rule)} | {spread(sums)} |")
    paper = sorted(ZEPHYR_TABLE_3, key=lambda k: -ZEPHYR_TABLE_3[k][1])
    ours = sorted(medians, key=lambda k: -medians[k])
    lines += [
        "",
        "Ordering, best first: Zephyr " + " > ".join(ZEPHYR_TABLE_3[k][0] for k in paper) + "; tiny task (median "
        "rule-correct) " + " > ".join(ZEPHYR_TABLE_3[k][0] for k in ours) + ".",
        *footer(command, minutes, list(by_seed)),
    ]
    return "\n".join(lines)


def losses_section(by_seed: dict[int, dict], command: str, minutes: float) -> str:
    losses = [loss for loss in next(iter(by_seed.values())) if loss != "dsft"]
    recipe = yaml.safe_load((RECIPES / "dpo" / "config.yaml").read_text())
    kto = yaml.safe_load((RECIPES / "kto" / "config.yaml").read_text())
    lines = [
        "## Every preference loss on the same task",
        "",
        f"The demo's DPO recipe (`recipes/tiny/dpo/config.yaml`: from the dSFT model, {recipe['max_steps']} steps of "
        f"{recipe['per_device_train_batch_size']} pairs, lr {recipe['learning_rate']}, beta {recipe['beta']}) "
        "with each loss's overrides in `benchmarks/evidence_runs.py` (`LOSSES`). Reward margin: the loss's own "
        "implicit reward (chosen - rejected) on held-out pairs; log-prob margin: `log π(chosen) - log π(rejected)`, "
        "the same scale for every loss. A loss **reward-hacks** when its held-out reward accuracy is at least 0.95 "
        f"while rule-correct stays below {HACK_RULE_CORRECT} or sum-correct falls more than "
        f"{HACK_SUM_DROP * 100:.0f} points below the dSFT model's: the objective is met, the replies are not better. "
        f"`kto` is `recipes/tiny/kto/config.yaml` ({kto['max_steps']} steps of {kto['per_device_train_batch_size']} "
        f"rows, lr {kto['learning_rate']}, beta {kto['beta']}) on the same prompts as unpaired "
        "feedback, one reply each, 1 desirable to 4 undesirable (`UNPAIRED_LOSSES`); unpaired rows have no reward "
        "accuracy, so it hacks when its replies fail those rules alone, and its margins are between the mean "
        "desirable and the mean undesirable held-out row.",
        "",
        "| loss | rule-correct | sum-correct | reward acc. | reward margin | log-prob margin | train s | hacks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sft = [run["dsft"] for run in by_seed.values()]
    lines.append(
        f"| (dSFT, before any) | {spread([r['rule_correct'] for r in sft])} | "
        f"{spread([r['sum_correct'] for r in sft])} | | | | | |"
    )
    for loss in losses:
        runs = [(run["dsft"], run[loss]) for run in by_seed.values()]
        hacks = sum(
            (run["reward_accuracy"] is None or run["reward_accuracy"] >= 0.95)
            and (run["rule_correct"] < HACK_RULE_CORRECT or run["sum_correct"] < before["sum_correct"] - HACK_SUM_DROP)
            for before, run in runs
        )
        cells = [
            "n/a" if runs[0][1][key] is None else spread([run[key] for _, run in runs], digits)
            for key, digits in [
                ("rule_correct", 3),
                ("sum_correct", 3),
                ("reward_accuracy", 3),
                ("reward_margin", 2),
                ("logp_margin", 1),
                ("train_seconds", 0),
            ]
        ]
        hacked = f"**yes** ({hacks}/{len(runs)} seeds)" if hacks else "no"
        lines.append(f"| {loss} | {' | '.join(cells)} | {hacked} |")
    lines += footer(command, minutes, list(by_seed))
    return "\n".join(lines)


GRPO_LABELS = {"dsft": "(dSFT, before)", "rule": "GRPO, rule reward", "reward_model": "GRPO, the demo's reward model"}


def grpo_section(by_seed: dict[int, dict], command: str, minutes: float) -> str:
    recipe = yaml.safe_load((RECIPES / "grpo" / "config.yaml").read_text())
    lines = [
        "## Online RL: GRPO against a rule and against the trained reward model",
        "",
        "From the demo's dSFT model (the flaw on every greedy answer), `recipes/tiny/grpo/config.yaml` as shipped: "
        f"{recipe['max_steps']} steps of {recipe['per_device_train_batch_size'] // recipe['num_generations']} prompts "
        f"x {recipe['num_generations']} sampled replies from the teacher's chats, lr {recipe['learning_rate']}, "
        f"`beta: {recipe['beta']}`, no preference pair. Held-out: the 200 prompts of the demo (greedy).",
        "",
        "| policy | rule-correct | sum-correct | train s |",
        "|---|---|---|---|",
    ]
    for name, label in GRPO_LABELS.items():
        runs = [run[name] for run in by_seed.values()]
        seconds = [run.get("train_seconds") for run in runs]
        train = spread(seconds, 0) if None not in seconds else ""
        lines.append(
            f"| {label} | {spread([r['rule_correct'] for r in runs])} | {spread([r['sum_correct'] for r in runs])} "
            f"| {train} |"
        )
    lines += footer(command, minutes, list(by_seed))
    return "\n".join(lines)
