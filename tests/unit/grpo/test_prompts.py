"""GRPO's prompts: the prompt turns of every chat, preference and prompt-only format, exact message by message; a
prompt-only row's other columns kept for the rules that name them; prompts the policy cannot answer refused by row."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from alignment.data.mixture import load_mixture
from alignment.data.rows import DataError, InvalidRowError
from alignment.grpo.prompts import prompt_row_problem
from alignment.grpo.reward_functions import rule_reward
from alignment.grpo.rewards import RewardSpec
from alignment.grpo.verifiers import final_number_matches
from alignment.recipes.arguments import DataArguments
from alignment.recipes.parser import RecipeError
from alignment.runtime.rules import check_rule

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "llamafactory"


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def prompts(tmp_path: Path, rows: list[dict], **entry) -> list[dict]:
    path = tmp_path / f"rows{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    mixer = [{"path": str(path), "weight": 1.0, **entry}] if entry else {str(path): 1.0}
    data_args = DataArguments(dataset_mixer=mixer, test_split_size=0.0)
    return list(load_mixture(data_args, validate_row=prompt_row_problem, required_columns=["prompt"])["train"])


CHAT = [user("Hi"), assistant("Hello!"), user("Add 2 and 3."), assistant("5")]


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"messages": CHAT}, [{"prompt": CHAT[:3]}]),  # the chat's last reply dropped
        ({"messages": CHAT[:3]}, [{"prompt": CHAT[:3]}]),  # a chat that ends with the user's turn is the prompt
        (
            {"conversations": [{"from": "human", "value": "Add 2 and 3."}, {"from": "gpt", "value": "5"}]},
            [{"prompt": [user("Add 2 and 3.")]}],
        ),
        (
            {"instruction": "Add these.", "input": "2 and 3", "output": "5", "history": [["Hi", "Hello!"]]},
            [{"prompt": [user("Hi"), assistant("Hello!"), user("Add these.\n2 and 3")]}],
        ),
        ({"prompt": CHAT[:3], "completion": [assistant("5")]}, [{"prompt": CHAT[:3]}]),  # earlier replies kept
        ({"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "6"}, [{"prompt": [user("Add 2 and 3.")]}]),
        ({"chosen": CHAT, "rejected": [*CHAT[:3], assistant("6")]}, [{"prompt": CHAT[:3]}]),  # UltraFeedback
        (
            {
                "conversations": [{"from": "human", "value": "Add 2 and 3."}],
                "chosen": {"from": "gpt", "value": "5"},
                "rejected": {"from": "gpt", "value": "6"},
            },
            [{"prompt": [user("Add 2 and 3.")]}],
        ),
        ({"prompt": "Add 2 and 3.", "answer": "5"}, [{"prompt": [user("Add 2 and 3.")], "answer": "5"}]),
    ],
    ids=[
        "messages",
        "messages_prompt_only",
        "sharegpt",
        "alpaca",
        "prompt_completion",
        "preference_strings",
        "preference_whole_chats",
        "sharegpt_preference",
        "prompt_only",
    ],
)
def test_every_format_gives_its_prompt_turns(tmp_path, row, expected):
    assert prompts(tmp_path, [row]) == expected


def test_llamafactory_demo_files_give_their_prompts(tmp_path):
    alpaca = json.loads((FIXTURES / "alpaca_en_demo.json").read_text())
    pairs = json.loads((FIXTURES / "dpo_en_demo.json").read_text())
    loaded = load_mixture(
        DataArguments(dataset_mixer={str(FIXTURES / "dpo_en_demo.json"): 1.0}, test_split_size=0.0),
        validate_row=prompt_row_problem,
        required_columns=["prompt"],
    )["train"]
    assert [row["prompt"][-1]["content"] for row in loaded] == [row["conversations"][-1]["value"] for row in pairs]
    loaded = load_mixture(
        DataArguments(dataset_mixer={str(FIXTURES / "alpaca_en_demo.json"): 1.0}, test_split_size=0.0),
        validate_row=prompt_row_problem,
        required_columns=["prompt"],
    )["train"]
    expected = ["\n".join(text for text in (row["instruction"], row["input"]) if text) for row in alpaca]
    assert [row["prompt"][-1]["content"] for row in loaded] == expected


def test_a_mapped_question_column_is_the_prompt_and_the_answer_is_kept(tmp_path):
    rows = [{"question": "Add 2 and 3.", "answer": "#### 5"}]
    loaded = prompts(tmp_path, rows, format="prompt", columns_map={"prompt": "question"})
    assert loaded == [{"prompt": [user("Add 2 and 3.")], "answer": "#### 5"}]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"messages": [assistant("5")]}, "prompt is list [], expected a non-empty list of messages"),
        ({"prompt": [user("Hi"), assistant("Hello!")]}, "the prompt's last message is 'assistant'"),
        ({"prompt": [{"role": "system", "content": "Be brief."}]}, "the prompt's last message is 'system'"),
        ({"prompt": [assistant("Hello!"), user("Hi")]}, "message 0 is 'assistant', expected 'user'"),
        ({"prompt": 5}, "prompt is int 5, expected a string or a list of messages"),
    ],
    ids=["reply_only", "ends_with_reply", "system_only", "out_of_order", "not_text"],
)
def test_a_prompt_the_policy_cannot_answer_is_refused_by_row(tmp_path, row, message):
    with pytest.raises(InvalidRowError, match="row 0") as error:
        prompts(tmp_path, [row])
    assert message in str(error.value)


def test_sources_with_other_columns_cannot_be_mixed(tmp_path):
    with pytest.raises(DataError, match="Sources have different columns"):
        a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        a.write_text(json.dumps({"prompt": "Add 2 and 3.", "answer": "5"}) + "\n")
        b.write_text(json.dumps({"messages": CHAT}) + "\n")
        data_args = DataArguments(dataset_mixer={str(a): 1.0, str(b): 1.0}, test_split_size=0.0)
        load_mixture(data_args, validate_row=prompt_row_problem, required_columns=["prompt"])


def answer_matches(prompt, reply, answer):
    return reply.strip() == answer


def test_a_rule_reads_the_columns_it_names(monkeypatch):
    monkeypatch.setattr("alignment.grpo.reward_functions.load_rule", lambda path, key: answer_matches)
    reward = rule_reward(RewardSpec("rule", "tests:answer_matches"), tokenizer=None)
    completions = [[assistant("5")], [assistant("6")], [assistant("7")]]
    kwargs = {"answer": ["5", "5", "7"], "trainer_state": None}  # as TRL passes the rows' columns, one per completion
    assert reward([[user("Add 2 and 3.")]] * 3, completions, **kwargs) == [1.0, 0.0, 1.0]
    check_rule(answer_matches, "tests:answer_matches", "rewards.rule", [user("Add 2 and 3.")], {"answer": "5"})
    with pytest.raises(RecipeError, match=r"the prompt rows have: id\): missing a required argument: 'answer'"):
        check_rule(answer_matches, "tests:answer_matches", "rewards.rule", [user("Add 2 and 3.")], {"id": 1})


@pytest.mark.parametrize(
    "reply, answer, expected",
    [
        ("She pays 3 * 24 = 72 dollars. The answer is 72.", "Natalia sold 48/2 = 24 clips.\n#### 72", True),
        ("So the total is $1,250.", "#### 1250", True),
        ("Half of it: 0.50", "#### 0.5", True),  # numbers compare exactly, not as text
        ("The answer is 72, not 27.", "#### 72", False),  # the last number counts
        ("I cannot tell.", "#### 72", False),
        ("-3", "#### -3", True),
    ],
)
def test_final_number_matches_gsm8k_references(reply, answer, expected):
    assert final_number_matches([user("question")], reply, answer) is expected
