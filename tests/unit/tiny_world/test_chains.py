"""The chained-addition task of the tiny world (`tiny_world.chains`): prompts, steps, the rule, the writers."""

import json
import re
from collections import Counter
from itertools import pairwise

import pytest

from alignment.data.readers import read_rows
from alignment.evaluation import prompts_from_rows
from alignment.value.rows import to_trace, value_row_problem
from tiny_world.chains import (
    chain_prompt,
    chain_rows,
    chain_steps,
    final_answer_is_correct,
    prompt_numbers,
    sound_in_any_order,
    split_chains,
    step_correctness,
    value_rows,
    write_chain_data,
)


def test_a_chain_adds_each_number_to_the_running_total():
    assert chain_prompt((7, 5, 9, 3)) == "Add 7, 5, 9 and 3."
    assert chain_steps((7, 5, 9, 3)) == ["7+5=12", "12+9=21", "21+3=24"]
    assert prompt_numbers([{"role": "user", "content": "Add 7, 5, 9 and 3."}]) == [7, 5, 9, 3]


def test_the_rule_judges_the_final_answer_only():
    prompt = [{"role": "user", "content": "Add 7, 5, 9 and 3."}]
    assert final_answer_is_correct(prompt, "7+5=12\n12+9=21\n21+3=24")
    assert final_answer_is_correct(prompt, ["7+5=12", "12+9=21", "21+3=24"])
    assert final_answer_is_correct("Add 7, 5, 9 and 3.", "7+5=13\n13+9=21\n21+3=24")  # a lucky answer passes
    assert not final_answer_is_correct(prompt, "7+5=12\n12+9=21\n21+3=25")
    assert not final_answer_is_correct(prompt, "")
    assert not final_answer_is_correct(prompt, "7+5=12\n12+9=21\n21+3=")
    assert not final_answer_is_correct(prompt, "the answer is 24")


def test_step_correctness_stays_false_after_the_first_wrong_step():
    prompt = "Add 7, 5, 9 and 3."
    assert step_correctness(prompt, ["7+5=12", "12+9=21", "21+3=24"]) == [True, True, True]
    assert step_correctness(prompt, ["7+5=13", "13+9=22", "22+3=25"]) == [False, False, False]
    assert step_correctness(prompt, ["7+5=12", "12+9=22", "22+3=25"]) == [True, False, False]
    assert step_correctness(prompt, ["7+5=12", "12+9=21", "21+3=24", "24+1=25"]) == [True, True, True, False]


def test_sound_in_any_order_accepts_every_order_and_refuses_cancelling_slips():
    prompt = [{"role": "user", "content": "Add 3, 5, 6 and 8."}]
    assert sound_in_any_order(prompt, ["3+5=8", "8+6=14", "14+8=22"])  # the prompt's order
    assert sound_in_any_order(prompt, "5+8=13\n13+3=16\n16+6=22")  # another order, as a reply
    # The right sum through a wrong number that a misadd cancels: the final-answer rule passes it, this does not.
    assert final_answer_is_correct(prompt, ["3+5=8", "8+8=16", "16+6=21", "21+1=22"])
    assert not sound_in_any_order(prompt, ["3+5=8", "8+8=16", "16+6=21", "21+1=22"])
    assert not sound_in_any_order(prompt, ["3+5=8", "8+6=15", "15+7=22"])  # two misadds that cancel
    assert not sound_in_any_order(prompt, ["3+5=8", "8+6=14"])  # a number left out
    assert not sound_in_any_order(prompt, ["3+5=8", "9+6=15", "15+8=23"])  # the running total restated wrong
    assert not sound_in_any_order(prompt, ["3+3=6", "6+5=11", "11+6=17", "17+8=25"])  # a number used twice
    assert not sound_in_any_order(prompt, ["4+5=9", "9+6=15", "15+8=23"])  # a first number not in the prompt
    assert not sound_in_any_order(prompt, ["the sum is 22"])
    assert not sound_in_any_order(prompt, [])


def test_held_out_and_self_training_chains_are_not_training_chains_nor_each_other():
    train, test, search = split_chains(500, 100, seed=0, n_search=150)
    assert len(train) == 500 and len(set(test)) == 100 and len(set(search)) == 150
    assert not set(train) & set(test) and not set(search) & (set(train) | set(test))
    assert all(4 <= len(chain) <= 6 and all(1 <= n <= 9 for n in chain) for chain in train + test + search)
    # The self-training chains are drawn last: asking for them leaves the dSFT and held-out chains as they were.
    assert split_chains(500, 100, seed=0)[:2] == (train, test)


def test_sft_rows_reply_with_the_steps_one_per_line():
    (row,) = chain_rows([(7, 5, 9, 3)])
    assert row["messages"] == [
        {"role": "user", "content": "Add 7, 5, 9 and 3."},
        {"role": "assistant", "content": "7+5=12\n12+9=21\n21+3=24"},
    ]


