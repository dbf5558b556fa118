"""Value-guided search on the tiny world over seeds: greedy vs best-of-N vs beam vs MCTS* at equal token budget on
held-out prompts, and one ReST-MCTS* self-training iteration (policy greedy accuracy and value AUROC before/after).

    python benchmarks/search.py                          # seeds 0 1 2 (about 45 min per seed on one core)
    python benchmarks/search.py --seeds 0 --threads 1    # one seed, on a machine shared with other jobs
    python benchmarks/search.py --work_dir /tmp/search   # an interrupted benchmark continues where it stopped
    python benchmarks/search.py --largest_number 29      # chains of numbers 1-29: errors on every step
    python benchmarks/search.py --num_train 500 --num_search 1000   # solutions scarcer than questions: what
                                                         # self-training can add to dSFT (at 1-29, 500 chats
                                                         # leave the policy at 0.055 greedy: nothing to search)

Seed `s` builds its own tiny world (`build_tiny_world(seed=s)`, `write_chain_data(seed=s)`: tokenizer, initial
weights and chains) and runs the iteration of `recipes/tiny/rest_mcts.yaml` with `seed: s` and only paths
overridden, each stage the script a user types (`alignment.pipeline`, so a finished run is reused):
dSFT -> dSFT of the value model's 8-layer body -> value model -> MCTS* over the self-training prompts (chains no dSFT
chat holds) -> SFT on the verified traces + value training on the tree's targets. On the 200 held-out prompts (chains
no training prompt has) it then runs `scripts/run_search.py`:

* with the iteration-0 models, `greedy`, `best_of_n` (N = 8), `beam` (2 beams x 8 candidates: about best-of-N's
  tokens where the policy's samples of one step are mostly duplicates, up to twice them where they are distinct),
  `beam_1x8` (1 beam x 8 candidates: 8 samples of every step, best-of-N's tokens by construction) and `mcts` with a
  token budget per prompt equal to what best-of-N spent on average; every row reports its own policy tokens and
  value calls per prompt, so the comparison is at (about) equal compute;
* the same four searches with the step rule as the value (`value_rule`, a perfect process verifier): the most a
  value model could give each search on this policy;
* 8 sampled traces per held-out prompt, each step labelled by the rule (the policy's own traces): their pass@8, and
  how often the value model's highest-valued trace is right where a prompt's traces are mixed (against a pick at
  random): its worth to best-of-N;
* the same value model with the head alone (`value_reads_likelihood: false`, same body, data and steps), on those
  traces: what the LM's likelihood adds to the head;
* greedy with the policy before and after self-training, and `mcts` with both models after it; and both again
  with the control, the iteration-0 models trained the same further steps on their own stage's data alone (no
  searched trace): what the iteration adds beyond more training;
* the value model's AUROC (value vs step correctness) on the held-out value traces, before, after and in the
  control, pooled over every step and among the steps of one depth (`auroc_by_depth`: what a search compares), and
  the same three models by depth and by top-valued trace on the policy's own traces and, by depth, on the held-out
  MCTS* tree of the iteration-0 models with each step relabelled by the rule (what a search compares, where the
  stage-3 model's false positives were expanded; each model scores each set of traces once, `step_values`);
* the training search's verified traces sorted into gold chains, the numbers in another order and unsound ones (a
  right sum through slips that cancel, `tiny_world.chains:sound_in_any_order`), with `verify_steps` (the recipe)
  and with the final answer alone (the same search, `search_train_final_answer_only`);
* paired on the held-out prompts (`PAIRS`: beam 1x8 against best-of-8, best-of-8 against greedy, and the policy and
  MCTS* after the iteration against before and against the control): how many prompts only one of the two runs gets
  right, and the exact sign test of that split, so that a difference of a few points is told apart from noise.

Accuracy is the share of chosen traces whose final answer is right (`tiny_world.chains:final_answer_is_correct`).
The tables give min / median / max over seeds; they replace their own section of `benchmarks/RESULTS.md` (`--output`)
and keep the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# `python benchmarks/search.py` puts benchmarks/ on the path, not the repository that holds the packages.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from alignment.value.formats import StepTrace  # noqa: E402
from benchmarks.report import write_section  # noqa: E402

RECIPES = REPO_ROOT / "recipes" / "tiny" / "rest_mcts"
SEARCH_SCRIPT = str(REPO_ROOT / "scripts" / "run_search.py")
VERIFIER = "tiny_world.chains:final_answer_is_correct"
STEP_RULE = "tiny_world.chains:step_correctness"
# The held-out comparisons: name -> run_search.py overrides. `mcts` gets its budget from best_of_n's tokens.
HELD_OUT_SEARCHES = {
    "greedy": ["--algorithm", "greedy"],
    "best_of_n": ["--algorithm", "best_of_n", "--num_samples", "8"],
    "beam": ["--algorithm", "beam", "--beam_width", "2", "--num_candidates", "8"],
    "beam_1x8": ["--algorithm", "beam", "--beam_width", "1", "--num_candidates", "8"],
    "mcts": ["--algorithm", "mcts", "--num_candidates", "4"],
}
# The columns of the iteration table.
WHEN = ("before", "after", "control")
# The paired comparisons on the held-out prompts: (label, run A, run B), two held-out searches of one seed whose
# per-prompt outcomes are compared, so that a difference of a few points is told apart from the noise of 200 prompts.
PAIRS = (
    ("beam 1x8 vs best-of-8", "test_beam_1x8", "test_best_of_n"),
    ("best-of-8 vs greedy", "test_best_of_n", "test_greedy"),
    ("greedy: after the iteration vs before", "test_greedy_iter1", "test_greedy"),
    ("greedy: after the iteration vs the control", "test_greedy_iter1", "test_greedy_control"),
    ("MCTS*: after the iteration vs the control", "test_mcts_iter1", "test_mcts_control"),
)
# The training search's verified traces, by what counted as verified: run name under each seed's folder.
SOUNDNESS_RUNS = {
    "the final answer alone (`verify_steps: false`)": "search_train_final_answer_only",
    "the final answer and every step valued above 0 (`verify_steps: true`, the recipe)": "search_train",
}
# One section for every task variant: a rerun of any variant replaces it, and its command line names the variant.
TITLE = "## Value-guided search and one ReST-MCTS* iteration (tiny world, chained additions)"


@dataclass(frozen=True)
class ChainsTask:
    """The chains a benchmark runs on (`tiny_world.chains.write_chain_data`): the default, or a variant with its own
    folders and command flags, so that no run of one task is reused for another."""

    largest_number: int = 9
    num_train: int = 2000  # dSFT chats (and initial value traces): the worked solutions
    num_search: int = 200  # self-training prompts: questions with answers only

    def changed(self) -> dict[str, int]:
        """The fields that differ from the default task."""
        return {name: value for name, value in asdict(self).items() if value != getattr(ChainsTask(), name)}

    def folder(self, seed: int) -> str:
        suffix = {"largest_number": "numbers", "num_train": "train", "num_search": "search"}
        return f"seed{seed}" + "".join(f"_{suffix[name]}{value}" for name, value in self.changed().items())

    def flags(self) -> str:
        return "".join(f" --{name} {value}" for name, value in self.changed().items())


class SeedRuns:
    """The world and runs of one seed under `root`, each run reused when finished."""

    def __init__(self, root: Path, seed: int, task: ChainsTask):
        from tiny_world import build_tiny_world, write_chain_data

        self.root, self.seed = root, seed
        self.world = root / "world"
        if not (self.world / "base" / "config.json").is_file():
            build_tiny_world(self.world, seed=seed)
        if not (self.world / "chains" / "prompts" / "test.jsonl").is_file():
            write_chain_data(self.world / "chains", seed=seed, **asdict(task))
        # Seconds of each stage this seed trained or searched, kept across calls (a reused run costs nothing again).
        self.seconds_file = root / "stage_seconds.json"
        self.seconds: dict[str, float] = (
            json.loads(self.seconds_file.read_text()) if self.seconds_file.is_file() else {}
        )

    def stage(self, name: str, recipe: str, overrides: list[str], script: str | None = None) -> Path:
        """`recipe` (under recipes/tiny/rest_mcts) as `root/name`, with the seed and `overrides`."""
        from alignment.pipeline import PipelineConfig, run_pipeline

        output_dir = self.root / name
        overrides = [*overrides, "--output_dir", str(output_dir), "--seed", str(self.seed), "--disable_tqdm", "true"]
        stage = {"recipe": str(RECIPES / recipe), "overrides": overrides, **({"script": script} if script else {})}
        (record,) = run_pipeline(PipelineConfig(stages=[stage]))
        if record["status"] == "trained":
            self.seconds[name] = record["seconds"]
            self.seconds_file.write_text(json.dumps(self.seconds, indent=2))
        return output_dir

    def train(self, name: str, recipe: str, model: Path, *data: Path, overrides: tuple[str, ...] = ()) -> Path:
        mixer = json.dumps({str(source): 1.0 for source in data})
        return self.stage(name, recipe, ["--model_name_or_path", str(model), "--dataset_mixer", mixer, *overrides])

    def search(
        self, name: str, policy: Path, value: Path | None, prompts: str, overrides: list[str], recipe: str = ""
    ) -> dict:
        """`scripts/run_search.py` on the world's `prompts` split (with the search recipe of that split unless
        `recipe` names another); its summary. `value` None: no value model (a `value_rule` in the overrides, or a
        search that needs none)."""
        paths = ["--policy", str(policy), "--value_model", str(value) if value else "null", "--verifier", VERIFIER]
        paths += ["--prompts", str(self.world / "chains" / "prompts" / f"{prompts}.jsonl")]
        recipe = recipe or ("search/config_train.yaml" if prompts == "train" else "search/config_test.yaml")
        output_dir = self.stage(name, recipe, [*paths, *overrides], script=SEARCH_SCRIPT)
        return json.loads((output_dir / "summary.json").read_text())

    def iteration(self) -> tuple[Path, Path, Path, dict, Path, Path]:
        """The ReST-MCTS* iteration's runs: the dSFT policy, the value body, the value model, the training search's
        summary, and the policy and value model trained on what it found."""
        chains = self.world / "chains"
        sft0 = self.train("sft", "sft/config.yaml", self.world / "base", chains / "sft")
        body = self.train("value_body", "sft/config_value_body.yaml", self.world / "value_base", chains / "sft")
        value0 = self.train("value", "value/config.yaml", body, chains / "value")
        searched = self.search("search_train", sft0, value0, "train", [])
        found = self.root / "search_train"
        sft1 = self.train("sft_iter1", "sft/config_iter1.yaml", sft0, chains / "sft", found / "sft.jsonl")
        value1 = self.train("value_iter1", "value/config_iter1.yaml", value0, chains / "value", found / "traces.jsonl")
        return sft0, body, value0, searched, sft1, value1

    def figures(self) -> dict:
        """Every figure of this seed (cached in `root/figures.json`)."""
        cached = self.root / "figures.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        from alignment.data.readers import read_rows

        chains = self.world / "chains"
        sft0, body, value0, searched, sft1, value1 = self.iteration()
        # The same search with the final answer as the only check (`verify_steps: false`): how many of the traces it
        # calls verified reach the right sum through wrong steps.
        self.search("search_train_final_answer_only", sft0, value0, "train", ["--verify_steps", "false"])
        iteration = ("sft", "value_body", "value", "search_train", "sft_iter1", "value_iter1")
        iteration_s = sum(self.seconds[name] for name in iteration)
        # The control: the same further steps, on the stage's own data alone (no searched trace), so that what the
        # iteration adds is told apart from what more training adds.
        sft_control = self.train("sft_control", "sft/config_iter1.yaml", sft0, chains / "sft")
        value_control = self.train("value_control", "value/config_iter1.yaml", value0, chains / "value")

        held_out = {
            name: self.search(f"test_{name}", sft0, value0, "test", overrides)
            for name, overrides in HELD_OUT_SEARCHES.items()
            if name != "mcts"
        }
        # MCTS* gets the policy tokens best-of-N spent per prompt, on average.
        mcts = [
            *HELD_OUT_SEARCHES["mcts"],
            "--token_budget",
            str(round(held_out["best_of_n"]["generated_tokens_per_prompt"])),
        ]
        held_out["mcts"] = self.search("test_mcts", sft0, value0, "test", mcts)
        after = {
            "greedy": self.search("test_greedy_iter1", sft1, value1, "test", HELD_OUT_SEARCHES["greedy"]),
            "mcts": self.search("test_mcts_iter1", sft1, value1, "test", mcts),
        }
        control = {
            "greedy": self.search(
                "test_greedy_control", sft_control, value_control, "test", HELD_OUT_SEARCHES["greedy"]
            ),
            "mcts": self.search("test_mcts_control", sft_control, value_control, "test", mcts),
        }
        # The ceiling of each search: the step rule as a perfect process verifier in the value model's place.
        rule = ["--value_rule", STEP_RULE]
        ceiling = {
            name: self.search(
                f"test_{name}_rule", sft0, None, "test", [*(mcts if name == "mcts" else overrides), *rule]
            )
            for name, overrides in HELD_OUT_SEARCHES.items()
            if name != "greedy"
        }
        # The policy's own held-out traces (8 samples a prompt, each step labelled by the rule): what a search asks
        # the value model to rank.
        samples = ["--step_rule", STEP_RULE]
        self.search("test_samples", sft0, None, "test", samples, recipe="search/config_value_data.yaml")
        own = read_rows(self.root / "test_samples" / "traces.jsonl")
        # The ablation: the same value model with the head alone, without the LM's likelihood.
        head_only = ("--value_reads_likelihood", "false")
        value0_head_only = self.train(
            "value_head_only", "value/config.yaml", body, chains / "value", overrides=head_only
        )
        models = {"before": value0, "after": value1, "control": value_control}
        value_test = read_rows(chains / "value" / "test.jsonl")
        held_out_steps = {when: step_values(model, value_test) for when, model in models.items()}
        # The held-out MCTS* tree of the iteration-0 models, each step relabelled by the rule: the partial traces a
        # search asks the value model to tell apart, where the stage-3 model's false positives got expanded.
        tree = rule_labelled(read_rows(self.root / "test_mcts" / "traces.jsonl"))
        tree_steps = {when: step_values(model, tree) for when, model in models.items()}
        own_steps = {
            when: step_values(model, own) for when, model in {**models, "head_only": value0_head_only}.items()
        }
        figures = {
            "held_out": held_out,
            "ceiling": ceiling,
            "own_traces": {
                "pass_at_8": pass_rate(own),
                "auroc_by_depth": {when: auroc_by_depth(scored) for when, scored in own_steps.items()},
                "top_valued_right": {when: top_valued_right(scored) for when, scored in own_steps.items()},
                "random_right": random_pick_right(own),
            },
            "after": after,
            "control": control,
            "auroc": {when: pooled_auroc(scored) for when, scored in held_out_steps.items()},
            "auroc_by_depth": {when: auroc_by_depth(scored) for when, scored in held_out_steps.items()},
            "tree_auroc_by_depth": {when: auroc_by_depth(scored) for when, scored in tree_steps.items()},
            "paired": {label: discordant(self.root / a, self.root / b) for label, a, b in PAIRS},
            "search_train": searched,
            "soundness": {
                checked: soundness(read_rows(self.root / run / "sft.jsonl")) for checked, run in SOUNDNESS_RUNS.items()
            },
            "iteration_s": iteration_s,
            "stage_s": self.seconds,
        }
        cached.write_text(json.dumps(figures, indent=2))
        return figures


def soundness(sft_rows: list[dict]) -> list[int]:
    """[gold chains, the numbers added in another order, unsound]: verified SFT rows (prompt, then the steps as the
    reply) by how their steps reach the right final answer. Unsound traces get there through slips that cancel
    (`tiny_world.chains:sound_in_any_order`), which a verifier of the final answer alone cannot see."""
    from tiny_world.chains import chain_steps, prompt_numbers, sound_in_any_order

    counts = [0, 0, 0]
    for row in sft_rows:
        prompt, reply = row["messages"][:-1], row["messages"][-1]["content"]
        if [line.strip() for line in reply.strip().split("\n")] == chain_steps(prompt_numbers(prompt)):
            counts[0] += 1
        else:
            counts[1 if sound_in_any_order(prompt, reply) else 2] += 1
    return counts


def discordant(run_a: Path, run_b: Path) -> list[int]:
    """[prompts search `run_a` got right and `run_b` wrong, the reverse]: the two runs' `progress.jsonl` records (one
    per prompt, in prompt order) compared prompt by prompt."""
    from alignment.data.readers import read_rows

    a, b = (read_rows(run / "progress.jsonl") for run in (run_a, run_b))
    pairs = [(x["correct"], y["correct"]) for x, y in zip(a, b, strict=True)]
    return [sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)]


def sign_test(a_only: int, b_only: int) -> float:
    """The exact two-sided sign test (McNemar's exact test) of `a_only` against `b_only` discordant prompts: the
    chance of a split at least this uneven if either run were as likely as the other to be the one right."""
    pairs = a_only + b_only
    tail = sum(math.comb(pairs, k) for k in range(min(a_only, b_only) + 1)) / 2**pairs
    return min(1.0, 2 * tail)


def step_values(value_dir: Path, rows: list[dict]) -> list[tuple[StepTrace, list[float]]]:
    """Each row's trace with the value model's value after each of its steps. Every figure of one model on one set of
    rows reads these, so that each model scores each set once."""
    from transformers import AutoTokenizer

    from alignment.value.modeling import load_value_model
    from alignment.value.rows import to_trace
    from alignment.value.scoring import score_traces

    model, tokenizer = load_value_model(value_dir), AutoTokenizer.from_pretrained(value_dir)
    traces = [to_trace(row) for row in rows]
    values = score_traces(model, tokenizer, [(trace.prompt, trace.steps) for trace in traces])
    return list(zip(traces, values, strict=True))


def rule_labelled(rows: list[dict]) -> list[dict]:
    """Value-data rows (`{"prompt", "response": [{"step", "Q"}]}`) with each Q replaced by the step rule's: +1 while
    every step so far is the right one, -1 from the first wrong one (`tiny_world.chains:step_correctness`)."""
    from tiny_world.chains import step_correctness

    labelled = []
    for row in rows:
        steps = [entry["step"] for entry in row["response"]]
        correct = step_correctness(row["prompt"], steps)
        response = [{"step": step, "Q": 1.0 if right else -1.0} for step, right in zip(steps, correct, strict=True)]
        labelled.append({"prompt": row["prompt"], "response": response})
    return labelled


def pooled_auroc(scored: list[tuple[StepTrace, list[float]]]) -> float:
    """The AUROC of the value against step correctness over every step of every trace."""
    import numpy as np

    from alignment.value.loss import value_metrics

    values = np.array([value for _, trace_values in scored for value in trace_values])
    return value_metrics(values, np.array([q for trace, _ in scored for q in trace.q]))["auroc"]


def auroc_by_depth(scored: list[tuple[StepTrace, list[float]]]) -> float:
    """The mean over step positions k of the AUROC of the value against step correctness among the k-th steps only:
    how well the value ranks what a search compares (siblings, or beams of one depth). ReST-MCTS*'s targets grow
    with depth on a right trace (v_k = k / K) while wrong steps pile up late, so the AUROC pooled over depths mixes
    in the depth, and falls below 0.5 for a value model that ranks every depth right."""
    import numpy as np

    from alignment.value.loss import auroc

    depths: dict[int, tuple[list[float], list[bool]]] = {}
    for trace, trace_values in scored:
        for depth, (value, q) in enumerate(zip(trace_values, trace.q, strict=True)):
            depths.setdefault(depth, ([], []))[0].append(value)
            depths[depth][1].append(q > 0)
    scores = [auroc(np.array(v), np.array(c)) for v, c in depths.values() if 0 < sum(c) < len(c)]
    return float(np.mean(scores))


def outcomes_by_prompt(scored: list[tuple[StepTrace, list[float]]]) -> list[list[tuple[float, bool]]]:
    """Per prompt, (final value, final answer right) of each of its traces."""
    from tiny_world.chains import final_answer_is_correct

    prompts: dict[str, list[tuple[float, bool]]] = {}
    for trace, values in scored:
        prompts.setdefault(json.dumps(trace.prompt), []).append(
            (values[-1], final_answer_is_correct(trace.prompt, trace.steps))
        )
    return list(prompts.values())


def unscored(rows: list[dict]) -> list[tuple[StepTrace, list[float]]]:
    """The rows' traces with every value 0: the figures that need no value model."""
    from alignment.value.rows import to_trace

    return [(trace, [0.0] * len(trace.steps)) for trace in map(to_trace, rows)]


def pass_rate(rows: list[dict]) -> float:
    """The share of prompts with at least one right trace among `rows` (the policy's samples: pass@N)."""
    return statistics.fmean(any(right for _, right in o) for o in outcomes_by_prompt(unscored(rows)))


def mixed_prompts(scored: list[tuple[StepTrace, list[float]]]) -> list[list[tuple[float, bool]]]:
    """The prompts whose distinct traces are mixed (some right, some wrong): where a value model's pick matters."""
    return [o for o in outcomes_by_prompt(scored) if 0 < sum(right for _, right in o) < len(o)]


def top_valued_right(scored: list[tuple[StepTrace, list[float]]]) -> float:
    """Among the mixed prompts, the share whose highest-valued trace is right: the value model's worth to
    best-of-N."""
    return statistics.fmean(max(o, key=lambda pair: pair[0])[1] for o in mixed_prompts(scored))


def random_pick_right(rows: list[dict]) -> float:
    """Among the mixed prompts, the share of right traces: how often a trace picked at random is right."""
    return statistics.fmean(statistics.fmean(right for _, right in o) for o in mixed_prompts(unscored(rows)))


def paired_row(label: str, splits: list[list[int]]) -> str:
    """One row of a paired table: each seed's split of discordant prompts, their sum and its sign test."""
    a_only, b_only = (sum(split[i] for split in splits) for i in (0, 1))
    return (
        f"| {label} | "
        + " | ".join(f"{a} / {b}" for a, b in splits)
        + f" | {a_only} / {b_only} | {sign_test(a_only, b_only):.2g} |"
    )


def spread(values: list[float], fmt: str) -> str:
    """`median (min-max)` over seeds, or the value alone for one seed."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def iteration_row(label: str, per_seed: list[dict], figure) -> str:
    """One row of the iteration table: `figure(seed_figures, when)` before, after and in the control, over seeds."""
    return f"| {label} | {' | '.join(spread([figure(f, when) for f in per_seed], '{:.3f}') for when in WHEN)} |"


def held_out_search(figures: dict, when: str) -> dict:
    """The held-out searches of one seed before the iteration (with the iteration-0 models), after it, or in the
    control."""
    return figures["held_out" if when == "before" else when]


def section(figures: dict[int, dict], command: str) -> str:
    """The markdown section: the two tables, the value model's worth on the policy's own traces, and how they were
    made (`command` names the task variant)."""
    seeds = sorted(figures)
    per_seed = [figures[s] for s in seeds]
    lines = [
        TITLE,
        "",
        f"`{command}` ({len(seeds)} seed{'s' * (len(seeds) > 1)}: {', '.join(map(str, seeds))}; every stage of a "
        f"seed {spread([sum(f['stage_s'].values()) / 60 for f in per_seed], '{:.0f}')} min on {os.cpu_count()} "
        "cores). Median (min-max) over seeds. Held-out: the 200 chains of "
        "`prompts/test.jsonl`, never trained on; accuracy = final answer right.",
        "",
        "| search (iteration-0 models) | accuracy | policy tokens / prompt | value calls / prompt "
        "| accuracy with the step rule as value (ceiling) | its policy tokens / prompt |",
        "|---|---|---|---|---|---|",
    ]
    for name in HELD_OUT_SEARCHES:
        runs = [f["held_out"][name] for f in per_seed]
        ceilings = [f["ceiling"][name] for f in per_seed if name in f["ceiling"]]
        ceiling = (
            f"{spread([r['accuracy'] for r in ceilings], '{:.3f}')} "
            f"| {spread([r['generated_tokens_per_prompt'] for r in ceilings], '{:.0f}')}"
            if ceilings
            else "- | -"
        )
        lines.append(
            f"| {name} | {spread([r['accuracy'] for r in runs], '{:.3f}')} "
            f"| {spread([r['generated_tokens_per_prompt'] for r in runs], '{:.0f}')} "
            f"| {spread([r['value_calls_per_prompt'] for r in runs], '{:.1f}')} | {ceiling} |"
        )
    lines += [
        "",
        "Held-out accuracy per seed (the searches with the iteration-0 models):",
        "",
        "| seed | " + " | ".join(HELD_OUT_SEARCHES) + " | greedy after the iteration | greedy in the control |",
        "|---|" + "---|" * (len(HELD_OUT_SEARCHES) + 2),
        *(
            f"| {seed} | "
            + " | ".join(f"{f['held_out'][name]['accuracy']:.3f}" for name in HELD_OUT_SEARCHES)
            + f" | {f['after']['greedy']['accuracy']:.3f} | {f['control']['greedy']['accuracy']:.3f} |"
            for seed, f in zip(seeds, per_seed, strict=True)
        ),
    ]
    own = [f["own_traces"] for f in per_seed]
    lines += [
        "",
        "The policy's own held-out traces (8 sampled per prompt, pass@8 "
        f"{spread([o['pass_at_8'] for o in own], '{:.3f}')}): on the prompts whose traces are mixed, the "
        "highest-valued trace is right "
        f"{spread([o['top_valued_right']['before'] for o in own], '{:.3f}')} of the time, against "
        f"{spread([o['random_right'] for o in own], '{:.3f}')} for a trace picked at random; the value's AUROC among "
        f"the steps of one depth there is {spread([o['auroc_by_depth']['before'] for o in own], '{:.3f}')} (after "
        "the iteration and in the control: the table below). The same value model with the "
        "head alone (`value_reads_likelihood: false`, same body, data and steps): top-valued trace right "
        f"{spread([o['top_valued_right']['head_only'] for o in own], '{:.3f}')}, AUROC among the steps of one depth "
        f"{spread([o['auroc_by_depth']['head_only'] for o in own], '{:.3f}')}.",
    ]
    lines += [
        "",
        "The training search's verified traces by how their steps reach the right answer (per seed; "
        "`tiny_world.chains:sound_in_any_order`):",
        "",
        "| verified = | gold chain | the numbers in another order | unsound: slips that cancel |",
        "|---|---|---|---|",
        *(
            f"| {checked} | "
            + " | ".join(" / ".join(str(f["soundness"][checked][i]) for f in per_seed) for i in range(3))
            + " |"
            for checked in SOUNDNESS_RUNS
        ),
    ]
    lines += [
        "",
        "Paired on the held-out prompts: how many prompts A gets right and B wrong, and the reverse (the other "
        "prompts agree), and the exact sign test of the split, per seed and over the seeds' prompts together:",
        "",
        "| A vs B | " + " | ".join(f"seed {seed}" for seed in seeds) + " | all seeds | sign-test p (all seeds) |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    lines += [paired_row(label, [f["paired"][label] for f in per_seed]) for label, *_ in PAIRS]
    lines += [
        "",
        "| one self-training iteration | before | after | control: the same steps without the search's traces |",
        "|---|---|---|---|",
        iteration_row(
            "policy greedy accuracy (held-out)",
            per_seed,
            lambda f, when: held_out_search(f, when)["greedy"]["accuracy"],
        ),
        iteration_row(
            "MCTS* accuracy, same budget (held-out)",
            per_seed,
            lambda f, when: held_out_search(f, when)["mcts"]["accuracy"],
        ),
        iteration_row(
            "value AUROC, held-out value traces, pooled over depths", per_seed, lambda f, when: f["auroc"][when]
        ),
        iteration_row(
            "value AUROC among the steps of one depth, held-out value traces",
            per_seed,
            lambda f, when: f["auroc_by_depth"][when],
        ),
        iteration_row(
            "value AUROC among the steps of one depth, the held-out MCTS* tree (iteration-0 models; rule labels)",
            per_seed,
            lambda f, when: f["tree_auroc_by_depth"][when],
        ),
        iteration_row(
            "value AUROC among the steps of one depth, the policy's own held-out traces",
            per_seed,
            lambda f, when: f["own_traces"]["auroc_by_depth"][when],
        ),
        iteration_row(
            "top-valued trace right, the policy's own held-out traces (mixed prompts)",
            per_seed,
            lambda f, when: f["own_traces"]["top_valued_right"][when],
        ),
        "",
        "The iteration (dSFT of the policy and of the value body, value model, MCTS* over "
        f"{spread([f['search_train']['prompts'] for f in per_seed], '{:.0f}')} self-training prompts, "
        "SFT and value training on what it found) "
        f"took {spread([f['iteration_s'] / 60 for f in per_seed], '{:.1f}')} min per seed; the training search kept "
        f"{spread([f['search_train']['sft_rows'] for f in per_seed], '{:.0f}')} verified traces and "
        f"{spread([f['search_train']['traces'] for f in per_seed], '{:.0f}')} value traces.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, work_dir_help: str) -> None:
    """The flags of the chains benchmarks (this one and `benchmarks/grpo_chains.py`): seeds, folders, threads and
    the task variant."""
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work_dir", default="outputs/search_benchmark", help=work_dir_help)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every run (default: the library's)")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"))
    default = ChainsTask()
    parser.add_argument(
        "--largest_number",
        type=int,
        default=default.largest_number,
        help="chains of numbers 1..this (`tiny_world.chains`; at most 99)",
    )
    parser.add_argument("--num_train", type=int, default=default.num_train, help="dSFT chats, initial value traces")
    parser.add_argument("--num_search", type=int, default=default.num_search, help="self-training prompts")


def parsed_task(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, ChainsTask]:
    """The parsed flags and the task they name, checked; logging, threads and the offline hub set for the runs."""
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not 5 < args.largest_number < 100:
        parser.error(f"--largest_number {args.largest_number}: must be 6-99 (the recipes' lengths fit two digits)")
    if args.num_train < 1 or args.num_search < 1:
        parser.error(f"--num_train {args.num_train} --num_search {args.num_search}: each must be at least 1")
    return args, ChainsTask(args.largest_number, args.num_train, args.num_search)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "worlds and runs, one folder per seed")
    args, task = parsed_task(parser)
    start = time.perf_counter()
    figures = {seed: SeedRuns(Path(args.work_dir) / task.folder(seed), seed, task).figures() for seed in args.seeds}
    minutes = (time.perf_counter() - start) / 60
    command = f"python benchmarks/search.py --seeds {' '.join(map(str, args.seeds))}{task.flags()}"
    write_section(section(figures, command), args.output)
    print(f"\n{minutes:.1f} min; written to {args.output}")


if __name__ == "__main__":
    main()
