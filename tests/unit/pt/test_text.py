"""`alignment.pt`: documents as token ids, checked token by token through the trainer TRL builds (packing, labels,
position ids), and every source kind read to exact documents (a `text` column, .txt files in both modes, chats
rendered whole), bad input refused with one message."""

import json

import datasets
import pytest

from alignment.data.mixture import load_mixture
from alignment.data.rows import DataError, InvalidRowError
from alignment.pt.text import DocumentBoundaries, chat_document_renderer, pt_row_problem, tokenize_documents
from alignment.recipes.arguments import DataArguments
from alignment.stages import STAGES

DOCUMENTS = ["hello there\nWhat is 12+30?\n12+30=42", "good morning"]


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def write_jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def documents(mixer, split="train", render_chat=None, **data) -> list[str]:
    """The documents the pt stage reads from `mixer` (nothing held out), chats rendered by `render_chat`."""
    data.setdefault("test_split_size", 0.0)
    mixture = load_mixture(
        DataArguments(dataset_mixer=mixer, **data),
        validate_row=pt_row_problem,
        required_columns=["text"],
        render_chat=render_chat,
    )
    return mixture[split]["text"]


def own_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# Token ids


def test_every_document_ends_with_eos_and_gets_the_tokenizers_bos(tiny_tokenizer):
    boundaries = DocumentBoundaries.of(tiny_tokenizer)
    assert boundaries.bos_token_id is None  # the tiny BPE adds no BOS to a text
    rows = datasets.Dataset.from_dict({"text": DOCUMENTS})
    data, report = tokenize_documents(rows, tiny_tokenizer, boundaries=boundaries, max_length=None)
    eos = tiny_tokenizer.eos_token_id
    assert data["input_ids"] == [own_ids(tiny_tokenizer, text) + [eos] for text in DOCUMENTS]
    assert (report.documents, report.tokens) == (2, sum(len(ids) for ids in data["input_ids"]))

    # A tokenizer that adds BOS (Llama's, Mistral's) gets it once, also before a rendered chat that starts with it.
    with_bos = DocumentBoundaries(
        bos_token_id=1, eos_token_id=eos, tokenizer_adds_eos=False, bos_token="<s>", eos_token="</s>"
    )
    assert with_bos.wrap([7, 8]) == [1, 7, 8, eos] and with_bos.wrap([1, 7, eos]) == [1, 7, eos]
    assert "starts with BOS '<s>' (id 1)" in str(with_bos) and f"ends with EOS '</s>' (id {eos}" in str(with_bos)


def test_documents_longer_than_max_length_are_cut_and_counted_unless_packing_splits_them(tiny_tokenizer, caplog):
    boundaries = DocumentBoundaries.of(tiny_tokenizer)
    rows = datasets.Dataset.from_dict({"text": DOCUMENTS})
    lengths = [len(own_ids(tiny_tokenizer, text)) + 1 for text in DOCUMENTS]
    assert lengths[1] == 3  # "good morning" + EOS: exactly max_length, not longer
    with caplog.at_level("INFO", logger="alignment"):
        data, report = tokenize_documents(rows, tiny_tokenizer, boundaries=boundaries, max_length=3)
    assert [len(ids) for ids in data["input_ids"]] == [3, 3]
    assert (report.longer, report.cut_tokens) == (1, lengths[0] - 3)
    assert f"1 longer than max_length 3 were cut to it, {lengths[0] - 3} tokens dropped" in caplog.text
    kept, report = tokenize_documents(rows, tiny_tokenizer, boundaries=boundaries, max_length=3, cut_long=False)
    assert [len(ids) for ids in kept["input_ids"]] == lengths and report.cut_tokens == 0
    assert "split across packed rows" in str(report)


def build_trainer(tiny_world, tmp_path, *overrides):
    """The pt trainer of the tiny recipe over the two `DOCUMENTS`, as `run_pt.py` builds it."""
    data = write_jsonl(tmp_path / "docs" / "train.jsonl", [{"text": text} for text in DOCUMENTS])
    stage = STAGES["pt"]
    recipe = stage.parse(
        [
            "recipes/tiny/pt/config.yaml",
            *["--model_name_or_path", str(tiny_world / "base"), "--dataset_mixer", json.dumps({data: 1.0})],
            *["--output_dir", str(tmp_path / "out"), "--test_split_size", "0", "--eval_strategy", "no"],
            *["--eval_on_start", "false", "--max_steps", "1", "--shuffle_dataset", "false", *overrides],
        ]
    )
    tokenizer = stage.stage.start(recipe)
    data = stage.stage.load_data(recipe, tokenizer)
    model = stage.stage.load_model(recipe, tokenizer)
    return stage.stage.build_trainer(recipe, tokenizer, data, model), tokenizer


def test_a_packed_row_holds_both_documents_apart_and_trains_every_token(tiny_world, tmp_path):
    trainer, tokenizer = build_trainer(tiny_world, tmp_path)
    eos = tokenizer.eos_token_id
    first, second = (own_ids(tokenizer, text) + [eos] for text in DOCUMENTS)
    assert len(trainer.train_dataset) == 1  # bfd_split packs both into one row of 128, longest first
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["input_ids"][0].tolist() == first + second
    assert "attention_mask" not in batch  # padding-free: documents are told apart by their position ids
    assert batch["position_ids"][0].tolist() == list(range(len(first))) + list(range(len(second)))
    # Every token is a label, but the first of each document: it has no earlier token of its own document, and
    # predicting it from the document before would train across the boundary.
    expected = [-100, *first[1:], -100, *second[1:]]
    assert batch["labels"][0].tolist() == expected
    assert trainer.model.generation_config.eos_token_id == eos


