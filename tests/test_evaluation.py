"""The evaluation: prompt forms, argument checks, and win rates that are exact where the answer is known."""

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignment.data.readers import read_rows
from alignment.evaluation import EvalArguments, compare_policies, prompts_from_rows, reward_model_accuracy
from alignment.runtime.rules import load_rule
from tiny_world import STYLE_FLAW, answer_is_correct, sum_is_correct


def test_the_rules_tell_style_from_arithmetic():
    prompt = [{"role": "user", "content": "What is 38+47?"}]
    verdicts = {
        reply: (answer_is_correct(prompt, reply), sum_is_correct(prompt, reply))
        for reply in ["38+47=85", " 38+47=85 ", f"38+47=85{STYLE_FLAW}", "38+47=86", "38+47=851", "47+38=85", "85"]
    }
    assert verdicts == {
        "38+47=85": (True, True),
        " 38+47=85 ": (True, True),
        f"38+47=85{STYLE_FLAW}": (False, True),  # the style broken, the sum right
        "38+47=86": (False, False),
        "38+47=851": (False, False),
        "47+38=85": (False, False),
        "85": (False, False),
    }


def test_prompts_from_every_row_form():
    turns = [{"role": "user", "content": "1+2=?"}]
    rows = [
        {"prompt": turns},
        {"prompt": "1+2=?"},
        {"messages": [*turns, {"role": "assistant", "content": "1+2=3"}]},
    ]
    assert prompts_from_rows(rows) == [turns, turns, turns]
    with pytest.raises(ValueError, match="prompts row 0 has neither"):
        prompts_from_rows([{"text": "x"}])


def test_eval_arguments_are_checked():
    form = "expected `package.module:function`"
    with pytest.raises(ValueError, match=f"`rule: maths` is not an import path; {form}"):
        EvalArguments(baseline="a", candidate="b", prompts="p", rule="maths")
    with pytest.raises(ValueError, match=f"`rule: maths:add`: no module `maths` can be imported; {form}"):
        EvalArguments(baseline="a", candidate="b", prompts="p", rule="maths:add")
    with pytest.raises(ValueError, match=f"module `tiny_world.arithmetic` has no `add`; {form}"):
        EvalArguments(baseline="a", candidate="b", prompts="p", rule="tiny_world.arithmetic:add")
    assert load_rule("tiny_world.arithmetic:answer_is_correct") is answer_is_correct
    with pytest.raises(ValueError, match=f"`extra_rules: maths:x`: no module `maths` can be imported; {form}"):
        EvalArguments(
            baseline="a", candidate="b", prompts="p", extra_rules=["tiny_world.arithmetic:sum_is_correct", "maths:x"]
        )
    with pytest.raises(ValueError, match="`value_model` and `steps` go together"):
        EvalArguments(baseline="a", candidate="b", prompts="p", value_model="v")


@pytest.fixture(scope="module")
def random_judge(tiny_world, tmp_path_factory):
    """An untrained one-output reward model on the tiny base (a valid judge with no preference)."""
    path = tmp_path_factory.mktemp("judge")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_world / "base", num_labels=1)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_world / "base").pad_token_id
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_world / "base").save_pretrained(path)
    return path


def test_a_policy_against_itself_ties_everywhere(tiny_world, random_judge):
    prompts = prompts_from_rows(read_rows(tiny_world / "dpo" / "test.jsonl"))[:8]
    base = str(tiny_world / "base")
    even, empty = (lambda p, r: len(r) % 2 == 0), (lambda p, r: not r)
    result = compare_policies(
        base, base, prompts, judge_dir=str(random_judge), rule=even, extra_rules={"even": even, "empty": empty}
    )
    assert result["prompts"] == 8
    assert result["win_rate_by_rule"] == 0.5 and result["win_rate_by_reward_model"] == 0.5
    assert result["baseline_rule_correct"] == result["candidate_rule_correct"]
    share = result["baseline_rule_correct"]
    assert result["shares"]["even"] == {"baseline": share, "candidate": share}
    assert set(result["shares"]["empty"]) == {"baseline", "candidate"}
    assert result["baseline_mean_reward"] == pytest.approx(result["candidate_mean_reward"])
    assert len(result["examples"]) == 5


def test_reward_model_accuracy_counts_chosen_above_rejected(tiny_world, random_judge):
    pairs = read_rows(tiny_world / "rm" / "test.jsonl")[:20]
    forward = reward_model_accuracy(str(random_judge), pairs)
    swapped = reward_model_accuracy(
        str(random_judge), [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    )
    assert forward + swapped == pytest.approx(1.0)  # no ties with continuous rewards: every pair counts once