def test_value_rows_are_rest_mcts_traces_that_go_wrong_for_good():
    rows = value_rows(split_chains(300, 1, seed=0).train, seed=1)
    wrong = 0
    for row in rows:
        assert value_row_problem(row) is None
        trace = to_trace(row)
        correct = step_correctness(row["prompt"], trace.steps)
        assert trace.q == [1.0 if c else -1.0 for c in correct]
        assert trace.positive == all(correct) == final_answer_is_correct(row["prompt"], trace.steps)
        wrong += not all(correct)
    assert 0.45 < wrong / len(rows) < 0.75  # error_rate 0.6


def test_value_rows_err_the_three_ways_the_policy_does():
    """The first wrong step adds a wrong number, misadds (a carry slip of 10, or 1-3), or restates the running total
    wrong and adds on from there; the rest of the trace goes on correctly from the wrong total."""
    kinds, offsets = Counter(), Counter()
    for row in value_rows(split_chains(1000, 1, seed=0, largest=29).train, seed=1, largest=29):
        numbers, steps = prompt_numbers(row["prompt"]), to_trace(row).steps
        correct = step_correctness(row["prompt"], steps)
        if all(correct):
            continue
        first = correct.index(False)
        (total, added, result), right_total = (
            [int(n) for n in re.split(r"[+=]", steps[first])],
            sum(numbers[: first + 1]),
        )
        assert min(total, result) >= 0
        if added != numbers[first + 1]:
            kinds["wrong number"] += 1
            assert total == right_total and result == total + added
        elif total != right_total:
            kinds["wrong total"] += 1
            offsets[abs(total - right_total)] += 1
            assert result == total + added
        else:
            kinds["misadd"] += 1
            offsets[abs(result - total - added)] += 1
        for step, later in pairwise(steps[first:]):  # onward from the wrong total, no second slip
            later_total, later_added, later_result = (int(n) for n in re.split(r"[+=]", later))
            assert later_total == int(step.rsplit("=", 1)[1]) and later_result == later_total + later_added
    wrong = sum(kinds.values())
    assert 0.33 < kinds["wrong number"] / wrong < 0.47 and 0.33 < kinds["misadd"] / wrong < 0.47
    assert 0.14 < kinds["wrong total"] / wrong < 0.26
    assert set(offsets) == {1, 2, 3, 10} and 0.4 < offsets[10] / sum(offsets.values()) < 0.6


def test_write_chain_data_writes_every_split(tmp_path):
    write_chain_data(tmp_path, num_train=50, num_test=10, num_search=30)
    for folder in ("sft", "value", "prompts"):
        assert {p.name for p in (tmp_path / folder).iterdir()} == {"train.jsonl", "test.jsonl"}
    prompts = prompts_from_rows(read_rows(str(tmp_path / "prompts" / "test.jsonl")))
    sft = [json.loads(line) for line in (tmp_path / "sft" / "test.jsonl").read_text().splitlines()]
    assert prompts == [row["messages"][:1] for row in sft]
    # The self-training prompts are answers-only questions: no SFT chat or value trace, train or test, holds one.
    searched = {tuple(prompt_numbers(row["prompt"])) for row in read_rows(str(tmp_path / "prompts" / "train.jsonl"))}
    solved = {
        tuple(prompt_numbers(row["messages"] if folder == "sft" else row["prompt"]))
        for folder in ("sft", "value")
        for split in ("train", "test")
        for row in read_rows(str(tmp_path / folder / f"{split}.jsonl"))
    }
    assert len(searched) == 30 and len(solved) > 50 and not solved & searched


def test_largest_number_widens_the_numbers_and_the_wrong_ones(tmp_path):
    write_chain_data(tmp_path, num_train=300, num_test=20, largest_number=29)
    numbers = [n for row in read_rows(str(tmp_path / "sft" / "train.jsonl")) for n in prompt_numbers(row["messages"])]
    assert max(numbers) == 29 and min(numbers) == 1 and sum(n > 9 for n in numbers) > len(numbers) / 2
    added_wrong = []
    for row in read_rows(str(tmp_path / "value" / "train.jsonl")):
        trace, expected = to_trace(row), chain_steps(prompt_numbers(row["prompt"]))
        correct = step_correctness(row["prompt"], trace.steps)
        assert trace.q == [1.0 if c else -1.0 for c in correct]
        if not all(correct):
            first = correct.index(False)
            added, wanted = (int(step.split("+")[1].split("=")[0]) for step in (trace.steps[first], expected[first]))
            if added != wanted:  # the wrong-number error, not the misadding one
                assert added not in prompt_numbers(row["prompt"])[first + 1 :]
                added_wrong.append(added)
    assert max(added_wrong) > 9 and all(1 <= n <= 29 for n in added_wrong)


def test_too_small_a_largest_number_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`largest_number: 5`: must be at least 6"):
        write_chain_data(tmp_path, largest_number=5)
    assert not any(tmp_path.iterdir())


def test_the_command_line_refuses_too_small_a_largest_number_with_one_message(tmp_path, monkeypatch, capsys):
    from tiny_world.__main__ import main

    output_dir = tmp_path / "chains"
    argv = ["tiny_world", "chains", "--output_dir", str(output_dir), "--largest_number", "5"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "`largest_number: 5`: must be at least 6" in err
    assert "Traceback" not in err
    assert not output_dir.exists()