def test_without_packing_every_non_pad_token_is_a_label(tiny_world, tmp_path):
    trainer, tokenizer = build_trainer(tiny_world, tmp_path, "--packing", "false", "--eval_packing", "false")
    eos = tokenizer.eos_token_id
    examples = sorted(trainer.train_dataset, key=lambda example: len(example["input_ids"]))
    batch = trainer.data_collator(examples)
    for row, text in enumerate(sorted(DOCUMENTS, key=lambda text: len(own_ids(tokenizer, text)))):
        ids = own_ids(tokenizer, text) + [eos]
        mask = batch["attention_mask"][row].tolist()
        assert batch["input_ids"][row].tolist()[: len(ids)] == ids and mask == [1] * len(ids) + [0] * (
            len(mask) - len(ids)
        )
        assert batch["labels"][row].tolist() == ids + [-100] * (len(mask) - len(ids))


# Sources


def test_a_text_column_is_read_as_written(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": text} for text in DOCUMENTS])
    assert documents({source: 1.0}) == DOCUMENTS


def test_txt_files_are_one_document_each_or_one_per_blank_line_block(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "a.txt").write_text("First line\nsecond line\n\n\n  \nNext block\r\nits end\n", encoding="utf-8")
    (corpus / "b" / "c.txt").write_bytes("Third file, one block".encode("utf-8-sig"))  # with a byte-order mark
    (corpus / ".hidden.txt").write_text("never read")
    assert documents({str(corpus): 1.0}) == [
        "First line\nsecond line\n\n\n  \nNext block\r\nits end\n",
        "Third file, one block",
    ]
    assert documents({str(corpus): 1.0}, txt_documents="blank_lines") == [
        "First line\nsecond line",
        "Next block\nits end",
        "Third file, one block",
    ]
    assert documents([{"path": str(corpus / "a.txt"), "split": "train"}], txt_documents="blank_lines") == [
        "First line\nsecond line",
        "Next block\nits end",
    ]
    # An edited file is read again, not taken from the cache.
    (corpus / "b" / "c.txt").write_text("Rewritten, longer than before")
    assert documents({str(corpus / "b" / "c.txt"): 1.0}) == ["Rewritten, longer than before"]


def test_a_chat_source_that_names_its_format_is_rendered_whole_by_the_template(tiny_tokenizer, tmp_path):
    messages = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "2+3=5"}]
    sharegpt = {"conversations": [{"from": "human", "value": "What is 2+3?"}, {"from": "gpt", "value": "2+3=5"}]}
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": messages}])
    shared = write_jsonl(tmp_path / "sharegpt.jsonl", [sharegpt])
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": DOCUMENTS[0]}])
    mixer = [
        {"path": text},
        {"path": chats, "format": "messages"},
        {"path": shared, "format": "sharegpt"},
    ]
    mixture = load_mixture(
        DataArguments(dataset_mixer=mixer, test_split_size=0.0),
        validate_row=pt_row_problem,
        required_columns=["text"],
        render_chat=chat_document_renderer(tiny_tokenizer),
    )
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert mixture["train"]["text"] == [DOCUMENTS[0], rendered, rendered]


# Bad input: one message naming the source (and row)


def test_a_chat_source_without_format_is_refused_naming_the_formats(tiny_tokenizer, tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(
        DataError,
        match=r"no raw text format matches its columns \(it has: messages\).*"
        r"Read only when its entry names them: messages, sharegpt, alpaca, prompt_completion",
    ):
        documents({chats: 1.0}, render_chat=chat_document_renderer(tiny_tokenizer))


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "text is empty or whitespace only"), (" \n\t", "text is empty"), (None, "text is None, expected a string")],
)
def test_an_empty_or_missing_text_is_refused_by_row_or_counted(tmp_path, text, message):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": "fine"}, {"text": "fine too"}, {"text": text}])
    with pytest.raises(InvalidRowError, match=rf"docs.jsonl \(split 'train'\) row 2: {message}"):
        documents({source: 1.0})
    mixture = load_mixture(
        DataArguments(dataset_mixer={source: 1.0}, test_split_size=0.0, skip_invalid_rows=True),
        validate_row=pt_row_problem,
        required_columns=["text"],
    )
    assert mixture["train"]["text"] == ["fine", "fine too"]
    assert dict(mixture.report.invalid) == {"empty text" if text is not None else "non-string text": 1}


def test_an_empty_txt_file_is_an_empty_document_and_a_folder_without_files_is_refused(tmp_path):
    (tmp_path / "corpus").mkdir()
    with pytest.raises(DataError, match=r"folder .*corpus has no .json/.jsonl/.parquet/.txt files"):
        documents({str(tmp_path / "corpus"): 1.0})
    (tmp_path / "corpus" / "a.txt").write_text("")
    with pytest.raises(InvalidRowError, match=r"corpus \(split 'train'\) row 0: text is empty"):
        documents({str(tmp_path / "corpus"): 1.0})
    write_jsonl(tmp_path / "corpus" / "train.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match=r"holds both .txt files and .json/.jsonl/.parquet files"):
        documents({str(tmp_path / "corpus"): 1.0})
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"bad.txt: byte 3 is not UTF-8"):
        documents({str(tmp_path / "bad.txt"): 1.0})


def test_txt_documents_and_masking_switches_are_refused_at_parse_time():
    with pytest.raises(ValueError, match=r"`txt_documents: paragraph` is not one of file, blank_lines"):
        DataArguments(dataset_mixer={"x": 1.0}, txt_documents="paragraph")
    config = STAGES["pt"].config_class
    with pytest.raises(ValueError, match=r"`completion_only_loss: true` masks every token but a completion's"):
        config(output_dir="out", completion_only_loss=True)
    with pytest.raises(ValueError, match=r"columns_map: \{text: body\}"):
        config(output_dir="out", dataset_text_field="body")
