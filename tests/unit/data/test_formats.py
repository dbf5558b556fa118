"""`alignment.data.formats`: the formats users have (Alpaca, ShareGPT, TRL prompt-completion, OpenAI tool use, the
preference forms) converted to canonical rows when the mixture loads, their detection, their refusals, and the masks
of tool-use chats. Real-shaped rows come from LLaMA-Factory's demo data (tests/fixtures/llamafactory/README.md)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import datasets
import pytest
import trl

from alignment.chat.templates import ChatTemplateError
from alignment.chat.turns import IGNORE_INDEX, ChatEncoding, encode_chat
from alignment.data.formats import sharegpt_to_messages
from alignment.data.mixture import load_mixture
from alignment.data.pairs import preference_row_problem, to_pair
from alignment.data.rows import DataError, InvalidRowError, conversation_problem
from alignment.dpo.pairs import tokenize_preferences
from alignment.recipes.arguments import DataArguments
from alignment.sft.rows import sft_row_problem, tokenize_chats
from tests.support.invariant import check_invariant, trained_runs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "llamafactory"
QWEN3_TEMPLATE = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
SFT = ["messages"]
PAIRS = ["chosen", "rejected"]
SFT_FORMATS = (
    "Formats and the columns that identify them: messages (messages); sharegpt (conversations); alpaca (instruction, "
    "output); prompt_completion (prompt, completion). Set `format:` (and `columns_map:` for other column names) in "
    "its entry of the list form of `dataset_mixer`."
)
ORDER = "(after an optional leading system message, roles alternate user, assistant, ...)"


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def fixture(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def load(mixer, required=SFT, validate=sft_row_problem, **kwargs):
    data_args = DataArguments(dataset_mixer=mixer, test_split_size=0.0, **kwargs)
    return load_mixture(data_args, validate_row=validate, required_columns=required)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def area_call(shape: str, dimensions: list[int]) -> dict:
    arguments = {"shape": shape, "dimensions": dimensions}
    return {"role": "assistant", "content": "", "tool_calls": [function_call("calculate_area", arguments)]}


def function_call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


GLAIVE_MESSAGES = [
    user("I need to calculate the area of a rectangle. The length is 5 units and the breadth is 3 units."),
    area_call("rectangle", [5, 3]),
    {"role": "tool", "content": '{"area": 15}'},
    assistant("The area of the rectangle with length 5 units and breadth 3 units is 15 square units."),
    user("What about a circle with a radius of 4 units?"),
    area_call("circle", [4]),
    {"role": "tool", "content": '{"area": 50.24}'},
    assistant("The area of the circle with radius 4 units is approximately 50.24 square units."),
    user("And a square with side length 7 units?"),
    area_call("square", [7]),
    {"role": "tool", "content": '{"area": 49}'},
    assistant("The area of the square with side length 7 units is 49 square units."),
]


# Each format -> exact canonical rows


def test_alpaca_rows_become_one_user_turn_and_the_reply(caplog):
    path = str(FIXTURES / "alpaca_en_demo.json")
    rows = fixture("alpaca_en_demo.json")
    with caplog.at_level(logging.INFO, logger="alignment.data"):
        mixture = load({path: 1.0})
    assert f"dataset_mixer[{path!r}]: format 'alpaca' detected from its columns (instruction, output)" in caplog.text
    assert mixture["train"].column_names == ["messages"]
    assert [row["messages"] for row in mixture["train"]] == [
        [
            user("Transform the following sentence using a synonym: The car sped quickly."),
            assistant(rows[0]["output"]),
        ],
        [user("Invent a new word by combining two existing words."), assistant(rows[1]["output"])],
        # LLaMA-Factory's join: instruction + "\n" + input
        [
            user("Given the parameters of a triangle, find out its perimeter.\nSide 1 = 4\nSide 2 = 6\nSide 3 = 8"),
            assistant(rows[2]["output"]),
        ],
        [
            user("Reword this sentence to increase clarity\nThe idea of her being so brave made me smile"),
            assistant("The thought of her displaying such courage brought a smile to my face."),
        ],
    ]


def test_alpaca_system_and_history_lead_the_chat(tmp_path):
    row = {
        "instruction": "And times 4?",
        "input": "",
        "output": "20",
        "system": "Answer with a number.",
        "history": [["What is 2 + 3?", "5"]],
    }
    mixture = load([{"path": write_jsonl(tmp_path / "a.jsonl", [row]), "format": "alpaca"}])
    assert mixture["train"][0]["messages"] == [
        {"role": "system", "content": "Answer with a number."},
        user("What is 2 + 3?"),
        assistant("5"),
        user("And times 4?"),
        assistant("20"),
    ]


def test_glaive_sharegpt_tool_calls_become_openai_tool_use(caplog):
    path = str(FIXTURES / "glaive_toolcall_en_demo.json")
    with caplog.at_level(logging.INFO, logger="alignment.data"):
        mixture = load({path: 1.0})
    assert f"dataset_mixer[{path!r}]: format 'sharegpt' detected from its columns (conversations)" in caplog.text
    row = mixture["train"][0]
    assert row["messages"] == GLAIVE_MESSAGES
    # glaive's bare function specs, wrapped as LLaMA-Factory's tool formatters wrap them
    specs = json.loads(fixture("glaive_toolcall_en_demo.json")[0]["tools"])
    assert [spec["name"] for spec in specs] == ["calculate_area", "calculate_discount"]
    assert row["tools"] == [{"type": "function", "function": spec} for spec in specs]


def test_sharegpt_system_column_tags_and_columns_map(tmp_path):
    # LLaMA-Factory's "openai format" entry: sharegpt with role/content tags over a `conversation` column
    rows = [
        {
            "conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "sys": "Be kind.",
        }
    ]
    entry = {
        "path": write_jsonl(tmp_path / "chats.jsonl", rows),
        "format": "sharegpt",
        "columns_map": {"messages": "conversation", "system": "sys"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }
    assert load([entry])["train"][0]["messages"] == [
        {"role": "system", "content": "Be kind."},
        user("Hi"),
        assistant("Hello!"),
    ]
    # a leading system turn wins over the system column, as in LLaMA-Factory
    row = turns(("system", "Turn."), ("human", "Hi"), ("gpt", "Hello!"))
    assert sharegpt_to_messages({**row, "system": "Column."}) == [
        {"role": "system", "content": "Turn."},
        user("Hi"),
        assistant("Hello!"),
    ]


def test_prompt_completion_strings_and_conversations(tmp_path):
    strings = write_jsonl(tmp_path / "strings.jsonl", [{"prompt": "The sky is", "completion": " blue."}])
    assert load({strings: 1.0})["train"][0]["messages"] == [user("The sky is"), assistant(" blue.")]
    conversations = write_jsonl(
        tmp_path / "conversations.jsonl",
        [{"prompt": [{"role": "system", "content": "Be brief."}, user("Sky?")], "completion": [assistant("Blue.")]}],
    )
    assert load({conversations: 1.0})["train"][0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        user("Sky?"),
        assistant("Blue."),
    ]


def test_prompt_completion_with_an_assistant_turn_in_the_prompt_is_refused(tmp_path):
    row = {"prompt": [user("Hi"), assistant("Hello"), user("Sky?")], "completion": [assistant("Blue.")]}
    path = write_jsonl(tmp_path / "pc.jsonl", [row])
    with pytest.raises(InvalidRowError) as caught:
        load({path: 1.0})
    assert str(caught.value) == (
        f"{path} (split 'train') row 0: prompt message 1 is an assistant turn: TRL trains the completion only, but "
        "every assistant turn of a chat is trained here; give the whole chat as `messages` to train it, or drop that "
        "turn. Fix the data, or set `skip_invalid_rows: true` to drop such rows and log a count per reason."
    )


def test_openai_tool_use_rows_are_kept_as_written(tmp_path):
    row = {"messages": GLAIVE_MESSAGES[:4], "tools": [{"type": "function", "function": {"name": "calculate_area"}}]}
    mixture = load({write_jsonl(tmp_path / "tools.jsonl", [row]): 1.0})
    assert mixture["train"][0]["messages"] == GLAIVE_MESSAGES[:4]
    assert mixture["train"][0]["tools"] == row["tools"]


def test_sharegpt_preference_rows_become_trl_conversational_pairs(caplog):
    path = str(FIXTURES / "dpo_en_demo.json")
    rows = fixture("dpo_en_demo.json")
    with caplog.at_level(logging.INFO, logger="alignment.data"):
        mixture = load({path: 1.0}, required=PAIRS, validate=preference_row_problem)
    assert "format 'sharegpt' detected from its columns (conversations, chosen, rejected)" in caplog.text
    assert [dict(row) for row in mixture["train"]] == [
        {
            "prompt": [
                user(
                    "Hi! I'd like to create a new language game simulating the first person perspective of a "
                    "character named Angela."
                )
            ],
            "chosen": [assistant(rows[0]["chosen"]["value"])],
            "rejected": [assistant(rows[0]["rejected"]["value"])],
        },
        {
            "prompt": [
                {"role": "system", "content": rows[1]["conversations"][0]["value"]},
                user(rows[1]["conversations"][1]["value"]),
            ],
            "chosen": [assistant(rows[1]["chosen"]["value"])],
            "rejected": [assistant(rows[1]["rejected"]["value"])],
        },
    ]
    assert to_pair(mixture["train"][1]).prompt[0]["content"].startswith("You are a teacher.")


def test_alpaca_preference_rows_with_mapped_columns(tmp_path):
    # Intel/orca_dpo_pairs as LLaMA-Factory's dataset_info.json reads it: alpaca, prompt -> question
    row = {"system": "You are helpful.", "question": "2 + 2?", "chosen": "4", "rejected": "5"}
    entry = {
        "path": write_jsonl(tmp_path / "orca.jsonl", [row]),
        "format": "alpaca",
        "columns_map": {"prompt": "question"},
    }
    pair = dict(load([entry], required=PAIRS, validate=preference_row_problem)["train"][0])
    assert pair == {
        "prompt": [{"role": "system", "content": "You are helpful."}, user("2 + 2?")],
        "chosen": [assistant("4")],
        "rejected": [assistant("5")],
    }


def test_trl_preference_forms_are_kept_as_written(tmp_path, caplog):
    rows = [{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}]
    with caplog.at_level(logging.INFO, logger="alignment.data"):
        mixture = load({write_jsonl(tmp_path / "p.jsonl", rows): 1.0}, required=PAIRS, validate=preference_row_problem)
    assert "format 'preference' detected from its columns (chosen, rejected)" in caplog.text
    assert [dict(row) for row in mixture["train"]] == rows


# Detection, and the keys that choose a format


def test_ambiguous_and_unknown_formats_are_refused_verbatim(tmp_path):
    both = write_jsonl(tmp_path / "both.jsonl", [{"conversations": [], "messages": []}])
    with pytest.raises(DataError) as caught:
        load([{"path": both}])
    assert str(caught.value) == (
        f"dataset_mixer[0] ({both}): its columns match more than one SFT format: messages, sharegpt (it has: "
        f"conversations, messages). {SFT_FORMATS}"
    )
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "plain"}])
    with pytest.raises(DataError) as caught:
        load({text: 1.0})
    assert (
        str(caught.value)
        == f"dataset_mixer[{text!r}]: no SFT format matches its columns (it has: text). {SFT_FORMATS}"
    )


def test_the_most_specific_preference_format_wins(tmp_path, caplog):
    row = {"instruction": "2 + 2?", "input": "", "chosen": "4", "rejected": "5"}
    with caplog.at_level(logging.INFO, logger="alignment.data"):
        load({write_jsonl(tmp_path / "p.jsonl", [row]): 1.0}, required=PAIRS, validate=preference_row_problem)
    assert "format 'alpaca' detected from its columns (instruction, chosen, rejected)" in caplog.text


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": 3}, "`format` must be a format name, not int 3."),
        ({"columns_map": {"prompt": "q"}}, "`columns_map` names the columns of a format: set `format` too."),
        ({"format": "alpaca", "columns_map": ["q"]}, "`columns_map` must map role: column names (strings), not list"),
        ({"format": "alpaca", "columns_map": {"answer": "a"}}, "`columns_map` role 'answer' is not one of format"),
        ({"format": "alpaca", "tags": {"role_tag": "r"}}, "`tags` name ShareGPT's keys and roles; format 'alpaca'"),
        (
            {"format": "sharegpt", "tags": {"speaker": "r"}},
            "unknown `tags` key 'speaker' (valid: role_tag, content_tag",
        ),
        (
            {"format": "preference"},
            "`format: preference` is not one of the SFT formats (valid: messages, sharegpt, alpaca, prompt_compl",
        ),
        ({"format": "alpaca"}, "format 'alpaca' reads column 'instruction', 'output', which it does not have (it has"),
        ({"formatting": "alpaca"}, "unknown key 'formatting' (did you mean 'format'? valid keys: path, split, column"),
    ],
)
def test_bad_format_keys_are_refused(tmp_path, entry, message):
    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [user("q"), assistant("a")]}])
    with pytest.raises(DataError) as caught:
        load([{"path": path, **entry}])
    assert message in str(caught.value)


def test_format_on_a_stage_with_rows_of_its_own_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "p", "response": []}])
    with pytest.raises(DataError, match=r"`format` converts chat, preference, prompt and text data; this stage reads"):
        load([{"path": path, "format": "alpaca"}], required=[], validate=None)


# Bad ShareGPT rows


def turns(*pairs: tuple[str, str]) -> dict:
    return {"conversations": [{"from": who, "value": value} for who, value in pairs]}


BAD_SHAREGPT = {
    "empty turn": (
        turns(("human", "Hi"), ("gpt", "")),
        "empty content",
        "conversations: message 1 (assistant) has empty content",
    ),
    "two human turns in a row": (
        turns(("human", "Hi"), ("human", "Hello?"), ("gpt", "Hello")),
        "roles out of order",
        f"conversations: message 1 is 'user', expected 'assistant' {ORDER}",
    ),
    "gpt first": (
        turns(("gpt", "Hello"), ("human", "Hi")),
        "roles out of order",
        f"conversations: message 0 is 'assistant', expected 'user' {ORDER}",
    ),
    "unknown from": (
        turns(("human", "Hi"), ("bot", "Hello")),
        "unknown role",
        "unknown 'from' 'bot' at conversations[1] (valid: human, gpt, system, function_call, observation)",
    ),
    "function call without its result": (
        turns(("human", "Area?"), ("function_call", '{"name": "area", "arguments": {}}'), ("gpt", "15")),
        "roles out of order",
        "conversations: message 2 is 'assistant', expected 'tool' (an assistant message with tool_calls is followed "
        "by the 'tool' messages holding their results, then by the assistant again)",
    ),
    "function call not JSON": (
        turns(("human", "Area?"), ("function_call", "area(5, 3)"), ("observation", "15"), ("gpt", "15")),
        "malformed tool call",
        'conversations[1] (function_call) is not a JSON function call {"name", "arguments"} or a list of them: '
        "area(5, 3)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SHAREGPT))
def test_bad_sharegpt_rows_are_refused_with_their_kind(tmp_path, case):
    row, kind, message = BAD_SHAREGPT[case]
    problem = sharegpt_to_messages(row)
    assert (problem.kind, str(problem)) == (kind, message)
    good = turns(("human", "Hi"), ("gpt", "Hello"))
    path = write_jsonl(tmp_path / "sharegpt.jsonl", [good, row, good])
    with pytest.raises(InvalidRowError) as caught:
        load({path: 1.0})
    assert str(caught.value).startswith(f"{path} (split 'train') row 1: {message.rstrip('.')}. Fix the data")
    mixture = load({path: 1.0}, skip_invalid_rows=True)
    assert len(mixture["train"]) == 2 and mixture.report.invalid == {kind: 1}


# Tool use: the row check, and the masks


def test_tool_use_chats_pass_and_misplaced_tool_messages_do_not():
    assert conversation_problem(GLAIVE_MESSAGES) is None
    openai_call = {"role": "assistant", "content": None, "tool_calls": [function_call("area", {"w": 5})]}
    assert (
        conversation_problem([user("Area?"), openai_call, {"role": "tool", "content": "15"}, assistant("15")]) is None
    )
    problem = conversation_problem([user("Hi"), assistant("Hello"), {"role": "tool", "content": "15"}])
    assert (problem.kind, str(problem)) == (
        "roles out of order",
        "message 2 is 'tool', expected 'user' (an assistant message with tool_calls is followed by the 'tool' "
        "messages holding their results, then by the assistant again)",
    )
    no_name = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"arguments": {}}}]}
    assert conversation_problem([user("Area?"), no_name]).kind == "malformed tool call"
    assert sft_row_problem({"messages": GLAIVE_MESSAGES, "tools": "not json"}).kind == "malformed tools"


def trained_texts(tokenizer, example: dict) -> list[str]:
    ids = example["input_ids"]
    return [tokenizer.decode(ids[start:end]) for start, end in trained_runs(example["labels"])]


def test_tool_use_masks_on_the_real_qwen3_tokenizer(real_tokenizer_cache):
    """Each assistant turn (the calls and the replies) trained exactly as Qwen3 generates it after its inference
    prompt, the tools offered in the system block and the tool results in the prompt, never trained."""
    from tests.support.real_tokenizers import build

    tokenizer = build("qwen3", real_tokenizer_cache)
    tokenizer.chat_template = QWEN3_TEMPLATE
    mixture = load({str(FIXTURES / "glaive_toolcall_en_demo.json"): 1.0})
    tokenized, report = tokenize_chats(mixture["train"], tokenizer, max_length=None)
    tools = mixture["train"][0]["tools"]
    examples = [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in tokenized]
    # Qwen3 gives only the last turn an empty think block: each turn is trained in its own inference context
    assert (len(examples), report.expanded_rows) == (6, 1)
    check_invariant(tokenizer, GLAIVE_MESSAGES, ChatEncoding(examples, "expanded"), template_kwargs={"tools": tools})
    think = "<think>\n\n</think>\n\n"
    call = '<tool_call>\n{{"name": "calculate_area", "arguments": {{"shape": "{}", "dimensions": {}}}}}\n</tool_call>'
    assert [trained_texts(tokenizer, example) for example in examples] == [
        [think + call.format("rectangle", "[5, 3]") + "<|im_end|>"],
        [think + GLAIVE_MESSAGES[3]["content"] + "<|im_end|>"],
        [think + call.format("circle", "[4]") + "<|im_end|>"],
        [think + GLAIVE_MESSAGES[7]["content"] + "<|im_end|>"],
        [think + call.format("square", "[7]") + "<|im_end|>"],
        [think + GLAIVE_MESSAGES[11]["content"] + "<|im_end|>"],
    ]
    # token by token: the prompt is exactly what inference feeds, tools and tool results included, all untrained
    for example, index in zip(examples, (1, 3, 5, 7, 9, 11), strict=True):
        prompt = tokenizer.apply_chat_template(
            GLAIVE_MESSAGES[:index], tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        ids, labels = example["input_ids"], example["labels"]
        ((start, end),) = trained_runs(labels)
        assert ids[:start] == list(prompt) and labels[:start] == [IGNORE_INDEX] * start
        assert labels[start:end] == ids[start:end] and ids[end - 1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(ids[end:]) == ("\n" if index == 11 else "")  # the last turn: the whole chat's ids
        if index == 3:
            prompt_text = tokenizer.decode(prompt)
            assert '"name": "calculate_discount"' in prompt_text
            assert '<|im_start|>user\n<tool_response>\n{"area": 15}\n</tool_response><|im_end|>' in prompt_text


def test_templates_that_drop_tools_are_refused(tiny_tokenizer):
    # zephyr knows no tools: it renders neither the offered tools, nor the call, so no turn has an exact answer
    call_turn = GLAIVE_MESSAGES[:2]
    with pytest.raises(ChatTemplateError, match="does not render the message's call of tool 'calculate_area'") as err:
        encode_chat(tiny_tokenizer, call_turn)
    assert err.value.kind == "tool call not rendered"
    tools = [{"type": "function", "function": {"name": "calculate_area"}}]
    with pytest.raises(
        ChatTemplateError, match=r"turn 1 \(assistant\): the template's prompt does not show tool 'calc"
    ):
        encode_chat(tiny_tokenizer, call_turn, template_kwargs={"tools": tools})


# One end-to-end load + tokenize per format, on the toy tokenizer


@pytest.fixture
def toy_qwen3(tiny_tokenizer):
    """The toy tokenizer (it has <|im_start|> and <|im_end|>) with TRL's Qwen3 template, which renders tools."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = QWEN3_TEMPLATE
    return tokenizer


