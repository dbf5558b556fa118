"""Compare two policies on held-out prompts, judged by a reward model and, where the task has one, by a rule.

    python scripts/run_eval.py --baseline outputs/tiny/sft --candidate outputs/tiny/dpo \
        --prompts data/tiny/dpo/test.jsonl --judge outputs/tiny/rm --rule tiny_world.arithmetic:answer_is_correct \
        --pairs data/tiny/rm/test.jsonl --value_model outputs/tiny/value --steps data/tiny/value/test.jsonl \
        --extra_rules tiny_world.arithmetic:sum_is_correct --output outputs/tiny/eval.json

`--rule` is any `package.module:function` that takes (prompt messages, reply) and returns True when the reply is
right; the tiny demo's is `tiny_world.arithmetic:answer_is_correct`. `--extra_rules` are more such rules, reported as
shares only (the demo's `sum_is_correct` checks the sum and ignores style).

Prints a table and writes every number (and a few example replies) to `output`.
"""

import json
import logging
from pathlib import Path

from alignment.evaluation import (
    EvalArguments,
    check_eval_inputs,
    compare_policies,
    reward_model_accuracy,
    value_step_metrics,
)
from alignment.recipes.parser import RecipeParser
from alignment.runtime.cli import run_cli
from alignment.runtime.rules import load_rule

RECIPE_DATACLASSES = (EvalArguments,)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = RecipeParser(RECIPE_DATACLASSES).parse()
    prompts, pairs, steps = check_eval_inputs(args)  # every row and rule, before any model generates
    rule = load_rule(args.rule) if args.rule else None
    extra_rules = {path.rpartition(":")[2]: load_rule(path, "extra_rules") for path in args.extra_rules}
    results = compare_policies(
        args.baseline, args.candidate, prompts, judge_dir=args.judge, rule=rule, extra_rules=extra_rules
    )
    if pairs is not None:
        results["reward_model_accuracy"] = reward_model_accuracy(args.judge, pairs)
    if steps is not None:
        results["value_steps"] = value_step_metrics(args.value_model, steps)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))

    print(f"\nHeld-out evaluation ({results['prompts']} prompts): {args.baseline} -> {args.candidate}")
    rows = [
        ("rule-correct share", "baseline_rule_correct", "candidate_rule_correct"),
        ("mean reward (judge)", "baseline_mean_reward", "candidate_mean_reward"),
    ]
    print(f"  {'metric':<34}{'baseline':>10}{'candidate':>11}")
    for label, baseline_key, candidate_key in rows:
        if baseline_key in results:
            print(f"  {label:<34}{results[baseline_key]:>10.3f}{results[candidate_key]:>11.3f}")
    for name, share in results.get("shares", {}).items():
        print(f"  {name + ' share':<34}{share['baseline']:>10.3f}{share['candidate']:>11.3f}")
    for label, key in [
        ("candidate win rate by rule", "win_rate_by_rule"),
        ("candidate win rate by reward model", "win_rate_by_reward_model"),
        ("reward model accuracy on pairs", "reward_model_accuracy"),
    ]:
        if key in results:
            print(f"  {label:<34}{results[key]:>10.3f}")
    for name in ("sign_accuracy", "auroc"):
        if name in results.get("value_steps", {}):
            print(f"  {'value model step ' + name.replace('_', ' '):<34}{results['value_steps'][name]:>10.3f}")
    for example in results["examples"][:3]:
        print(f"  e.g. {example['prompt']!r}: {example['baseline']!r} -> {example['candidate']!r}")
    print(f"Written to {args.output}")


if __name__ == "__main__":
    run_cli(main)
