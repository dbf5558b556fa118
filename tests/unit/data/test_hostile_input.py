"""Hostile input, property-based (hypothesis): the file loaders and the SFT loss mask under odd bytes and odd text.

Loaders (`alignment.data.load_mixture` over one local file, and `alignment.data.read_rows`, its strict parse alone):
rows with any text in them (emoji, CJK, right-to-left, zero-width and control characters), written as JSON Lines or
as one JSON array (or one object), with or without a UTF-8 byte-order mark, LF or CRLF line ends, blank lines,
non-ASCII raw or escaped, come back exactly as written. Invalid JSON, bytes that are not UTF-8 and empty files fail
with one exact message naming the file and the line (and, for bad bytes, the column and byte offset), never with a
traceback from inside `datasets` or pyarrow; `read_rows` fails with the same message as `load_mixture`.

Token ids (`alignment.chat.turns.encode_chat`, `alignment.sft.tokenize_chats`), under every shipped template: every
example passes the token invariant (`tests/support/invariant.py`: the ids before each trained run are the inference
prompt ids of one turn, the run is that turn's reply ids, each turn trained once), and the trained runs decode, for the
byte-level BPE tokenizer used here (every string round-trips), to each answer as written in the data, character for
character, then its end-of-turn token. An answer starting with two newlines merges with the generation prompt's
"\\n": its reply is tokenized after the inference prompt, and the chat becomes one example per turn context. A
tokenizer that normalises text (NFKC here: "ﬁ" -> "fi") normalises at inference too: the trained ids are the
normalised reply, and a chat it leaves as it is gets exactly the ids of the same tokenizer without the normaliser.
"""

from __future__ import annotations

import codecs
import copy
import json
import tempfile
import unicodedata
from functools import cache
from pathlib import Path

import datasets
import pandas as pd
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenizers import normalizers

from alignment.chat.templates import list_chat_templates, load_chat_template, set_chat_template
from alignment.chat.turns import IGNORE_INDEX, encode_chat
from alignment.data.mixture import load_mixture
from alignment.data.readers import read_rows
from alignment.data.rows import DataError, InvalidRowError
from alignment.recipes.arguments import DataArguments
from alignment.sft.rows import TOKENIZED_FEATURES, TruncationReport, sft_row_problem, tokenize_chats
from tests.support.invariant import check_invariant
from tests.support.template_tokenizer import build_tokenizer

# Function-scoped fixtures (tmp_path, the cache below) are shared by a test's examples: each example writes its own
# folder, so sharing is safe.
FILE_CASES = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}

# Text that breaks naive readers and tokenizers: emoji (a ZWJ family, a flag), CJK, right-to-left (with a direction
# override), zero-width characters, the byte-order mark as a character, control characters, Unicode line separators,
# NFKC-unstable text (ligature, full-width letter, non-breaking space, combining accent), JSON syntax, template tokens.
HOSTILE = [
    "😀",
    "👨‍👩‍👧‍👦",
    "🇯🇵",
    "日本語の文",
    "中文",
    "한국어",
    "مرحبا بالعالم",
    "שלום",
    "\u202eevil\u202c",
    "\u200f",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\x00",
    "\x01",
    "\x07",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\r",
    "\t",
    "\n",
    "\r\n",
    " ",
    "ﬁ",
    "Ａ",
    "\xa0",
    "\u3000",
    "e\u0301",
    '"',
    "\\",
    "{[",
    "<|im_end|>",
    "<|im_start|>assistant\n",
    "</s>",
    "<|assistant|>\n",
]
# What each shipped template has the model generate for an answer: the answer as written, then the end-of-turn
# token (Llama-2 trims the answer and writes " answer </s>"; Mistral-instruct and Vicuna open it with a space).
ANSWER = {
    "chatml": lambda content: content + "<|im_end|>",
    "llama2": lambda content: " " + content.strip() + " </s>",
    "mistral_instruct": lambda content: " " + content + "</s>",
    "vicuna": lambda content: " " + content + "</s>",
    "zephyr": lambda content: content + "</s>",
}

pieces = st.sampled_from(HOSTILE) | st.text(st.characters(codec="utf-8"), max_size=6)
visible = st.sampled_from([piece for piece in HOSTILE if piece.strip()]) | st.text(
    st.characters(codec="utf-8"), min_size=1, max_size=6
).filter(str.strip)
# Any pieces around at least one visible one (the row validator refuses blank contents), often after whitespace as
# real answers have it: one starting with "\n\n" merges with the generation prompt's "\n" into one token.
contents = st.tuples(
    st.sampled_from(["", "", "", " ", "\n", "\n\n"]),
    st.lists(pieces, max_size=2),
    visible,
    st.lists(pieces, max_size=2),
).map(lambda parts: parts[0] + "".join(parts[1]) + parts[2] + "".join(parts[3]))


