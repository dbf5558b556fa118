"""`alignment.data`: reading, checking, subsampling and mixing sources, on small files written per test."""

import json
import logging
import math

import datasets
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from alignment.data.mixture import load_mixture
from alignment.data.readers import read_rows
from alignment.data.rows import DataError, InvalidRowError, conversation_problem
from alignment.recipes.arguments import DataArguments
from alignment.sft.rows import sft_row_problem


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    """Keep the arrow files `datasets` caches for local files out of the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    }


def write_jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def ids(dataset) -> list[str]:
    return [row["messages"][0]["content"] for row in dataset]


def args(mixer, **kwargs) -> DataArguments:
    return DataArguments(dataset_mixer=mixer, **kwargs)


# Sources and formats


def test_jsonl_json_array_parquet_and_saved_folders_load(tmp_path):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(4)])
    array = tmp_path / "b.json"
    array.write_text(json.dumps([chat(i) for i in range(4, 7)], indent=2))
    parquet = tmp_path / "c.parquet"
    pd.DataFrame([chat(i) for i in range(7, 9)]).to_parquet(parquet)
    saved_dataset = tmp_path / "saved_ds"
    Dataset.from_list([chat(9)]).save_to_disk(str(saved_dataset))
    saved_dict = tmp_path / "saved_dict"
    DatasetDict(
        {"train": Dataset.from_list([chat(10), chat(11)]), "test": Dataset.from_list([chat(12)])}
    ).save_to_disk(str(saved_dict))
    folder = tmp_path / "folder"
    write_jsonl(folder / "train.jsonl", [chat(13)])
    write_jsonl(folder / "data" / "train-00001-of-00002.jsonl", [chat(14)])
    write_jsonl(folder / "test.jsonl", [chat(15)])

    mixer = {jsonl: 1.0, str(array): 1.0, str(parquet): 1.0, str(saved_dataset): 1.0, str(saved_dict): 1.0}
    mixer[str(folder)] = 1.0
    mixture = load_mixture(args(mixer, test_split_size=0.0), validate_row=sft_row_problem)

    assert sorted(ids(mixture["train"])) == sorted(f"question {i}" for i in [*range(12), 13, 14] if i != 12)
    assert sorted(ids(mixture["test"])) == ["question 12", "question 15"]
    assert [source.read for source in mixture.report.sources][-2:] == [
        {"train": 2, "test": 1},
        {"train": 2, "test": 1},
    ]


def test_zephyr_split_names_route_to_train_and_test(tmp_path):
    folder = tmp_path / "chats"
    write_jsonl(folder / "train_sft.jsonl", [chat(i) for i in range(6)])
    write_jsonl(folder / "test_sft.jsonl", [chat(i) for i in range(6, 8)])
    write_jsonl(folder / "train_gen.jsonl", [chat(i) for i in range(8, 20)])

    mixture = load_mixture(args({str(folder): 1.0}, dataset_splits=["train_sft", "test_sft"]))

    assert len(mixture["train"]) == 6 and len(mixture["test"]) == 2


def test_missing_train_split_names_what_the_source_has(tmp_path):
    folder = tmp_path / "chats"
    write_jsonl(folder / "train.jsonl", [chat(0)])
    with pytest.raises(ValueError, match=r"no split 'train_sft' \(it has: train\)"):
        load_mixture(args({str(folder): 1.0}, dataset_splits=["train_sft"]))


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder: .*nope.jsonl"):
        load_mixture(args({str(tmp_path / "nope.jsonl"): 1.0}))


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat(0)) + "\n\n" + json.dumps(chat(1)) + '\n{"messages": [oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 4: invalid JSON") as caught:
        load_mixture(args({str(path): 1.0}))
    assert "oops" in str(caught.value)


def test_malformed_json_array_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"messages": []},\n  {"messages": \n]')
    with pytest.raises(ValueError, match=r"bad\.json line 4 column 1: invalid JSON"):
        load_mixture(args({str(path): 1.0}))


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_is_refused(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"empty\.jsonl is empty"):
        load_mixture(args({str(path): 1.0}))


# Reading rows outside a mixture


@pytest.mark.parametrize("form", ["lines", "array"])
def test_read_rows_round_trips_a_good_file(tmp_path, form):
    rows = [chat(0), {"prompt": "caf\u00e9 \U0001f600", "score": 1.5, "tags": ["a", None]}]
    if form == "lines":
        path = write_jsonl(tmp_path / "rows.jsonl", rows)
    else:
        path = tmp_path / "rows.json"
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    assert read_rows(path) == rows


def test_read_rows_refuses_a_duplicate_key_naming_the_file(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(chat(0)) + '\n{"prompt": "a", "prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"dup\.jsonl line 2: duplicate key 'prompt'"):
        read_rows(path)


def test_read_rows_refuses_a_truncated_file_naming_the_file(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(chat(0)) + "\n" + json.dumps(chat(1))[:-7])
    with pytest.raises(ValueError, match=r"cut\.jsonl line 2: invalid JSON"):
        read_rows(path)
    array = tmp_path / "cut.json"
    array.write_text(json.dumps([chat(0), chat(1)], indent=2)[:-3])
    with pytest.raises(ValueError, match=r"cut\.json line \d+ column \d+: invalid JSON"):
        read_rows(array)


# Fractions and weights


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.25, 1.0, 0.001])
def test_fraction_keeps_rounded_share_of_train_and_whole_test(tmp_path, fraction):
    folder = tmp_path / "chats"
    write_jsonl(folder / "train.jsonl", [chat(i) for i in range(40)])
    write_jsonl(folder / "test.jsonl", [chat(i) for i in range(40, 50)])

    mixture = load_mixture(args({str(folder): fraction}))

    assert len(mixture["train"]) == max(1, math.floor(fraction * 40 + 0.5))
    assert len(mixture["test"]) == 10
    assert mixture.report.sources[0].kept == len(mixture["train"])


def test_same_seed_same_rows_other_seed_other_rows_and_smaller_share_is_subset(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(i) for i in range(100)])

    def train_ids(fraction, seed):
        return ids(load_mixture(args({path: fraction}, seed=seed, test_split_size=0.0))["train"])

    first = train_ids(0.5, seed=1)
    assert first == train_ids(0.5, seed=1)
    assert first != train_ids(0.5, seed=2)
    assert set(train_ids(0.25, seed=1)) <= set(first)
    assert first == sorted(first, key=lambda text: int(text.split()[1])), "kept rows stay in file order"


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "0.5", float("nan"), float("inf"), True, None])
def test_bad_fraction_is_refused_naming_source_value_and_range(tmp_path, bad):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match=r"chats\.jsonl.*is not valid.*a number in \(0, 1\]") as caught:
        load_mixture(args({path: bad}))
    assert repr(bad) in str(caught.value)


def test_bad_list_weight_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match=r"dataset_mixer\[0\] \(.*chats\.jsonl\): 2 is not valid"):
        load_mixture(args([{"path": path, "weight": 2}]))


@pytest.mark.parametrize("size", [1.0, -0.1, "0.1"])
def test_bad_test_split_size_is_refused(tmp_path, size):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match=r"`test_split_size`.*a number in \[0, 1\)"):
        load_mixture(args({path: 1.0}, test_split_size=size))


# Held-out test split


def test_test_split_held_out_when_source_has_none(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(i) for i in range(50)])

    mixture = load_mixture(args({path: 1.0}, test_split_size=0.1, dataset_splits=["train", "test"]))

    assert (len(mixture["train"]), len(mixture["test"])) == (45, 5)
    assert not set(ids(mixture["train"])) & set(ids(mixture["test"]))
    assert mixture.report.sources[0].held_out == 5


def test_held_out_share_is_of_the_kept_rows(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(i) for i in range(100)])
    mixture = load_mixture(args({path: 0.5}, test_split_size=0.2))
    assert (len(mixture["train"]), len(mixture["test"])) == (40, 10)


def test_no_test_rows_gives_empty_test_split(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(i) for i in range(5)])
    mixture = load_mixture(args({path: 1.0}, test_split_size=0.0))
    assert len(mixture["train"]) == 5 and len(mixture["test"]) == 0


def test_list_form_with_a_test_entry_holds_nothing_out(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(10)])
    test = write_jsonl(tmp_path / "eval.jsonl", [chat(i) for i in range(10, 13)])

    mixture = load_mixture(args([{"path": train, "weight": 0.5}, {"path": test, "split": "test"}]))

    assert (len(mixture["train"]), len(mixture["test"])) == (5, 3)


# List form and columns


def test_list_form_selects_columns(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{**chat(i), "id": i} for i in range(4)])
    b = write_jsonl(tmp_path / "b.jsonl", [{**chat(i), "source": "b"} for i in range(4, 6)])

    mixture = load_mixture(
        args([{"path": a, "columns": ["messages"]}, {"path": b, "columns": ["messages"]}], test_split_size=0.0)
    )

    assert mixture["train"].column_names == ["messages"] and len(mixture["train"]) == 6


def test_list_form_unknown_key_names_entry_and_suggestion(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match=r"dataset_mixer\[1\]: unknown key 'colums' \(did you mean 'columns'\?"):
        load_mixture(args([{"path": path}, {"path": path, "colums": ["messages"]}]))


def test_list_form_refuses_zephyr_only_settings(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match="list form give each entry its own `split` and `name`"):
        load_mixture(args([{"path": path}], dataset_splits=["train_sft"]))


def test_split_neither_train_nor_test_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    with pytest.raises(ValueError, match="split 'validation' is neither a train nor a test split"):
        load_mixture(args([{"path": path, "split": "validation"}]))


def test_column_mismatch_lists_each_source(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(0)])
    b = write_jsonl(tmp_path / "b.jsonl", [{**chat(1), "id": 1}])
    with pytest.raises(ValueError, match="different columns") as caught:
        load_mixture(args({a: 1.0, b: 1.0}))
    assert "a.jsonl (train): messages\n" in str(caught.value)
    assert "b.jsonl (train): messages, id" in str(caught.value)


def test_column_type_mismatch_names_the_column(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{**chat(0), "score": 1}])
    b = write_jsonl(tmp_path / "b.jsonl", [{**chat(1), "score": "high"}])
    with pytest.raises(ValueError, match=r"different column types.*\n  score: .*a\.jsonl has .*int64"):
        load_mixture(args({a: 1.0, b: 1.0}, test_split_size=0.0))


@pytest.mark.parametrize(
    "mixer",
    [
        [{"path": "PATH", "weight": 2}],
        [{"path": "PATH", "splitt": "train"}],
        [{"path": "PATH", "format": "alpaca"}],
        [{"path": "PATH", "split": "validation"}],
        [{"path": "PATH", "columns": "messages"}],
        [{"path": "PATH", "columns": ["prompt"]}],
        {"PATH": 0},
    ],
)
def test_user_caused_mixture_errors_are_data_errors(tmp_path, mixer):
    """`alignment.runtime.cli` prints a `DataError` as one message with exit 2; a bare `ValueError` would be a bug's
    crash."""
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0)])
    mixer = json.loads(json.dumps(mixer).replace("PATH", path))
    with pytest.raises(DataError):
        load_mixture(args(mixer))


def test_missing_required_column_names_source_and_what_it_has(tmp_path):
    # A stage with rows of its own that needs a `response` column; an SFT, preference or prompt source that matches
    # none of the stage's formats is refused naming those (tests/unit/data/test_formats.py).
    path = write_jsonl(tmp_path / "chats.jsonl", [{"question": "p", "completion": "c"}])
    with pytest.raises(
        DataError, match=r"chats\.jsonl.*missing required column 'response' \(it has: question, completion"
    ):
        load_mixture(args({path: 1.0}), required_columns=["response"])


# Row validation


def _bad(kind: str) -> dict:
    user, assistant = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    return {
        "messages not a list": {"messages": "hello"},
        "no messages": {"messages": []},
        "malformed message": {"messages": [user, ["assistant", "a"]]},
        "unknown role": {"messages": [user, {"role": "bot", "content": "a"}]},
        "non-string content": {"messages": [user, {"role": "assistant", "content": None}]},
        "empty content": {"messages": [user, {"role": "assistant", "content": "  "}]},
        "roles out of order": {"messages": [{"role": "system", "content": "s"}, assistant, user]},
        "no assistant turn": {"messages": [user]},
    }[kind]


BAD_KINDS = [
    "messages not a list",
    "no messages",
    "malformed message",
    "unknown role",
    "non-string content",
    "empty content",
    "roles out of order",
    "no assistant turn",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_conversation_problem_kinds(kind):
    problem = conversation_problem(_bad(kind)["messages"])
    assert problem is not None and problem.kind == kind


def test_conversation_problem_messages_are_specific():
    assert conversation_problem(_bad("unknown role")["messages"]) == (
        "unknown role 'bot' at message 1 (valid: system, user, assistant, tool)"
    )
    assert "message 1 is 'assistant', expected 'user'" in conversation_problem(_bad("roles out of order")["messages"])
    user_first = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]
    assert "message 0 is 'assistant', expected 'user'" in conversation_problem(user_first)


def test_good_conversations_pass():
    system = {"role": "system", "content": "be brief"}
    assert conversation_problem([system, *chat(0)["messages"], *chat(1)["messages"]]) is None
    assert conversation_problem([*chat(0)["messages"], {"role": "user", "content": "thanks"}]) is None
    assert sft_row_problem({"prompt": "x"}).kind == "no messages column"


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_row_kind_is_refused_with_its_row_index(tmp_path, kind):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(0), chat(1), _bad(kind), chat(3)])
    with pytest.raises(InvalidRowError, match=r"chats\.jsonl \(split 'train'\) row 2: ") as caught:
        load_mixture(args({path: 1.0}), validate_row=sft_row_problem)
    assert (caught.value.row, caught.value.split, caught.value.reason.kind) == (2, "train", kind)


def test_skip_invalid_rows_counts_each_kind(tmp_path, caplog):
    folder = tmp_path / "chats"
    train = [chat(0), _bad("unknown role"), chat(2), _bad("no assistant turn"), _bad("unknown role"), chat(5)]
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", [chat(6), _bad("empty content")])

    with caplog.at_level(logging.INFO, logger="alignment.data"):
        mixture = load_mixture(args({str(folder): 1.0}, skip_invalid_rows=True), validate_row=sft_row_problem)

    assert ids(mixture["train"]) == ["question 0", "question 2", "question 5"]
    assert ids(mixture["test"]) == ["question 6"]
    report = mixture.report.sources[0]
    assert report.invalid == {"unknown role": 2, "no assistant turn": 1, "empty content": 1}
    assert report.read == {"train": 6, "test": 2} and (report.train, report.test) == (3, 1)
    assert mixture.report.invalid == report.invalid
    assert "dropped 4 invalid (unknown role: 2, no assistant turn: 1, empty content: 1)" in caplog.text
    assert "first 'unknown role' row 1 (split 'train'): unknown role 'bot' at message 1" in caplog.text


def test_validation_happens_before_subsampling(tmp_path):
    rows = [chat(i) for i in range(20)]
    rows[17] = _bad("no assistant turn")
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    with pytest.raises(InvalidRowError, match="row 17: no assistant message"):
        load_mixture(args({path: 0.1}), validate_row=sft_row_problem)
