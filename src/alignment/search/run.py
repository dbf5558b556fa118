"""`scripts/run_search.py` as a library function: search every prompt, write what self-training needs, resume.

Outputs in `output_dir`, each appended prompt by prompt as prompts finish (flushed and synced):

* `traces.jsonl`: every finished trace of each prompt's tree that has value targets, in the value-data form
  `run_value.py` reads (`{"prompt", "response": [{"step", "Q"}]}`, Q from `alignment.search.targets`; a prompt that
  is one user turn is written as its text). With a `step_rule`, every finished trace, Q +1 while the rule holds and
  -1 from the first step it fails: the policy's own traces as the first value model's data;
* `sft.jsonl`: SFT rows (`{"messages"}`: the prompt, then the steps joined by newlines as the assistant turn) of the
  verified traces (`sft_traces`: every distinct one, or the chosen one): their final answer passes the verifier and,
  with `verify_steps`, the value model valued each of their steps above 0 (as it must for the tree's targets then);
* `progress.jsonl`: one record per finished prompt (its index, whether the chosen trace is correct, its compute, and
  the line counts of the two files above once it was written);
* `summary.json` at the end: accuracy of the chosen traces, compute per prompt, rows written;
* `resolved_config.yaml` at the start and `run_finished.json` at the end (`alignment.runtime.reliability`).

Resuming: a restart reads `progress.jsonl`, cuts the two output files back to the line counts of its last whole
record (a prompt cut off midway is searched again) and goes on from the next prompt. Prompt i is searched with seed
`seed + i`, so a resumed run writes exactly what an uninterrupted one writes. A finished run with the same recipe
reports it is complete and exits 0 (`check_output_dir`, as every stage, so `run_pipeline.py` skips it); a finished
or partial run of another recipe is refused naming the keys that differ, unless `overwrite_output_dir: true`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from alignment.data.readers import read_rows
from alignment.data.rows import DataError
from alignment.evaluation import prompts_from_rows
from alignment.recipes.arguments import ModelArguments
from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.runtime.lifecycle import recipe_defaults, resolved_config
from alignment.runtime.loading import load_model, model_problem
from alignment.runtime.reliability import (
    FINISHED_NAME,
    RESOLVED_CONFIG_NAME,
    OutputDirError,
    check_output_dir,
    differing_keys,
    mark_finished,
)
from alignment.runtime.rules import Rule, check_rule, load_rule
from alignment.search.algorithms import STEP_VALUED_ALGORITHMS, Node, SearchResult, search
from alignment.search.config import SearchArguments, SearchConfig
from alignment.search.policy import LMPolicy, Prompt, RuleScorer, StepRule, StepScorer, ValueScorer
from alignment.search.targets import q_of_value, value_targets
from alignment.value.modeling import load_value_model

logger = logging.getLogger(__name__)

RECIPE_DATACLASSES = (SearchArguments, SearchConfig)
OUTPUT_FILES = ("traces.jsonl", "sft.jsonl", "progress.jsonl", "summary.json")


def reply_of(steps: list[str]) -> str:
    """The assistant reply a trace stands for: its steps, one per line."""
    return "\n".join(steps)


def rule_q(prompt: Prompt, steps: list[str], step_rule: StepRule) -> list[float]:
    """Q of the initial value data: +1 while `step_rule` holds, -1 from the first step it fails on."""
    still, q = True, []
    for holds in step_rule(prompt, steps):
        still = still and bool(holds)
        q.append(1.0 if still else -1.0)
    return q


def prompt_outputs(
    prompt: Prompt,
    result: SearchResult,
    verifier: Rule,
    *,
    sft_traces: str,
    verify_steps: bool = False,
    step_rule: StepRule | None = None,
) -> tuple[list[dict], list[dict], bool]:
    """The value rows and SFT rows of one searched prompt, and whether its chosen trace's final answer passes the
    verifier. A finished trace counts as verified for both outputs when it passes and, with `verify_steps`, every
    step has a value above 0 (a step never scored, as a greedy completion's, does not pass). The rows' Q are the
    tree's targets, or with `step_rule` the rule's (`rule_q`)."""
    verdicts: dict[Node, bool] = {}

    def passes(node: Node) -> bool:
        if node not in verdicts:
            verdicts[node] = bool(verifier(prompt, reply_of(node.steps)))
        return verdicts[node]

    def is_verified(node: Node) -> bool:
        valued = (step.value is not None and step.value > 0 for step in node.path)
        return passes(node) and (not verify_steps or all(valued))

    finished = result.terminal_nodes()
    if step_rule is not None:
        labelled = [(node, rule_q(prompt, node.steps, step_rule)) for node in finished]
    else:
        targets = value_targets(result.root, is_verified)
        labelled = [
            (node, [q_of_value(targets[step]) for step in node.path])
            for node in finished
            if all(step in targets for step in node.path)
        ]
    traces = [
        {
            "prompt": _value_prompt(prompt),
            "response": [{"step": step, "Q": q} for step, q in zip(node.steps, qs, strict=True)],
        }
        for node, qs in labelled
    ]
    chosen_correct = bool(result.chosen.steps) and result.chosen.terminal and passes(result.chosen)
    sources = finished if sft_traces == "correct" else [result.chosen]
    sft = [
        {"messages": [*prompt, {"role": "assistant", "content": reply_of(node.steps)}]}
        for node in sources
        if node.terminal and is_verified(node)
    ]
    return traces, sft, chosen_correct


def _value_prompt(prompt: Prompt) -> str | Prompt:
    """The prompt as the value data writes it: a lone user turn as its text (the form the tiny world's initial
    traces have, so the two mix in one `dataset_mixer`), any other chat as its messages."""
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return prompt


def load_search_models(args: SearchArguments, config: SearchConfig) -> tuple[LMPolicy, StepScorer | None]:
    """The policy (with its tokenizer and generation config) and what values its steps: the value model, the
    `value_rule`, or neither (greedy, or best-of-N as plain sampling)."""
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    model = load_model(ModelArguments(model_name_or_path=args.policy, dtype="float32"))
    policy = LMPolicy(
        model, tokenizer, max_step_tokens=config.max_step_tokens, temperature=config.temperature, top_p=config.top_p
    )
    if args.value_rule is not None:
        return policy, RuleScorer(load_rule(args.value_rule, key="value_rule"))
    if args.value_model is None:
        return policy, None
    scorer = ValueScorer(
        load_value_model(args.value_model),
        AutoTokenizer.from_pretrained(args.value_model),
        batch_size=config.value_batch_size,
    )
    return policy, scorer


class SearchOutput:
    """The output folder of a search run: what is done, and appending one prompt's rows durably."""

    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir)
        self.records = self._read_progress()
        for name, key in (("traces.jsonl", "traces_lines"), ("sft.jsonl", "sft_lines")):
            self._cut(self.dir / name, self.records[-1][key] if self.records else 0)

    def _read_progress(self) -> list[dict]:
        path, records = self.dir / "progress.jsonl", []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # the last line of a run killed while writing it
                    break
            self._cut(path, len(records))
        return records

    @staticmethod
    def _cut(path: Path, lines: int) -> None:
        """Keep the first `lines` whole lines of `path` (a file cut off mid-prompt loses that prompt's rows)."""
        if not path.is_file():
            return
        kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        path.write_text("".join(kept), encoding="utf-8")

    def append(self, record: dict, traces: list[dict], sft: list[dict]) -> None:
        """Write one prompt's rows, then its progress record (last, so that a record means its rows are whole)."""
        last = self.records[-1] if self.records else {"traces_lines": 0, "sft_lines": 0}
        record = {
            **record,
            "traces_lines": last["traces_lines"] + len(traces),
            "sft_lines": last["sft_lines"] + len(sft),
        }
        for name, rows in (("traces.jsonl", traces), ("sft.jsonl", sft), ("progress.jsonl", [record])):
            with open(self.dir / name, "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in rows)
                handle.flush()
                os.fsync(handle.fileno())
        self.records.append(record)


def summarize(records: list[dict], config: SearchConfig) -> dict[str, Any]:
    """Accuracy of the chosen traces and compute per prompt over every record."""

    def mean(key: str) -> float:
        return statistics.fmean(record[key] for record in records) if records else 0.0

    return {
        "algorithm": config.algorithm,
        "prompts": len(records),
        "accuracy": mean("correct"),
        "generated_tokens_per_prompt": mean("generated_tokens"),
        "value_calls_per_prompt": mean("value_calls"),
        "scored_tokens_per_prompt": mean("scored_tokens"),
        "generated_tokens": sum(r["generated_tokens"] for r in records),
        "traces": records[-1]["traces_lines"] if records else 0,
        "sft_rows": records[-1]["sft_lines"] if records else 0,
    }


def prepare_output_dir(args: SearchArguments, resolved: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse, replace or resume what `output_dir` holds (see the module doc); then save the resolved config."""
    output_dir = Path(args.output_dir)
    # exits 0 when already complete
    check_output_dir(output_dir, resolved, overwrite=args.overwrite_output_dir, defaults=defaults)
    config_path = output_dir / RESOLVED_CONFIG_NAME
    if args.overwrite_output_dir:
        for name in (*OUTPUT_FILES, FINISHED_NAME):
            (output_dir / name).unlink(missing_ok=True)
    elif (output_dir / "progress.jsonl").is_file() and config_path.is_file():
        differences = differing_keys(yaml.safe_load(config_path.read_text(encoding="utf-8")), resolved, defaults)
        if differences:
            listed = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in differences.items())
            raise OutputDirError(
                f"{output_dir} holds a partial search of another recipe ({listed}). Point `output_dir` somewhere "
                "else, or set `overwrite_output_dir: true` to replace it."
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(resolved, sort_keys=True), encoding="utf-8")


def run_search(argv: list[str] | None = None) -> dict[str, Any]:
    """The whole script: parse the recipe, prepare `output_dir`, search every prompt not yet done, summarize."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args, config = RecipeParser(RECIPE_DATACLASSES).parse(argv)
    if args.value_model is None and args.value_rule is None and config.algorithm in STEP_VALUED_ALGORITHMS:
        raise RecipeError(
            f"`algorithm: {config.algorithm}` ranks steps by value: set `value_model` (or `value_rule`)."
        )
    if args.verify_steps and config.algorithm not in STEP_VALUED_ALGORITHMS:
        raise RecipeError(
            "`verify_steps: true` needs the value of every step of a finished trace, and "
            f"`algorithm: {config.algorithm}` does not value every step: use one of {list(STEP_VALUED_ALGORITHMS)}, "
            "or `verify_steps: false`."
        )
    for key in ("policy", "value_model"):
        path = getattr(args, key)
        if path is not None:
            problem = model_problem(path, key, "causal LM")
            if problem is not None:
                raise RecipeError(problem)
    if not Path(args.prompts).is_file():
        raise RecipeError(f"`prompts: {args.prompts}` is not a file (run the stage that writes it first).")
    prompts = prompts_from_rows(read_rows(args.prompts))[: args.max_prompts]
    if not prompts:
        raise DataError(f"`prompts: {args.prompts}` has no rows.")
    verifier = load_rule(args.verifier)
    check_rule(verifier, args.verifier, "verifier", prompts[0])  # called once, before any model generates
    resolved = resolved_config(args, config)
    logger.info("Resolved config:\n%s", yaml.safe_dump(resolved, sort_keys=True))
    prepare_output_dir(args, resolved, recipe_defaults(args, config))
    step_rule = load_rule(args.step_rule, key="step_rule") if args.step_rule else None
    output = SearchOutput(args.output_dir)
    if output.records:
        logger.info("Resuming: %d of %d prompts already searched", len(output.records), len(prompts))
    policy, scorer = load_search_models(args, config)
    progress = tqdm(total=len(prompts), initial=len(output.records), desc="Searching", disable=args.disable_tqdm)
    for index in range(len(output.records), len(prompts)):
        random.seed(config.seed + index)
        torch.manual_seed(config.seed + index)
        result = search(prompts[index], policy, scorer, config)
        traces, sft, correct = prompt_outputs(
            prompts[index],
            result,
            verifier,
            sft_traces=args.sft_traces,
            verify_steps=args.verify_steps,
            step_rule=step_rule,
        )
        compute = {k: getattr(result, k) for k in ("generated_tokens", "value_calls", "scored_tokens")}
        output.append({"index": index, "correct": correct, **compute}, traces, sft)
        progress.update()
    progress.close()
    summary = summarize(output.records, config)
    Path(args.output_dir, "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    mark_finished(args.output_dir, len(output.records))
    logger.info("Search done: %s", json.dumps(summary))
    return summary