def test_each_format_loads_and_tokenizes_end_to_end(tmp_path, tiny_tokenizer, toy_qwen3):
    # a source read as written (messages as Arrow structs) first, then converted ones (messages as JSON)
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [user("Hi"), assistant("Hey")]}])
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [turns(("human", "Hi"), ("gpt", "Hello"))])
    completion = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Sky?", "completion": "Blue."}])
    mixture = load({chats: 1.0, str(FIXTURES / "alpaca_en_demo.json"): 1.0, sharegpt: 1.0, completion: 1.0})
    tokenized, _ = tokenize_chats(mixture["train"], tiny_tokenizer, max_length=None)
    rows = fixture("alpaca_en_demo.json")
    assert [trained_texts(tiny_tokenizer, example) for example in tokenized] == [
        ["Hey</s>"],
        *([row["output"] + "</s>"] for row in rows),
        ["Hello</s>"],
        ["Blue.</s>"],
    ]
    # the tool-use formats need a template that renders tools: Qwen3's, over the toy vocabulary
    openai = write_jsonl(tmp_path / "openai.jsonl", [{"messages": GLAIVE_MESSAGES[:4], "tools": None}])
    tool_mixture = load(
        [{"path": str(FIXTURES / "glaive_toolcall_en_demo.json")}, {"path": openai, "columns": ["messages"]}]
    )
    assert tool_mixture["train"][1]["tools"] is None  # a null `tools` column for the source without one
    tokenized, _ = tokenize_chats(tool_mixture["train"], toy_qwen3, max_length=None)
    texts = [text for example in tokenized for text in trained_texts(toy_qwen3, example)]
    think = "<think>\n\n</think>\n\n"
    rectangle = '{"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}'
    first_two = [
        f"{think}<tool_call>\n{rectangle}\n</tool_call><|im_end|>",
        f"{think}{GLAIVE_MESSAGES[3]['content']}<|im_end|>",
    ]
    assert len(texts) == 8 and texts[:2] == first_two and texts[6:] == first_two
    assert not any("tool_response" in text for text in texts)