@st.composite
def conversations(draw) -> list[dict]:
    """A valid chat: an optional system message, 1-3 user/assistant pairs, optionally a last user message."""
    messages = [{"role": "system", "content": draw(contents)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(contents)}, {"role": "assistant", "content": draw(contents)}]
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(contents)})
    return messages


rows = st.lists(conversations().map(lambda messages: {"messages": messages}), min_size=1, max_size=4)


@st.composite
def json_lines(draw) -> tuple[list[bytes], list[dict]]:
    """JSON Lines as a list of raw lines (line ends included): blank lines, LF or CRLF, non-ASCII raw or escaped."""
    written = draw(rows)
    ascii_only, end = draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n"]))
    lines = []
    for row in written:
        lines += [blank + end for blank in draw(st.lists(st.sampled_from(["", " ", "\t"]), max_size=2))]
        lines.append(json.dumps(row, ensure_ascii=ascii_only) + end)
    if draw(st.booleans()):
        lines[-1] = lines[-1].rstrip("\r\n")  # no line end after the last line
    return [line.encode("utf-8") for line in lines], written


@st.composite
def json_documents(draw) -> tuple[str, list[dict]]:
    """One JSON array of rows (compact or indented, whitespace before it and before its first row), or one indented
    object (on one line it would be JSON Lines)."""
    written = draw(rows)
    ascii_only, indent = draw(st.booleans()), draw(st.sampled_from([None, 0, 2, 4]))
    if len(written) == 1 and draw(st.booleans()):
        text = json.dumps(written[0], ensure_ascii=ascii_only, indent=indent or 2)
    else:
        text = json.dumps(written, ensure_ascii=ascii_only, indent=indent)
        text = "[" + draw(st.sampled_from(["", "\n", " " * 120])) + text[1:]  # `datasets` guessed wrong past byte 100
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return draw(st.sampled_from(["", "\n", "  "])) + text, written


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    """Keep the arrow files `datasets` caches for local files out of the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """`data` as `name` in a new folder of its own (hypothesis examples share `tmp_path`)."""
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / name
    path.write_bytes(data)
    return path


def load(path: Path) -> list[dict]:
    """The train rows `load_mixture` reads from one file (all of them, in file order, checked as SFT chats)."""
    data_args = DataArguments(dataset_mixer={str(path): 1.0}, test_split_size=0.0)
    return load_mixture(data_args, validate_row=sft_row_problem)["train"].to_list()


def load_error(path: Path) -> str:
    with pytest.raises(ValueError) as caught:
        load(path)
    assert type(caught.value) is DataError, "a DataError with a message, not an error from inside a library"
    return str(caught.value)


# ---- loaders: any text comes back exactly ---------------------------------------------------------------------------


@settings(max_examples=60, **FILE_CASES)
@given(
    file=json_lines().map(lambda f: (b"".join(f[0]), f[1])) | json_documents().map(lambda f: (f[0].encode(), f[1])),
    bom=st.booleans(),
    suffix=st.sampled_from([".jsonl", ".json"]),
)
def test_any_text_in_json_lines_or_array_comes_back_exactly(tmp_path, file, bom, suffix):
    data, written = file
    assert load(write(tmp_path, "chats" + suffix, codecs.BOM_UTF8 * bom + data)) == written


@settings(max_examples=10, **FILE_CASES)
@given(written=rows)
def test_any_text_in_parquet_comes_back_exactly(tmp_path, written):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "chats.parquet"
    pd.DataFrame(written).to_parquet(path)
    assert load(path) == written


# ---- loaders: bad input, one exact message --------------------------------------------------------------------------


@settings(max_examples=40, **FILE_CASES)
@given(file=json_lines(), bom=st.booleans(), data=st.data())
def test_invalid_json_names_file_line_and_column(tmp_path, file, bom, data):
    """One row's line is cut short (at a character, after "{" and more: a lone "{" opens a multi-line object): the
    message names that line, counting blank lines."""
    lines, _ = file
    number = data.draw(st.sampled_from([n for n, line in enumerate(lines, start=1) if line.strip()]))
    text = lines[number - 1].decode()
    body = text.rstrip("\r\n")
    cut = body[: data.draw(st.integers(2, len(body) - 1))]
    lines[number - 1] = (cut + text[len(body) :]).encode()
    path = write(tmp_path, "chats.jsonl", codecs.BOM_UTF8 * bom + b"".join(lines))
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(cut)
    reason = f"{expected.value.msg.removesuffix(' at')} at column {expected.value.colno}"
    assert load_error(path).startswith(f"{path} line {number}: invalid JSON ({reason}): ")


@settings(max_examples=30, **FILE_CASES)
@given(file=json_documents(), bom=st.booleans(), data=st.data())
def test_invalid_json_array_names_file_line_and_column(tmp_path, file, bom, data):
    """A whole-document file cut short anywhere after its opening bracket: line and column in the whole file, and
    for an array, where it is cut off: inside which element (from which byte), or after which one."""
    text, _ = file
    cut = data.draw(st.integers(len(text) - len(text.lstrip()) + 1, len(text) - 1))
    path = write(tmp_path, "chats.json", codecs.BOM_UTF8 * bom + text[:cut].encode())
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text[:cut])
    err, reason = expected.value, expected.value.msg.removesuffix(" at")
    message = f"{path} line {err.lineno} column {err.colno}: invalid JSON ({reason})"
    if not text.lstrip().startswith("["):
        assert load_error(path) == message + "."
        return
    spans = array_element_spans(text)
    complete = sum(end <= cut for _, end in spans)
    inside = [start for start, end in spans if start < cut < end]
    if inside:
        offset = len(codecs.BOM_UTF8) * bom + len(text[: inside[0]].encode())
        where = f"inside array element {complete}, which starts at byte offset {offset}"
    else:
        where = f'after array element {complete - 1}, before the array\'s closing "]"' if complete else 'after its "["'
    hint = f" Set `skip_invalid_rows: true` to read the {complete} elements before it." if complete else ""
    assert load_error(path) == f"{message}: the file is cut off {where}.{hint}"


def array_element_spans(text: str) -> list[tuple[int, int]]:
    """Where each element of the valid JSON array `text` starts and ends (character indices)."""
    decoder, spans, pos = json.JSONDecoder(), [], text.index("[") + 1
    while True:
        pos += len(text[pos:]) - len(text[pos:].lstrip(" \t\r\n"))
        if text[pos] == "]":
            return spans
        _, end = decoder.raw_decode(text, pos)
        spans.append((pos, end))
        pos = end + len(text[end:]) - len(text[end:].lstrip(" \t\r\n"))
        pos += text[pos] == ","


@settings(max_examples=40, **FILE_CASES)
@given(
    file=json_lines(),
    bom=st.booleans(),
    bad=st.sampled_from([0x80, 0xA9, 0xBF, 0xC0, 0xC1, 0xC3, 0xE9, 0xF5, 0xFF]),  # Latin-1 "é" is 0xE9
    data=st.data(),
)
def test_bytes_not_utf8_name_file_line_column_and_byte_offset(tmp_path, file, bom, bad, data):
    """One byte that cannot start a UTF-8 character, put between two characters of any line (blank ones too)."""
    lines, _ = file
    number = data.draw(st.integers(1, len(lines)))
    text = lines[number - 1].decode()
    column = data.draw(st.integers(0, len(text.rstrip("\n"))))
    before = text[:column].encode()
    lines[number - 1] = before + bytes([bad]) + lines[number - 1][len(before) :]
    path = write(tmp_path, "chats.jsonl", codecs.BOM_UTF8 * bom + b"".join(lines))
    offset = len(codecs.BOM_UTF8) * bom + sum(map(len, lines[: number - 1])) + len(before)
    assert load_error(path) == (
        f"{path} line {number} column {column + 1}: not UTF-8 text (byte 0x{bad:02x} at byte offset {offset}): "
        "save it as UTF-8."
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "is empty: no rows to read."),
        (b"\n\n", "is empty: no rows to read."),
        (b" \t\r\n \r\n", "is empty: no rows to read."),
        (codecs.BOM_UTF8, "is empty: no rows to read."),
        (codecs.BOM_UTF8 + b"\r\n", "is empty: no rows to read."),
        (b"[]", "is empty: its JSON array has no rows."),
        (codecs.BOM_UTF8 + b"\n[\n]\n", "is empty: its JSON array has no rows."),
        (b"{}\n{}\n", "has no columns: every row is an empty object {}."),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_empty_file_names_the_file(tmp_path, data, reason, suffix):
    path = write(tmp_path, "empty" + suffix, data)
    assert load_error(path) == f"{path} {reason}"


def test_array_not_utf8_names_line_and_offset(tmp_path):
    path = write(tmp_path, "chats.json", b'[\n  {"messages": []},\n  {"messages": "caf\xe9"}\n]')
    assert load_error(path) == (
        f"{path} line 3 column 20: not UTF-8 text (byte 0xe9 at byte offset 41): save it as UTF-8."
    )


def test_utf16_file_is_named_as_such(tmp_path):
    path = write(tmp_path, "chats.jsonl", json.dumps({"messages": []}).encode("utf-16"))
    assert load_error(path) == (
        f"{path} line 1 column 1: not UTF-8 text (byte 0xff at byte offset 0); it starts with a UTF-16 byte-order "
        "mark: save it as UTF-8."
    )


def test_bad_shard_is_named(tmp_path):
    folder = tmp_path / "chats"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00002.jsonl").write_text(json.dumps({"messages": []}) + "\n")
    shard = folder / "data" / "train-00001-of-00002.jsonl"
    shard.write_bytes(b'{"messages": "\xff"}\n')
    assert load_error(folder) == (
        f"{shard} line 1 column 15: not UTF-8 text (byte 0xff at byte offset 14): save it as UTF-8."
    )


# Inputs `datasets`' JSON reader misread before the strict parse (pyarrow refused them and a pandas fallback turned a
# one-line file into one row per message, or an array into a column of strings); each is now refused by name or read.


def test_raw_control_character_is_named_and_shown_escaped(tmp_path):
    path = write(tmp_path, "chats.jsonl", '{"messages": "a\x01b\u202e"}\n'.encode())
    assert load_error(path) == (
        f"{path} line 1: invalid JSON (unescaped control character U+0001 in a string at column 16): "
        '{"messages": "a\\x01b\\u202e"}'
    )


def test_duplicate_key_is_refused(tmp_path):
    chat = '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'
    path = write(tmp_path, "chats.jsonl", f'{{"messages": {chat}, "messages": {chat}}}\n'.encode())
    assert load_error(path) == f"{path} line 1: duplicate key 'messages' in one object."


def test_lone_surrogate_escape_is_refused(tmp_path):
    pair, lone = json.dumps({"messages": "😀"}), json.dumps({"messages": "\ud83d"})
    path = write(tmp_path, "chats.jsonl", f"{pair}\n{lone}\n".encode())
    assert load_error(path) == (
        f"{path} line 2: a string holds \\ud83d, half of a UTF-16 surrogate pair without its other half (not text)."
    )
    path = write(tmp_path, "chats.json", f"[{pair}, {lone}]".encode())
    assert load_error(path) == (
        f"{path}: array element 1: a string holds \\ud83d, half of a UTF-16 surrogate pair without its other half "
        "(not text)."
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "maximum recursion depth exceeded"),
        ("9" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
    ],
)
def test_json_python_cannot_hold_is_named(tmp_path, value, reason):
    path = write(tmp_path, "chats.jsonl", f'{{"messages": [], "extra": {value}}}\n'.encode())
    assert load_error(path).startswith(f"{path} line 1: {reason}")


def test_array_of_objects_starting_past_byte_100_is_read_as_rows(tmp_path):
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write(tmp_path, "chats.json", ("[" + " " * 150 + json.dumps(chat) + "]").encode())
    assert load(path) == [chat]


def test_line_separator_inside_a_string_is_not_a_line_end(tmp_path):
    """U+2028 and U+0085 are text inside a string: the bad line is still counted as line 2."""
    chat = {"messages": [{"role": "user", "content": "a\u2028b\x85c"}, {"role": "assistant", "content": "d"}]}
    path = write(tmp_path, "chats.jsonl", (json.dumps(chat, ensure_ascii=False) + '\n{"messages": [oops\n').encode())
    assert load_error(path) == f'{path} line 2: invalid JSON (Expecting value at column 15): {{"messages": [oops'


def test_rows_datasets_misreads_are_refused(tmp_path, monkeypatch):
    """Whatever `datasets` returns must be the rows the strict parse found, or reading fails."""
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write(tmp_path, "chats.jsonl", (json.dumps(chat) + "\n").encode())
    misread = Dataset.from_list([{"text": "q"}, {"text": "a"}])
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: misread)
    assert load_error(path) == (
        f"Could not read {path}: it holds 1 rows with columns messages, but the `datasets` JSON reader returned 2 "
        "rows with columns text."
    )


def test_corrupt_parquet_is_named(tmp_path):
    path = write(tmp_path, "chats.parquet", b"PAR1 not really")
    assert load_error(path).startswith(f"Could not read {path}: ")


# ---- read_rows: the same strict parse, the rows as dicts ------------------------------------------------------------


@settings(max_examples=30, **FILE_CASES)
@given(
    file=json_lines().map(lambda f: (b"".join(f[0]), f[1])) | json_documents().map(lambda f: (f[0].encode(), f[1])),
    bom=st.booleans(),
    suffix=st.sampled_from([".jsonl", ".json"]),
)
def test_read_rows_gives_any_text_back_exactly(tmp_path, file, bom, suffix):
    data, written = file
    assert read_rows(write(tmp_path, "chats" + suffix, codecs.BOM_UTF8 * bom + data)) == written


CHAT = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("chats.jsonl", f'{CHAT}\n{{"messages": [], "messages": []}}\n'.encode()),
        ("chats.jsonl", f'{CHAT}\n{{"messages": "\\ud83d"}}\n'.encode()),
        ("chats.json", f'[{CHAT}, {{"messages": "\\ud83d"}}]'.encode()),
        ("chats.jsonl", f"{CHAT}\n[1, 2]\n".encode()),
        ("chats.json", f"[{CHAT}, 3]".encode()),
        ("chats.jsonl", f"{CHAT}\n{CHAT[:-9]}".encode()),
        ("chats.json", f"[\n  {CHAT},\n  {CHAT[:-9]}".encode()),
        ("chats.jsonl", f"{CHAT}\n".encode() + b'{"messages": "caf\xe9"}\n'),
        ("chats.jsonl", b""),
        ("chats.json", b"\n  \n"),
    ],
    ids=[
        "duplicate key",
        "lone surrogate",
        "lone surrogate in array",
        "not an object",
        "array element not an object",
        "truncated line",
        "truncated array",
        "not utf-8",
        "empty",
        "blank",
    ],
)
def test_read_rows_refuses_what_load_mixture_refuses_with_the_same_message(tmp_path, name, data):
    path = write(tmp_path, name, data)
    with pytest.raises(ValueError) as caught:
        read_rows(path)
    assert type(caught.value) is DataError
    assert str(caught.value) == load_error(path)


# ---- the loss mask: exactly each answer and its end-of-turn token ---------------------------------------------------


@cache
def tokenizer(name: str):
    """A byte-level BPE tokenizer (every string round-trips) with the shipped template `name` and its tokens."""
    tok = build_tokenizer(load_chat_template(name), corpus=HOSTILE * 3)
    set_chat_template(tok, name)
    return tok


@cache
def normalising_tokenizer():
    """`tokenizer("chatml")` with an NFKC normaliser: the same vocabulary, but "ﬁ" reads as "fi"."""
    tok = copy.deepcopy(tokenizer("chatml"))
    tok.backend_tokenizer.normalizer = normalizers.NFKC()
    return tok


def decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def trained_runs(tok, encoded: dict) -> list[str]:
    """Each run of consecutive trained tokens (labels that are not `IGNORE_INDEX`), decoded."""
    runs, run = [], []
    for label in encoded["labels"]:
        if label != IGNORE_INDEX:
            run.append(label)
        elif run:
            runs.append(run)
            run = []
    return [decode(tok, run) for run in [*runs, run] if run]


def test_every_shipped_template_is_covered():
    assert sorted(ANSWER) == list_chat_templates()


def trained_answers(tok, encoding) -> list[str]:
    """The decoded trained runs of all a chat's examples, sorted (an expanded chat spreads its turns over examples)."""
    return sorted(run for example in encoding.examples for run in trained_runs(tok, example))


