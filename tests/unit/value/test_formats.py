"""`alignment.value.formats`: each value row form read into its exact `StepTrace`, laid out as tokens, refused verbatim
when malformed, and mixed (or not) by `load_mixture`. Rows: tests/fixtures/value/ (its README says where each shape
comes from)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from alignment.chat.templates import render_prompt
from alignment.chat.turns import IGNORE_INDEX
from alignment.data.mixture import load_mixture
from alignment.data.readers import read_rows
from alignment.data.rows import InvalidRowError
from alignment.recipes.arguments import DataArguments
from alignment.value.formats import Q_IGNORE, StepTrace
from alignment.value.rows import step_text, to_trace, tokenize_trace, tokenize_traces, value_row_problem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "value"

QUESTION = "Calculate the sum of the first 10 prime numbers."
USER = [{"role": "user", "content": QUESTION}]
S1 = "Step 1: The first 10 prime numbers are 2, 3, 5, 7, 11, 13, 17, 19, 23 and 29."
S2 = "Step 2: Adding them up: 2 + 3 + 5 + 7 + 11 + 13 + 17 + 19 + 23 + 29 = 129."
S3 = "Step 3: The final answer is 129."
WRONG_S2 = "Step 2: Adding them up: 2 + 3 + 5 + 7 + 11 + 13 + 17 + 19 + 23 + 29 = 127."
# ReST-MCTS*'s values, as the fixture files hold them: 1/3, 2/3, 1 on the verified route, 1/9 for the wrong step.
THIRD, TWO_THIRDS, NINTH = 0.3333333333333333, 0.6666666666666667, 0.11111111111111108

CORRECT = StepTrace(prompt=USER, steps=[S1, S2, S3], q=[THIRD, TWO_THIRDS, 1.0], positive=True)
WRONG = StepTrace(prompt=USER, steps=[S1, WRONG_S2], q=[THIRD, -1.0], positive=False)


def rows(name: str) -> list[dict]:
    return read_rows(FIXTURES / f"{name}.jsonl")


def q_targets(encoded: dict) -> dict[int, float]:
    return {i: q for i, q in enumerate(encoded["Q"]) if q != Q_IGNORE}


def released(text: str, label=0.5) -> dict:
    return {"prompt_answer": text, "label": label}


def llama_factory(content, role: str = "assistant") -> dict:
    return {"prompt": USER, "response": [{"role": role, "content": content}]}


# Each form -> StepTrace


def test_rest_and_llama_factory_rows_are_the_same_traces():
    assert [to_trace(row) for row in rows("rest_mcts")] == [CORRECT, WRONG]
    assert [to_trace(row) for row in rows("llama_factory")] == [CORRECT, WRONG]


def test_released_rows_target_only_the_last_step_and_are_positive_only_at_label_one():
    assert [to_trace(row) for row in rows("released")] == [
        StepTrace(prompt=USER, steps=[S1], q=[THIRD], positive=False),
        StepTrace(prompt=USER, steps=[S1, S2], q=[Q_IGNORE, TWO_THIRDS], positive=False),
        StepTrace(prompt=USER, steps=[S1, S2, S3], q=[Q_IGNORE, Q_IGNORE, 1.0], positive=True),
        StepTrace(prompt=USER, steps=[S1, WRONG_S2], q=[Q_IGNORE, NINTH], positive=False),
        StepTrace(
            prompt=[{"role": "user", "content": "计算前10个质数的和。"}],
            steps=["步骤1:前10个质数是2、3、5、7、11、13、17、19、23和29。"],
            q=[THIRD],
            positive=False,
        ),
    ]


def test_released_layout_as_the_search_scores_it():
    # `get_step_value` writes "Problem: " with a space; blank lines and edge spaces are not steps; int labels count.
    trace = to_trace(released(f"Problem: {QUESTION}\nSolution:\n{S1}\n\n  {S2}  \n", label=0))
    assert trace == StepTrace(prompt=USER, steps=[S1, S2], q=[Q_IGNORE, 0.0], positive=False)
    # The first separator splits: a later "Solution:" line is a step.
    assert to_trace(released("Problem:x\nSolution:\na\nSolution:\nb", label=1)).steps == ["a", "Solution:", "b"]


# Tokens


def test_llama_factory_and_rest_rows_give_the_same_tokens_and_q_at_each_step_end(tiny_tokenizer):
    rest = tokenize_trace(tiny_tokenizer, to_trace(rows("rest_mcts")[0]), max_length=None)
    assert tokenize_trace(tiny_tokenizer, to_trace(rows("llama_factory")[0]), max_length=None) == rest
    # Where each step ends: the last token of the prompt plus the steps so far, tokenized as one text.
    prompt = render_prompt(tiny_tokenizer, USER)
    ends = [
        len(tiny_tokenizer(prompt + "".join(map(step_text, CORRECT.steps[: k + 1])))["input_ids"]) - 1
        for k in range(3)
    ]
    assert ends == [109, 178, 205] and len(rest["input_ids"]) == 206
    assert q_targets(rest) == {109: THIRD, 178: TWO_THIRDS, 205: 1.0}
    assert [tiny_tokenizer.convert_ids_to_tokens(rest["input_ids"][i]) for i in ends] == ["Ċ", "Ċ", "Ċ"]
    start = len(tiny_tokenizer(prompt)["input_ids"])  # 40: the positive trace trains every step token, no prompt
    assert start == 40 and rest["labels"] == [IGNORE_INDEX] * start + rest["input_ids"][start:]
    wrong = tokenize_trace(tiny_tokenizer, to_trace(rows("llama_factory")[1]), max_length=None)
    assert q_targets(wrong) == {109: THIRD, 178: -1.0} and set(wrong["labels"]) == {IGNORE_INDEX}


def test_released_rows_give_the_trace_tokens_with_one_q_at_the_end(tiny_tokenizer):
    rest = tokenize_trace(tiny_tokenizer, to_trace(rows("rest_mcts")[0]), max_length=None)
    partial, complete = (
        tokenize_trace(tiny_tokenizer, to_trace(rows("released")[i]), max_length=None) for i in (1, 2)
    )
    assert partial["input_ids"] == rest["input_ids"][:179]
    assert q_targets(partial) == {178: TWO_THIRDS} and set(partial["labels"]) == {IGNORE_INDEX}
    assert complete["input_ids"] == rest["input_ids"] and complete["labels"] == rest["labels"]  # label 1: SFT too
    assert q_targets(complete) == {205: 1.0}
    assert (complete["steps"], complete["steps_kept"]) == (1, 1)  # steps counts Q targets, not lines


def test_a_released_row_cut_before_its_last_step_has_nothing_left_and_is_dropped(tiny_tokenizer):
    cut = tokenize_trace(tiny_tokenizer, to_trace(rows("released")[1]), max_length=178)
    assert (cut["steps"], cut["steps_kept"], cut["truncated"]) == (1, 0, True) and not q_targets(cut)
    dataset, report = tokenize_traces(load(["released.jsonl"])["train"].select([1]), tiny_tokenizer, max_length=178)
    assert (report.examples, report.truncated, report.steps, report.steps_lost, report.dropped) == (1, 1, 1, 1, 1)
    assert len(dataset) == 0


# Bad rows, verbatim

FORMS_LISTED = (
    "a row needs the columns of exactly one form: `response` (ReST-MCTS*: [{step, Q}], or LLaMA-Factory: one "
    "assistant message holding that list as JSON); `completions` and `labels` (TRL stepwise supervision); "
    "`prompt_answer` and `label` (ReST-MCTS* released value data); this row has "
)
LAYOUTS = (
    "prompt_answer does not split into question and steps: it must be 'Problem:' + question + '\\nSolution:\\n' + "
    "steps or '问题:' + question + '\\n步骤:\\n【答案】' + steps (one step per line, as ReST-MCTS* writes it); found: "
)


@pytest.mark.parametrize(
    ("row", "kind", "message"),
    [
        (
            llama_factory('[{"step": "a", "Q": 1'),
            "invalid step JSON",
            'response[0].content is not valid JSON (Expecting \',\' delimiter at character 21): [{"step": "a", "Q": 1',
        ),
        (
            llama_factory('{"step": "a", "Q": 1}'),
            "malformed response",
            "response[0].content is JSON dict {'step': 'a', 'Q': 1}, expected a non-empty list of {step, Q}",
        ),
        (
            llama_factory("[]"),
            "malformed response",
            "response[0].content is JSON list [], expected a non-empty list of {step, Q}",
        ),
        (
            llama_factory('[{"step": "a", "Q": 1}, "b"]'),
            "malformed step",
            "response[0].content[1] is not a dict with 'step' and 'Q': str b",
        ),
        (
            llama_factory('[{"step": "a", "Q": 1}, {"step": "b", "Q": -1.5}]'),
            "Q out of range",
            "response[0].content[1]: Q -1.5 is not a number in [-1, 1]",
        ),
        (
            llama_factory('[{"step": "a", "Q": NaN}]'),
            "Q out of range",
            "response[0].content[0]: Q nan is not a number in [-1, 1]",
        ),
        (
            llama_factory('[{"step": "a", "Q": "1"}]'),
            "Q out of range",
            "response[0].content[0]: Q '1' is not a number in [-1, 1]",
        ),
        (
            llama_factory('[{"step": " ", "Q": 1}]'),
            "empty step",
            "response[0].content[0]: the step text is empty or not a string",
        ),
        (llama_factory("[]", role="user"), "malformed response", "response[0] role is 'user', expected 'assistant'"),
        (
            llama_factory([{"step": "a", "Q": 1}]),
            "malformed response",
            "response[0] content is list [{'step': 'a', 'Q': 1}], expected a JSON string",
        ),
        (
            {"prompt": USER, "response": [{"role": "assistant", "content": "[]"}] * 2},
            "malformed response",
            "response holds 2 messages; the LLaMA-Factory form has exactly one assistant message whose content is a "
            "JSON list of {step, Q}",
        ),
        (
            {"prompt": USER, "response": [{"step": "a"}]},
            "malformed step",
            "response[0] is not a dict with 'step' and 'Q': dict {'step': 'a'}",
        ),
        (
            released(f"{QUESTION}\n{S1}\n"),
            "missing separator",
            LAYOUTS + "Calculate the sum of the first 10 prime numbers.\\nStep 1: The first 10 prime ...",
        ),
        (
            released(f"Solution:\n{S1}"),
            "missing separator",
            LAYOUTS + "Solution:\\nStep 1: The first 10 prime numbers are 2, 3, 5, 7, 11, 13, 17, 19,...",
        ),
        (
            released(f"Problem: \nSolution:\n{S1}"),
            "empty prompt",
            "prompt_answer has no question between 'Problem:' and '\\nSolution:\\n'",
        ),
        (
            released(f"Problem:{QUESTION}\nSolution:\n \n"),
            "no steps",
            "prompt_answer has no steps after '\\nSolution:\\n'",
        ),
        (
            released(f"Problem:{QUESTION}\nSolution:\n{S1}", label=1.5),
            "label out of range",
            "label 1.5 is not a number in [0, 1] (the value of the partial solution)",
        ),
        (
            released(f"Problem:{QUESTION}\nSolution:\n{S1}", label=-1),
            "label out of range",
            "label -1 is not a number in [0, 1] (the value of the partial solution)",
        ),
        (
            released(f"Problem:{QUESTION}\nSolution:\n{S1}", label=True),
            "label out of range",
            "label True is not a number in [0, 1] (the value of the partial solution)",
        ),
        (released(["Problem:"]), "malformed prompt_answer", "prompt_answer is list ['Problem:'], expected a string"),
        (
            {"prompt_answer": f"Problem:{QUESTION}\nSolution:\n{S1}"},
            "missing column",
            "no 'label' column: the released ReST-MCTS* form has `prompt_answer` and `label` (the row has: "
            "prompt_answer)",
        ),
        (
            {"prompt": QUESTION, "completions": [S1], "label": 0.5},
            "unknown form",
            FORMS_LISTED + "`completions` (TRL stepwise supervision) and `label` (ReST-MCTS* released value data) "
            "(the row has: prompt, completions, label)",
        ),
        ({"prompt": QUESTION}, "unknown form", FORMS_LISTED + "none of them (the row has: prompt)"),
    ],
)
def test_bad_rows_are_refused_verbatim_with_their_kind(row, kind, message):
    problem = value_row_problem(row)
    assert (problem.kind, str(problem)) == (kind, message)


# Mixtures


def load(files: list[str], **kwargs):
    mixer = {str(FIXTURES / name): 1.0 for name in files}
    return load_mixture(
        DataArguments(dataset_mixer=mixer, test_split_size=0.0, **kwargs), validate_row=value_row_problem
    )


@pytest.mark.parametrize(("name", "count"), [("rest_mcts", 2), ("llama_factory", 2), ("released", 5)])
def test_each_form_loads_and_tokenizes_through_the_mixture(tiny_tokenizer, name, count):
    dataset, report = tokenize_traces(load([f"{name}.jsonl"])["train"], tiny_tokenizer, max_length=None)
    assert len(dataset) == report.examples == count and report.dropped == 0
    expected = [tokenize_trace(tiny_tokenizer, to_trace(row), max_length=None) for row in rows(name)]
    assert dataset["input_ids"] == [e["input_ids"] for e in expected]
    assert dataset["labels"] == [e["labels"] for e in expected]
    assert [q_targets(row) for row in dataset] == [pytest.approx(q_targets(e)) for e in expected]  # stored float32


def test_sources_in_different_forms_are_refused_and_convert_to_one_form(tmp_path):
    with pytest.raises(
        ValueError, match="Sources have different column types, so they cannot be mixed:\n  response: "
    ):
        load(["rest_mcts.jsonl", "llama_factory.jsonl"])
    with pytest.raises(ValueError, match="Sources have different columns, so they cannot be mixed"):
        load(["rest_mcts.jsonl", "released.jsonl"])
    # The documented conversion: a LLaMA-Factory row is a ReST-MCTS* row once its JSON is parsed.
    converted = [{**row, "response": json.loads(row["response"][0]["content"])} for row in rows("llama_factory")]
    assert converted == rows("rest_mcts")
    (tmp_path / "converted.jsonl").write_text("".join(json.dumps(row) + "\n" for row in converted))
    mixer = {str(FIXTURES / "rest_mcts.jsonl"): 1.0, str(tmp_path / "converted.jsonl"): 1.0}
    mixture = load_mixture(DataArguments(dataset_mixer=mixer, test_split_size=0.0), validate_row=value_row_problem)
    assert [to_trace(row) for row in mixture["train"]] == [CORRECT, WRONG, CORRECT, WRONG]


def test_a_bad_released_row_is_named_or_dropped_and_counted(tmp_path):
    path = tmp_path / "released.jsonl"
    bad = released(f"Problem:{QUESTION}\nSolution:\n{S1}", label=1.5)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in [*rows("released")[:2], bad]))
    mixer = {str(path): 1.0}
    with pytest.raises(InvalidRowError, match=r"row 2: label 1\.5 is not a number in \[0, 1\]"):
        load_mixture(DataArguments(dataset_mixer=mixer, test_split_size=0.0), validate_row=value_row_problem)
    mixture = load_mixture(
        DataArguments(dataset_mixer=mixer, test_split_size=0.0, skip_invalid_rows=True), validate_row=value_row_problem
    )
    assert len(mixture["train"]) == 2 and mixture.report.invalid == Counter({"label out of range": 1})


def test_the_readme_examples_are_valid_rows_of_their_forms():
    readme = (Path(__file__).resolve().parents[3] / "recipes" / "tiny" / "value" / "README.md").read_text()
    blocks = [block.split("```")[0] for block in readme.split("```json\n")[1:]]
    examples = [json.loads(" ".join(line.strip() for line in block.splitlines())) for block in blocks]
    traces = [to_trace(row) for row in examples]
    assert [trace.q for trace in traces] == [[0.62, 0.91, 1.0], [0.6, 1.0], [1.0, 1.0], [Q_IGNORE, 1.0]]
    assert all(trace.positive for trace in traces)
    prompt = [{"role": "user", "content": "Add 3, 4 and 5."}]
    assert [(trace.prompt, trace.steps) for trace in traces[1:]] == [
        (prompt, ["3+4=7", "7+5=12"]),
        (prompt, ["3+4=7", "7+5=12"]),
        (prompt, ["Step 1: 3+4=7", "Step 2: 7+5=12"]),
    ]
