"""The four searches on a scripted policy and value whose right answer is known: what each chooses, the exact token
and value-call budget it reports, UCT selection and backup on a hand-built tree, the config's checks, the real LM
policy's generate path (stop at the newline, end of turn, token counts) on a random tiny Llama, and the shipped
search recipes parsing against the script's dataclasses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.search.algorithms import Node, SearchResult, backup, beam, best_of_n, greedy, mcts, uct_child
from alignment.search.config import SearchArguments, SearchConfig
from alignment.search.policy import LMPolicy, Proposal, RuleScorer
from alignment.search.run import load_search_models, prompt_outputs, run_search
from tiny_world.chains import final_answer_is_correct, step_correctness

REPO = Path(__file__).resolve().parents[3]
PROMPT = [{"role": "user", "content": "Add 2, 3 and 4."}]

# After each prefix: the steps the policy proposes, most likely first (greedy takes the first), each (text, ended).
# Greedy slips on the first step; the right answer is 2+3=5, 5+4=9.
SCRIPT = {
    (): [("2+3=6", False), ("2+3=5", False)],
    ("2+3=6",): [("6+4=10", True)],
    ("2+3=5",): [("5+4=9", True), ("5+4=8", True)],
}
# The stub value model: high on the right path, low elsewhere.
VALUES = {("2+3=6",): 0.1, ("2+3=6", "6+4=10"): 0.05, ("2+3=5",): 0.8, ("2+3=5", "5+4=9"): 0.95}
VALUES[("2+3=5", "5+4=8")] = 0.2


def tokens_of(text: str) -> int:
    """The stub's token count of a step: one per character, plus the stop token."""
    return len(text) + 1


class ScriptedPolicy:
    """Greedy gives the first scripted step; sampling cycles through the steps of a prefix in order, so every
    count below is exact."""

    def __init__(self):
        self.drawn: dict[tuple, int] = {}

    def propose(self, prompt, prefixes, num_samples, *, sample):
        rows = []
        for prefix in map(tuple, prefixes):
            options, row = SCRIPT[prefix], []
            for _ in range(num_samples):
                index = self.drawn.get(prefix, 0) if sample else 0
                self.drawn[prefix] = index + 1
                text, ended = options[index % len(options)]
                row.append(Proposal(text, ended, tokens_of(text)))
            rows.append(row)
        return rows


class TableScorer:
    def __init__(self):
        self.calls = []

    def score(self, prompt, traces):
        self.calls.append([tuple(t) for t in traces])
        return [VALUES[tuple(t)] for t in traces], sum(len(t) for t in traces)


def test_greedy_follows_the_most_likely_step_and_counts_its_tokens():
    result = greedy(PROMPT, ScriptedPolicy(), None, SearchConfig(algorithm="greedy"))
    assert result.chosen.steps == ["2+3=6", "6+4=10"]
    assert result.chosen.terminal
    assert result.generated_tokens == tokens_of("2+3=6") + tokens_of("6+4=10") == 13
    assert (result.value_calls, result.scored_tokens) == (0, 0)


def test_best_of_n_keeps_the_highest_valued_finished_trace():
    scorer = TableScorer()
    result = best_of_n(PROMPT, ScriptedPolicy(), scorer, SearchConfig(algorithm="best_of_n", num_samples=4))
    assert result.chosen.steps == ["2+3=5", "5+4=9"]
    # Samples: 6, 5, 6, 5 then 10, 9, 10, 8 (the two 6-branches share one node and their duplicate finish).
    first, second = 2 * tokens_of("2+3=6") + 2 * tokens_of("2+3=5"), 2 * tokens_of("6+4=10") + 2 * tokens_of("5+4=9")
    assert result.generated_tokens == first + second == 50
    assert scorer.calls == [[("2+3=6", "6+4=10"), ("2+3=5", "5+4=9"), ("2+3=5", "5+4=8")]]
    assert (result.value_calls, result.scored_tokens) == (3, 6)
    assert sorted(tuple(n.steps) for n in result.terminal_nodes()) == [
        ("2+3=5", "5+4=8"),
        ("2+3=5", "5+4=9"),
        ("2+3=6", "6+4=10"),
    ]


def test_beam_keeps_the_best_partial_trace_by_value():
    scorer = TableScorer()
    config = SearchConfig(algorithm="beam", beam_width=1, num_candidates=2)
    result = beam(PROMPT, ScriptedPolicy(), scorer, config)
    assert result.chosen.steps == ["2+3=5", "5+4=9"]
    assert result.generated_tokens == 2 * tokens_of("2+3=6") + 2 * tokens_of("5+4=9") == 24
    assert scorer.calls == [[("2+3=6",), ("2+3=5",)], [("2+3=5", "5+4=9"), ("2+3=5", "5+4=8")]]
    assert (result.value_calls, result.scored_tokens) == (4, 6)
    # The pruned 2+3=6 branch was never extended.
    assert not result.root.children["2+3=6"].children