@pytest.mark.parametrize("name", sorted(ANSWER))
@settings(max_examples=100, deadline=None)
@given(messages=conversations())
def test_trained_tokens_decode_to_each_answer_and_its_end_of_turn(name, messages):
    tok = tokenizer(name)
    encoding = encode_chat(tok, messages)
    event(f"{encoding.layout}: {len(encoding.examples)} examples")
    check_invariant(tok, messages, encoding)
    answers = [ANSWER[name](message["content"]) for message in messages if message["role"] == "assistant"]
    assert trained_answers(tok, encoding) == sorted(answers)


@settings(max_examples=60, deadline=None)
@given(messages=conversations())
def test_normalising_tokenizer_trains_the_reply_as_inference_tokenizes_it(messages):
    """NFKC reads "ﬁ" as "fi" at inference too, so the trained ids are the normalised reply; a chat NFKC leaves as it
    is gets exactly the ids and labels of the same tokenizer without the normaliser."""
    plain, nfkc = tokenizer("chatml"), normalising_tokenizer()
    full = plain.apply_chat_template(messages, tokenize=False)
    changed = unicodedata.normalize("NFKC", full) != full
    event("NFKC changes the chat" if changed else "NFKC leaves the chat as it is")
    encoding = encode_chat(nfkc, messages)
    check_invariant(nfkc, messages, encoding)
    answers = [message["content"] + "<|im_end|>" for message in messages if message["role"] == "assistant"]
    assert trained_answers(nfkc, encoding) == sorted(unicodedata.normalize("NFKC", answer) for answer in answers)
    if not changed:
        assert encoding == encode_chat(plain, messages)


