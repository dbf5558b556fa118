"""Evidence that alignment happened: two policies compared on held-out prompts, judged by a reward model and, where
the task has one, by a rule; plus the reward model's and the value model's own held-out accuracy.

A rule belongs to its task, not to this library: a recipe names it by import path (`rule:
tiny_world.arithmetic:answer_is_correct`, the demo's), and `load_rule` imports it.

Generation uses each policy's chat template with its generation prompt and stops at the template's end-of-turn
token (the generation config written by `run_utils.set_generation_eos`); decoding is greedy so results repeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.data.pairs import preference_row_problem
from alignment.data.readers import read_rows
from alignment.data.rows import DataError
from alignment.reward.scoring import load_reward_model, score_with
from alignment.runtime.loading import model_problem
from alignment.runtime.rules import RULE_FORM, Rule, check_rule, load_rule
from alignment.value.loss import value_metrics
from alignment.value.modeling import has_value_head, load_value_model
from alignment.value.rows import to_trace, value_row_problem
from alignment.value.scoring import score_traces

logger = logging.getLogger(__name__)


@torch.no_grad()
def generate_replies(
    model_dir: str, prompts: list[list[dict[str, str]]], *, batch_size: int = 64, max_new_tokens: int = 64
) -> list[str]:
    """Greedy replies of the policy in `model_dir` to each prompt (a list of messages ending with a user turn)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer.padding_side = "left"  # all prompts of a batch end at the same position, where generation starts
    replies = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"Generating with {model_dir}", leave=False):
        batch_prompts = prompts[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch_prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        replies += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [reply.strip() for reply in replies]


def compare_policies(
    baseline_dir: str,
    candidate_dir: str,
    prompts: list[list[dict[str, str]]],
    *,
    judge_dir: str | None = None,
    rule: Rule | None = None,
    extra_rules: dict[str, Rule] | None = None,
) -> dict:
    """Greedy replies of both policies, the share each gets right by `rule`, their mean reward under the judge, and
    the candidate's win rate over the baseline by each judge (a tie counts half).

    `extra_rules` (name -> rule) are reported as shares only, under `shares[name]` = {baseline, candidate}: a second
    view of the same replies, such as whether the sum is right whatever the style, shows what a stage cost.
    """
    replies = {
        "baseline": generate_replies(baseline_dir, prompts),
        "candidate": generate_replies(candidate_dir, prompts),
    }
    result: dict = {"prompts": len(prompts), "examples": []}
    if rule is not None:
        correct = {name: [rule(p, r) for p, r in zip(prompts, replies[name], strict=True)] for name in replies}
        for name in replies:
            result[f"{name}_rule_correct"] = sum(correct[name]) / len(prompts)
        wins = [
            float(c > b) + 0.5 * float(c == b) for b, c in zip(correct["baseline"], correct["candidate"], strict=True)
        ]
        result["win_rate_by_rule"] = sum(wins) / len(wins)
    if extra_rules:
        result["shares"] = {
            name: {
                policy: sum(extra(p, r) for p, r in zip(prompts, replies[policy], strict=True)) / len(prompts)
                for policy in replies
            }
            for name, extra in extra_rules.items()
        }
    if judge_dir is not None:
        judge, judge_tokenizer = load_reward_model(judge_dir)
        rewards = {
            name: score_with(
                judge,
                judge_tokenizer,
                [
                    p + [{"role": "assistant", "content": r or "."}]
                    for p, r in zip(prompts, replies[name], strict=True)
                ],
            )
            for name in replies
        }
        for name in replies:
            result[f"{name}_mean_reward"] = sum(rewards[name]) / len(prompts)
        wins = [
            float(c > b) + 0.5 * float(c == b) for b, c in zip(rewards["baseline"], rewards["candidate"], strict=True)
        ]
        result["win_rate_by_reward_model"] = sum(wins) / len(wins)
    for index in range(min(5, len(prompts))):
        result["examples"].append(
            {
                "prompt": prompts[index][-1]["content"],
                "baseline": replies["baseline"][index],
                "candidate": replies["candidate"][index],
            }
        )
    return result


def reward_model_accuracy(judge_dir: str, pairs: list[dict]) -> float:
    """Share of held-out preference pairs (TRL conversational form) whose chosen reply the judge scores higher."""
    judge, tokenizer = load_reward_model(judge_dir)
    chosen = score_with(judge, tokenizer, [row["prompt"] + row["chosen"] for row in pairs])
    rejected = score_with(judge, tokenizer, [row["prompt"] + row["rejected"] for row in pairs])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def value_step_metrics(value_dir: str, rows: list[dict]) -> dict[str, float]:
    """`alignment.value.value_metrics` of the value model over held-out steps with a target (any form
    `alignment.value` reads; steps without one, such as the earlier steps of a released ReST-MCTS* row, are not
    counted): `sign_accuracy` (the share whose value has the sign of Q), `auroc` of the value against step
    correctness, `value_mse` and `value_steps`."""
    model, tokenizer = load_value_model(value_dir), AutoTokenizer.from_pretrained(value_dir)
    traces = [to_trace(row) for row in rows]
    values = score_traces(model, tokenizer, [(trace.prompt, trace.steps) for trace in traces])
    return value_metrics(
        np.array([value for trace_values in values for value in trace_values]),
        np.array([q for trace in traces for q in trace.q]),
    )


@dataclass
class EvalArguments:
    """What `scripts/run_eval.py` compares and on which held-out data."""

    baseline: str = field(metadata={"help": "The policy before the stage under test (e.g. the SFT model)."})
    candidate: str = field(metadata={"help": "The policy after it (e.g. the DPO model)."})
    prompts: str = field(
        metadata={
            "help": "Held-out .jsonl: rows with `prompt` (messages or a string) or `messages` (the final "
            "assistant turn is dropped)."
        }
    )
    judge: str | None = field(default=None, metadata={"help": "Reward model that judges both policies' replies."})
    rule: str | None = field(
        default=None,
        metadata={
            "help": f"Rule that decides a reply is right: {RULE_FORM} (the tiny demo's: "
            "`tiny_world.arithmetic:answer_is_correct`)."
        },
    )
    extra_rules: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"More rules, each {RULE_FORM}, whose share of right replies is reported for both policies "
            "(no win rate), e.g. the tiny demo's `tiny_world.arithmetic:sum_is_correct`, which checks the sum and "
            "ignores style: what the stage cost in correctness."
        },
    )
    pairs: str | None = field(default=None, metadata={"help": "Held-out preference pairs for the judge's accuracy."})
    value_model: str | None = field(default=None, metadata={"help": "Value model to check on `steps`."})
    steps: str | None = field(default=None, metadata={"help": "Held-out step traces for the value model."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    output: str = field(default="eval.json", metadata={"help": "Where the results are written as JSON."})

    def __post_init__(self):
        """Everything that can be checked before a model generates: models of the right kind, files that exist,
        an output that is a file, rules that import (`check_eval_inputs` checks the data and calls the rules)."""
        if self.rule is not None:
            load_rule(self.rule)  # a bad path stops the run here, before any model is loaded
        for path in self.extra_rules:
            load_rule(path, "extra_rules")
        if (self.value_model is None) != (self.steps is None):
            raise ValueError("`value_model` and `steps` go together: set both or neither.")
        if self.pairs is not None and self.judge is None:
            raise ValueError("`pairs` are the judge's held-out pairs: set `judge` (a reward model) too, or drop them.")
        models = [("baseline", "causal LM"), ("candidate", "causal LM"), ("judge", "reward model")]
        for key, kind in models + [("value_model", "causal LM")]:
            source = getattr(self, key)
            if source is None:
                continue
            problem = model_problem(source, key, kind)
            if problem is not None:
                raise ValueError(problem)
        if self.value_model is not None and Path(self.value_model).is_dir() and not has_value_head(self.value_model):
            raise ValueError(f"`value_model: {self.value_model}` has no value head: give a `run_value.py` output.")
        for key in ("prompts", "pairs", "steps"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"`{key}: {path}` is not a file: give a .jsonl of held-out rows.")
        if Path(self.output).is_dir():
            raise ValueError(f"`output: {self.output}` is a folder: give the path of the JSON file to write.")


def check_eval_inputs(args: EvalArguments) -> tuple[list[list[dict[str, str]]], list[dict] | None, list[dict] | None]:
    """The prompts, pairs and step traces of `args`, every row checked, and each rule called once on the first
    prompt: what `scripts/run_eval.py` reads before any model generates, so a bad row or rule costs no minutes."""
    prompts = prompts_from_rows(read_rows(args.prompts))[: args.max_prompts]
    if not prompts:
        raise DataError(f"`prompts: {args.prompts}` has no rows.")
    for key, path in [("rule", args.rule)] * (args.rule is not None) + [("extra_rules", p) for p in args.extra_rules]:
        check_rule(load_rule(path, key), path, key, prompts[0])
    pairs = read_rows(args.pairs) if args.pairs else None
    for index, row in enumerate(pairs or []):
        problem = preference_row_problem(row)
        if problem is not None:
            raise DataError(f"`pairs: {args.pairs}` row {index}: {problem}")
    steps = read_rows(args.steps) if args.steps else None
    for index, row in enumerate(steps or []):
        problem = value_row_problem(row)
        if problem is not None:
            raise DataError(f"`steps: {args.steps}` row {index}: {problem}")
    return prompts, pairs, steps


def prompts_from_rows(rows: list[dict]) -> list[list[dict[str, str]]]:
    """The prompt turns of each held-out row, whatever its form."""
    prompts = []
    for index, row in enumerate(rows):
        if isinstance(row.get("prompt"), list):
            prompts.append(row["prompt"])
        elif isinstance(row.get("prompt"), str):
            prompts.append([{"role": "user", "content": row["prompt"]}])
        elif isinstance(row.get("messages"), list) and row["messages"][-1]["role"] == "assistant":
            prompts.append(row["messages"][:-1])
        else:
            raise DataError(f"prompts row {index} has neither a `prompt` nor `messages` ending with an answer")
    return prompts