def test_mcts_selects_expands_evaluates_and_backs_up_until_nothing_is_left_to_expand():
    scorer = TableScorer()
    config = SearchConfig(algorithm="mcts", num_candidates=2, exploration=0.5, max_rollouts=1000, token_budget=1000)
    result = mcts(PROMPT, ScriptedPolicy(), scorer, config)
    assert result.chosen.steps == ["2+3=5", "5+4=9"]
    # Round 1 expands the root (6 + 6 tokens), round 2 the 2+3=5 child (6 + 6), whose two finishes exhaust it, so
    # round 3 expands the 2+3=6 child instead of selecting a finished trace again (7 + 7: one child, its duplicate
    # merged). The whole tree is then exhausted and the search stops, far under its budget and round cap.
    assert result.generated_tokens == 38
    assert (result.value_calls, result.scored_tokens) == (5, 8)
    root, right, wrong = result.root, result.root.children["2+3=5"], result.root.children["2+3=6"]
    assert root.exhausted and right.exhausted and wrong.exhausted
    finish = right.children["5+4=9"]
    assert (root.visits, right.visits, finish.visits, right.children["5+4=8"].visits) == (3, 2, 1, 1)
    assert (wrong.visits, wrong.children["6+4=10"].visits) == (2, 1)
    assert right.mean_value == pytest.approx((0.95 + 0.2) / 2)
    assert wrong.mean_value == pytest.approx(0.05)
    assert root.mean_value == pytest.approx((0.05 * 2 + right.mean_value * 2) / 4)


def test_mcts_stops_at_its_token_budget_and_completes_the_best_leaf_greedily():
    scorer = TableScorer()
    config = SearchConfig(algorithm="mcts", num_candidates=2, token_budget=12, max_rollouts=50)
    result = mcts(PROMPT, ScriptedPolicy(), scorer, config)
    # One expansion spends the budget; the best leaf (2+3=5, value 0.8) is then finished greedily (6 tokens).
    assert result.chosen.steps == ["2+3=5", "5+4=9"]
    assert result.generated_tokens == 12 + 6
    assert result.value_calls == 2


def test_uct_prefers_the_value_then_the_less_visited_child():
    root = Node(visits=10)
    a = root.children["a"] = Node("a", parent=root, depth=1, visits=8, mean_value=0.6)
    b = root.children["b"] = Node("b", parent=root, depth=1, visits=2, mean_value=0.5)
    assert uct_child(root, exploration=0.0) is a
    # 0.6 + sqrt(2 ln 10 / 8) = 1.359 < 0.5 + sqrt(2 ln 10 / 2) = 2.017
    assert uct_child(root, exploration=1.0) is b


def test_backup_takes_the_visit_weighted_mean_of_the_children():
    root = Node(visits=1)
    a = root.children["a"] = Node("a", parent=root, depth=1, visits=1, mean_value=0.2)
    a1 = a.children["x"] = Node("x", parent=a, depth=2, visits=1, mean_value=1.0, terminal=True)
    a.children["y"] = Node("y", parent=a, depth=2, visits=3, mean_value=0.0)
    backup(a)
    assert a.visits == 2 and a.mean_value == pytest.approx(0.25)
    assert root.visits == 2 and root.mean_value == pytest.approx(0.25)
    assert a1.visits == 1  # nodes below the backed-up one are untouched


def test_a_subtree_is_exhausted_once_every_leaf_below_is_finished_and_uct_skips_it():
    root = Node(visits=2)
    a = root.children["a"] = Node("a", parent=root, depth=1, visits=2, mean_value=0.25)
    a.children["x"] = Node("x", parent=a, depth=2, visits=1, mean_value=1.0, terminal=True)
    y = a.children["y"] = Node("y", parent=a, depth=2, visits=3, mean_value=0.0)
    assert not a.exhausted and not root.exhausted  # y is still open
    y.terminal = True
    assert a.exhausted and root.exhausted
    # UCT never picks an exhausted child, whatever its value.
    b = root.children["b"] = Node("b", parent=root, depth=1, visits=1, mean_value=-1.0)
    assert uct_child(root, exploration=0.0) is b