# ---- truncation: counted, and no example left without a trained token -----------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    chats=st.lists(conversations(), min_size=1, max_size=4),
    max_length=st.none() | st.integers(1, 120),
    train_on_prompt=st.booleans(),
)
def test_truncation_is_counted_and_no_example_is_left_without_a_trained_token(chats, max_length, train_on_prompt):
    tok = tokenizer("chatml")
    dataset = Dataset.from_list([{"messages": messages} for messages in chats])
    encodings = [encode_chat(tok, messages, train_on_prompt=train_on_prompt) for messages in chats]
    full = [example for encoding in encodings for example in encoding.examples]
    cut = [{key: values[:max_length] for key, values in encoded.items()} for encoded in full]
    kept = [encoded for encoded in cut if any(label != IGNORE_INDEX for label in encoded["labels"])]
    event("an example lost every trained token" if len(kept) < len(full) else "every example kept")

    tokenized, report = tokenize_chats(dataset, tok, max_length=max_length, train_on_prompt=train_on_prompt)

    assert tokenized.to_list() == kept
    truncated = sum(max_length is not None and len(encoded["input_ids"]) > max_length for encoded in full)
    expanded = sum(encoding.layout == "expanded" for encoding in encodings)
    assert report == TruncationReport(len(full), truncated, len(full) - len(kept), expanded_rows=expanded)
    assert tokenized.features == TOKENIZED_FEATURES