def test_preference_formats_load_and_tokenize_for_dpo(tmp_path, tiny_tokenizer):
    trl_rows = write_jsonl(
        tmp_path / "trl.jsonl",
        [{"prompt": [user("2 + 2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}],
    )
    alpaca = write_jsonl(
        tmp_path / "alpaca.jsonl", [{"instruction": "3 + 3?", "input": "", "chosen": "6", "rejected": "7"}]
    )
    mixture = load(
        {str(FIXTURES / "dpo_en_demo.json"): 1.0, trl_rows: 1.0, alpaca: 1.0},
        required=PAIRS,
        validate=preference_row_problem,
    )
    pairs, _ = tokenize_preferences(mixture["train"], tiny_tokenizer, max_length=None, max_prompt_length=None)
    decoded = [
        {key: tiny_tokenizer.decode(row[key]) for key in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in pairs
    ]
    demo = fixture("dpo_en_demo.json")
    assert decoded[1]["prompt_ids"] == (
        f"<|system|>\n{demo[1]['conversations'][0]['value']}</s>\n<|user|>\n{demo[1]['conversations'][1]['value']}"
        "</s>\n<|assistant|>\n"
    )
    assert [row["chosen_ids"] for row in decoded] == [
        demo[0]["chosen"]["value"] + "</s>",
        demo[1]["chosen"]["value"] + "</s>",
        "4</s>",
        "6</s>",
    ]
    assert decoded[3] == {
        "prompt_ids": "<|user|>\n3 + 3?</s>\n<|assistant|>\n",
        "chosen_ids": "6</s>",
        "rejected_ids": "7</s>",
    }