def test_a_blank_step_ends_the_trace_and_a_step_limit_makes_it_terminal():
    class Blank(ScriptedPolicy):
        def propose(self, prompt, prefixes, num_samples, *, sample):
            rows = super().propose(prompt, prefixes, num_samples, sample=sample)
            blank = [Proposal("", True, 1)]
            return [blank if tuple(p) == ("2+3=6",) else row for p, row in zip(prefixes, rows, strict=True)]

    result = greedy(PROMPT, Blank(), None, SearchConfig(algorithm="greedy"))
    assert result.chosen.steps == ["2+3=6"] and result.chosen.terminal and result.generated_tokens == 7
    limited = greedy(PROMPT, ScriptedPolicy(), None, SearchConfig(algorithm="greedy", max_steps=1))
    assert limited.chosen.steps == ["2+3=6"] and limited.chosen.terminal


def test_searches_that_rank_by_value_need_a_value_model():
    with pytest.raises(ValueError, match="needs a value model"):
        beam(PROMPT, ScriptedPolicy(), None, SearchConfig(algorithm="beam"))


def test_a_step_rule_values_each_trace_by_its_last_step_and_guides_beam_to_the_right_chain():
    scorer = RuleScorer(step_correctness)
    traces = [["2+3=5"], ["2+3=6"], ["2+3=5", "5+4=9"], ["2+3=5", "5+4=9", "9+1=10"]]
    assert scorer.score(PROMPT, traces) == ([1.0, -1.0, 1.0, -1.0], 0)
    config = SearchConfig(algorithm="beam", beam_width=1, num_candidates=2)
    assert beam(PROMPT, ScriptedPolicy(), scorer, config).chosen.steps == ["2+3=5", "5+4=9"]


def test_a_value_rule_takes_the_value_models_place(tiny_world, tmp_path):
    args = SearchArguments(
        policy=str(tiny_world / "base"),
        prompts="p.jsonl",
        verifier="tiny_world.chains:final_answer_is_correct",
        output_dir=str(tmp_path),
        value_rule="tiny_world.chains:step_correctness",
    )
    _, scorer = load_search_models(args, SearchConfig(algorithm="beam"))
    assert isinstance(scorer, RuleScorer) and scorer.rule is step_correctness


def test_verify_steps_drops_a_right_answer_reached_through_a_step_the_value_rejects():
    # A hand-built tree for "Add 2, 3 and 4." (9). The verifier accepts three finished traces: the right chain, the
    # same sum in another order whose first step was never scored, and 9 reached through the wrong 2+3=6 and a
    # compensating 6+3=9. Only the values tell the last one apart.
    root = Node()

    def child(parent: Node, step: str, value: float | None, terminal: bool = False) -> Node:
        node = Node(step, parent=parent, depth=parent.depth + 1, terminal=terminal, value=value)
        parent.children[step] = node
        return node

    right, reordered, slipped = child(root, "2+3=5", 0.8), child(root, "3+2=5", None), child(root, "2+3=6", -0.7)
    child(right, "5+4=9", 0.9, terminal=True)
    child(right, "5+4=8", -0.9, terminal=True)
    child(reordered, "5+4=9", 0.9, terminal=True)
    lucky = child(slipped, "6+3=9", 0.4, terminal=True)
    result = SearchResult(root=root, chosen=lucky)

    def outputs(sft_traces: str, verify_steps: bool) -> tuple[dict[str, list[float]], list[str], bool]:
        traces, sft, chosen_correct = prompt_outputs(
            PROMPT, result, final_answer_is_correct, sft_traces=sft_traces, verify_steps=verify_steps
        )
        q = {"\n".join(s["step"] for s in row["response"]): [s["Q"] for s in row["response"]] for row in traces}
        return q, [row["messages"][-1]["content"] for row in sft], chosen_correct

    q, sft, chosen_correct = outputs("correct", verify_steps=False)
    assert sft == ["2+3=5\n5+4=9", "3+2=5\n5+4=9", "2+3=6\n6+3=9"]
    assert q["2+3=6\n6+3=9"] == [0.0, 1.0]  # the wrong step credited: it reached a right answer (v = 1/2, then 1)
    q, sft, chosen_correct = outputs("correct", verify_steps=True)
    assert sft == ["2+3=5\n5+4=9"]  # -0.7 on 2+3=6 drops the lucky 9; no value on 3+2=5 drops that one
    # Now 2+3=6 leads to no verified answer: v = max(0 - (1 - 0) / 3, 0) = 0, with 3 the distance of its nearest
    # ancestor that reaches one (the root: 2 steps down to 5+4=9, plus 1).
    assert q["2+3=6\n6+3=9"] == [-1.0, -1.0] and q["2+3=5\n5+4=9"] == [0.0, 1.0]
    assert chosen_correct  # the accuracy is the verifier's alone
    assert outputs("chosen", verify_steps=False)[1] == ["2+3=6\n6+3=9"]
    assert outputs("chosen", verify_steps=True)[1] == []