def test_empty_split_tokenizes_to_an_empty_split():
    """A mixture with no test rows gives an empty "test" split; tokenizing it used to fail on a missing column."""
    empty = Dataset.from_list([{"messages": [{"role": "user", "content": "q"}]}]).select([])
    tokenized, report = tokenize_chats(empty, tokenizer("chatml"), max_length=8, split_name="test")
    assert (len(tokenized), tokenized.features, report) == (0, TOKENIZED_FEATURES, TruncationReport(0, 0, 0))


def test_chat_without_an_exact_mask_is_named_by_source_split_row_and_turn():
    """An answer starting with two newlines merges with the generation prompt's "\\n" (one token): the reply is
    tokenized after the inference prompt, and a later prompt re-tokenizes it, so one sequence cannot hold the chat.
    With `history_rewrite: refuse` that row is an error naming the source, split, row and turn; with
    `skip_invalid_rows` it is dropped and counted by reason."""
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    merged = [*good[:1], {"role": "assistant", "content": "\n\nanswer"}, *good]
    dataset = Dataset.from_list([{"messages": good}, {"messages": merged}])
    tok = tokenizer("chatml")
    assert encode_chat(tok, merged).layout == "expanded"
    with pytest.raises(InvalidRowError) as caught:
        tokenize_chats(
            dataset,
            tok,
            max_length=None,
            history_rewrite="refuse",
            split_name="test",
            source_of=lambda row: "mine.jsonl",
        )
    assert str(caught.value).startswith(
        "mine.jsonl (split 'test') row 1: turn 1 (assistant): a later prompt re-tokenizes this turn"
    )
    assert "history_rewrite: expand" in str(caught.value) and "skip_invalid_rows: true" in str(caught.value)
    tokenized, report = tokenize_chats(
        dataset, tok, max_length=None, history_rewrite="refuse", skip_invalid_rows=True, split_name="test"
    )
    assert len(tokenized) == 1 and report.refused_rows == 1
    assert tokenized[0] == encode_chat(tok, good).examples[0]
    expanded, report = tokenize_chats(dataset, tok, max_length=None, split_name="test")
    assert len(expanded) == 3 and report.expanded_rows == 1
