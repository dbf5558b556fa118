"""Preference rows: the three forms render to the same texts and token ids; bad rows are refused by index."""

import json

import pytest

from alignment.data.mixture import load_mixture
from alignment.data.pairs import encode_pair, preference_row_problem
from alignment.data.rows import InvalidRowError
from alignment.dpo.pairs import tokenize_preferences
from alignment.recipes.arguments import DataArguments

SYSTEM = {"role": "system", "content": "You are a friendly calculator."}
TURNS = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "Hi! Send me a sum and I will add it."},
    {"role": "user", "content": "What is 12+30?"},
]
CHOSEN = {"role": "assistant", "content": "12+30=42"}
REJECTED = {"role": "assistant", "content": "12+30=43"}


def forms(prompt: list[dict]) -> dict[str, dict]:
    return {
        "ultrafeedback": {
            "prompt": prompt[-1]["content"],
            "chosen": prompt + [CHOSEN],
            "rejected": prompt + [REJECTED],
        },
        "trl conversational": {"prompt": prompt, "chosen": [CHOSEN], "rejected": [REJECTED]},
    }


def rendered_pair(tokenizer, row: dict) -> dict[str, str]:
    """`encode_pair`'s ids decoded (the tiny tokenizer round-trips), to compare against the texts a reader expects."""
    return {name[: -len("_ids")]: tokenizer.decode(ids) for name, ids in encode_pair(tokenizer, row).items()}


def test_the_three_forms_encode_identically(tiny_tokenizer):
    multi_turn = forms([SYSTEM, *TURNS])
    encoded = [encode_pair(tiny_tokenizer, row) for row in multi_turn.values()]
    assert encoded[0] == encoded[1]
    expected = {
        "prompt": "<|system|>\nYou are a friendly calculator.</s>\n<|user|>\nhi</s>\n<|assistant|>\nHi! Send me a sum "
        "and I will add it.</s>\n<|user|>\nWhat is 12+30?</s>\n<|assistant|>\n",
        "chosen": "12+30=42</s>",
        "rejected": "12+30=43</s>",
    }
    assert rendered_pair(tiny_tokenizer, multi_turn["ultrafeedback"]) == expected  # every earlier turn kept

    # Plain strings are one user turn: the same as either message form with a single-turn prompt.
    single = forms([TURNS[-1]])
    plain = {"prompt": "What is 12+30?", "chosen": "12+30=42", "rejected": "12+30=43"}
    encodings = [encode_pair(tiny_tokenizer, row) for row in [*single.values(), plain]]
    assert encodings[0] == encodings[1] == encodings[2]
    assert rendered_pair(tiny_tokenizer, plain)["prompt"] == "<|user|>\nWhat is 12+30?</s>\n<|assistant|>\n"


def test_token_ids_are_the_chat_as_the_template_renders_it(tiny_tokenizer):
    from datasets import Dataset

    rows = list(forms([SYSTEM, *TURNS]).values())
    encoded, report = tokenize_preferences(
        Dataset.from_list(rows[1:]), tiny_tokenizer, max_length=None, max_prompt_length=None
    )
    row = encoded[0]
    chat = tiny_tokenizer.apply_chat_template([SYSTEM, *TURNS, CHOSEN], tokenize=False).rstrip()
    assert row["prompt_ids"] + row["chosen_ids"] == tiny_tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(row["chosen_ids"]) == "12+30=42</s>"  # ends at the end-of-turn token
    assert tiny_tokenizer.bos_token_id not in row["prompt_ids"]  # the template writes no BOS, none is added
    assert report.pairs == 1 and report.kept == 1 and report.prompts_truncated == 0


def test_truncation_keeps_the_prompt_end_and_counts_every_cut(tiny_tokenizer):
    from datasets import Dataset

    row = forms([SYSTEM, *TURNS])["trl conversational"]
    full, _ = tokenize_preferences(Dataset.from_list([row]), tiny_tokenizer, max_length=None, max_prompt_length=None)
    prompt = full[0]["prompt_ids"]

    cut, report = tokenize_preferences(
        Dataset.from_list([row]), tiny_tokenizer, max_length=12 + 8, max_prompt_length=12
    )
    assert cut[0]["prompt_ids"] == prompt[-12:]  # the end: the question and the generation prompt
    assert tiny_tokenizer.decode(cut[0]["chosen_ids"]) == "12+30=42"  # 8 tokens: the end-of-turn token is cut
    assert (report.prompts_truncated, report.replies_truncated, report.kept) == (1, 1, 1)

    # No max_prompt_length and a prompt that fills max_length: the pair is dropped and counted, never kept empty.
    dropped, report = tokenize_preferences(
        Dataset.from_list([row]), tiny_tokenizer, max_length=len(prompt), max_prompt_length=None
    )
    assert len(dropped) == 0 and report.dropped_no_reply_room == 1

    # Replies that differ only past the cut become identical: dropped and counted (they would teach nothing).
    same_start, report = tokenize_preferences(
        Dataset.from_list([row]), tiny_tokenizer, max_length=len(prompt) + 3, max_prompt_length=None
    )
    assert len(same_start) == 0 and report.dropped_identical_after_truncation == 1


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (
            {"chosen": [TURNS[0], CHOSEN], "rejected": [TURNS[2], REJECTED]},
            "row 2: chosen and rejected chats have different prompt turns",
        ),
        ({"prompt": [TURNS[2]], "chosen": [CHOSEN], "rejected": [CHOSEN]}, "row 2: chosen and rejected replies are"),
    ],
)
def test_bad_rows_are_refused_with_their_index(tmp_path, bad_row, message):
    good = forms([TURNS[2]])["ultrafeedback"]
    good = {"chosen": good["chosen"], "rejected": good["rejected"]}
    if "prompt" in bad_row:  # one schema per file: TRL conversational rows throughout
        good = forms([TURNS[2]])["trl conversational"]
    data = write_rows(tmp_path / "pairs.jsonl", [good, good, bad_row, good])
    args = DataArguments(dataset_mixer={data: 1.0}, test_split_size=0.25)
    with pytest.raises(InvalidRowError) as error:
        load_mixture(args, validate_row=preference_row_problem, required_columns=["chosen", "rejected"])
    assert message in str(error.value)

    skipping = DataArguments(dataset_mixer={data: 1.0}, test_split_size=0.25, skip_invalid_rows=True)
    mixture = load_mixture(skipping, validate_row=preference_row_problem, required_columns=["chosen", "rejected"])
    assert len(mixture["train"]) + len(mixture["test"]) == 3
    assert sum(mixture.report.invalid.values()) == 1