def test_verify_steps_needs_a_search_that_values_every_step(tmp_path):
    paths = ["--policy", "p", "--prompts", "p.jsonl", "--output_dir", str(tmp_path)]
    argv = [*paths, "--verifier", "tiny_world.chains:final_answer_is_correct", "--verify_steps", "true"]
    with pytest.raises(
        RecipeError, match=r"`algorithm: best_of_n` does not value every step: use one of \['beam', 'mcts'\]"
    ):
        run_search([*argv, "--algorithm", "best_of_n"])


def test_value_rule_and_value_model_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="set one"):
        SearchArguments(
            policy="p",
            prompts="p.jsonl",
            verifier="tiny_world.chains:final_answer_is_correct",
            output_dir=str(tmp_path),
            value_model="v",
            value_rule="tiny_world.chains:step_correctness",
        )


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("algorithm", "dfs", "must be one of"),
        ("num_samples", 0, "num_samples: 0"),
        ("temperature", 0.0, "temperature: 0.0"),
        ("top_p", 1.5, "top_p: 1.5"),
        ("exploration", -1.0, "exploration: -1.0"),
    ],
)
def test_config_errors_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**{key: value})


def test_the_recipe_parser_refuses_a_misspelt_search_key():
    parser = RecipeParser((SearchConfig,))
    with pytest.raises(RecipeError, match="Did you mean `beam_width`"):
        parser.parse(["--beam_widht", "3"])


def script_dataclasses() -> tuple:
    spec = importlib.util.spec_from_file_location("run_search", REPO / "scripts" / "run_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE_DATACLASSES


SEARCH_RECIPES = sorted((REPO / "recipes").rglob("search/*.yaml"))


@pytest.mark.parametrize("recipe", SEARCH_RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_search_recipes_parse_strictly(recipe: Path):
    parser = RecipeParser(script_dataclasses())
    configs = parser.parse([str(recipe)])
    written = parser.read_recipe(recipe)
    assert {name for config in configs for name in written if hasattr(config, name)} == set(written)


def test_search_recipes_exist():
    assert SEARCH_RECIPES


@pytest.fixture(scope="module")
def random_policy(tiny_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    model = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    return model, tokenizer


def test_lm_policy_stops_each_step_at_its_newline_or_end_of_turn(random_policy):
    model, tokenizer = random_policy
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = eos
    policy = LMPolicy(model, tokenizer, max_step_tokens=6)
    torch.manual_seed(0)
    rows = policy.propose(PROMPT, [[], ["2+3=5"]], 5, sample=True)
    assert [len(row) for row in rows] == [5, 5]
    proposals = [p for row in rows for p in row]
    assert all(1 <= p.tokens <= 6 and "\n" not in p.text for p in proposals)
    # Greedy, one prefix at a time and batched, gives the same steps (left padding and the KV cache change nothing).
    alone = [policy.propose(PROMPT, [prefix], 1, sample=False)[0][0] for prefix in ([], ["2+3=5", "5+4=9"])]
    batched = [row[0] for row in policy.propose(PROMPT, [[], ["2+3=5", "5+4=9"]], 1, sample=False)]
    assert alone == batched
    assert newline in policy.newline_ids


def test_lm_policy_counts_the_stop_token(random_policy):
    """A model forced to write `7` then a newline (or the end of turn) proposes `7` in 2 tokens."""
    model, tokenizer = random_policy
    seven, newline, eos = tokenizer.convert_tokens_to_ids(["7", "Ċ", tokenizer.eos_token])
    model.generation_config.eos_token_id = eos

    policy = LMPolicy(model, tokenizer, max_step_tokens=4)
    for stop, ended in ((newline, False), (eos, True)):
        original = model.lm_head.forward
        calls = {"n": 0}

        def lm_head(hidden, stop=stop, original=original, calls=calls):
            logits = original(hidden)
            target = seven if calls["n"] == 0 else stop
            calls["n"] += 1
            logits[..., :] = -1e4
            logits[..., target] = 0.0
            return logits

        model.lm_head.forward = lm_head
        try:
            (proposal,) = policy.propose(PROMPT, [[]], 1, sample=False)[0]
        finally:
            model.lm_head.forward = original
        assert proposal == Proposal("7", ended, 2)


def test_the_rest_mcts_pipeline_recipe_parses(monkeypatch):
    from alignment.pipeline import PipelineConfig

    monkeypatch.chdir(REPO)
    (config,) = RecipeParser((PipelineConfig,)).parse(["recipes/tiny/rest_mcts.yaml"])
    scripts = [Path(stage["script"]).name for stage in config.stages]
    assert scripts == [
        "run_sft.py",
        "run_sft.py",
        "run_value.py",
        "run_search.py",
        "run_sft.py",
        "run_value.py",
        "run_search.py",
    ]
