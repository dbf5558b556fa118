"""Tests for `alignment.chat.templates` and `alignment.chat.turns`: template choice and exact token ids for every
assistant turn (offline, CPU, throwaway tokenizers; the same on real vocabularies is in
`tests/unit/chat/test_real_templates.py`)."""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

import pytest
import trl

from alignment.chat.templates import (
    ChatTemplateError,
    list_chat_templates,
    load_chat_template,
    missing_special_tokens,
    render_prompt,
    set_chat_template,
)
from alignment.chat.turns import (
    IGNORE_INDEX,
    assistant_turns,
    encode_chat,
    encode_prompt_replies,
    special_token_ids,
    tokenize_conversation,
)
from tests.support.invariant import check_invariant
from tests.support.template_tokenizer import build_tokenizer

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
TWINS = sorted(p.name[: -len("_training.jinja")] for p in TRL_TEMPLATES.glob("*_training.jinja"))
# Templates that read `content` as a list of typed blocks (VLMs); plain strings render nothing or fail.
MULTIMODAL = {"idefics3", "smolvlm", "llava_next"}
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
BOS_EOS = {
    "cohere": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "deepseek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gemma": ("<bos>", "<eos>"),
    "diffusion_gemma": ("<bos>", "<eos>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "lfm2": ("<|startoftext|>", "<|im_end|>"),
    "qwen": ("<s>", "<|im_end|>"),
    "nemotron": ("<s>", "<|im_end|>"),
    "gptoss": ("<|startoftext|>", "<|return|>"),
    "glm": ("<s>", "<|endoftext|>"),
}

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
TURNS = [
    ("Hello there!", "Hi! How can I help?"),
    ("What is 2+2?", "2+2 is 4.\nAnything else?"),
    ("Thanks, bye.", "Goodbye, café friend!"),
]
LLAMA_LIKE = (  # a marker-free template in the Llama 3 style, no BOS, EOT is a special token
    "{%- for m in messages -%}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim"
    " + '<|eot_id|>' -}}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)


def chat(system: bool = True, turns: int = 3) -> list[dict]:
    messages = [dict(SYSTEM)] if system else []
    for user, assistant in TURNS[:turns]:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def multimodal(messages: list[dict]) -> list[dict]:
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]


def strip_markers(source: str) -> str:
    """Remove `{% generation %}` markers, keeping their whitespace control (`{%- generation -%}` trims too)."""
    source = re.sub(r"\{%(-?)\s*generation\s*(-?)%\}", r"{%\1 if true \2%}", source)
    return re.sub(r"\{%(-?)\s*endgeneration\s*(-?)%\}", r"{%\1 endif \2%}", source)


def trained_segments(tok, out: dict) -> list[str]:
    """Decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(out["input_ids"], out["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tok.decode(run) for run in runs]


@cache
def trl_tokenizer(name: str, source: str, twin: str):
    bos, eos = next((v for k, v in BOS_EOS.items() if name.startswith(k)), ("<s>", "</s>"))
    corpus = [SYSTEM["content"]] + [t for pair in TURNS for t in pair]
    tok = build_tokenizer(source + twin, bos=bos, eos=eos, corpus=corpus * 3)
    tok.chat_template = source
    return tok


def twin_truth(tok, messages: list[dict], twin: str) -> tuple[list[int], list[int]]:
    """Ground truth from TRL's `{% generation %}` markers (transformers' assistant mask), normalized by two rules.

    1. What the markers cover of a turn's generation prompt is not trained (the model is given it): TRL's Qwen2.5
       twin marks the "\\n" of "<|im_start|>assistant\\n", Muse Glimmer's marks "<|start|>assistant", Qwen3.5's the
       prefilled "<think>\\n\\n</think>\\n\\n".
    2. Whitespace-only, non-special tokens ending a marked run are glue after the end-of-turn token, not trained.
    """
    out = tok.apply_chat_template(
        messages, chat_template=twin, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    full = tok.apply_chat_template(messages, chat_template=twin, tokenize=False)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = tok.apply_chat_template(
                messages[:i], chat_template=twin, tokenize=False, add_generation_prompt=True
            )
            if full.startswith(prompt):
                run_start = next(
                    (j for j, (s, e) in enumerate(enc["offset_mapping"]) if e > len(prompt) - 1 and mask[j]), None
                )
                j = run_start
                while j is not None and j > 0 and mask[j - 1]:
                    j -= 1
                while j is not None and j < len(ids) and mask[j] and enc["offset_mapping"][j][1] <= len(prompt):
                    mask[j] = 0
                    j += 1
    special = special_token_ids(tok)
    for j in range(len(ids) - 1, -1, -1):
        if mask[j] and (j + 1 == len(ids) or not mask[j + 1]):
            k = j
            while k >= 0 and mask[k] and ids[k] not in special and tok.decode([ids[k]]).strip() == "":
                mask[k] = 0
                k -= 1
    return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]


def run_against_twin(name: str, source: str) -> list[str]:
    """`encode_chat` under `source` on chats with and without a system prompt; one verdict per chat.

    Every encoding must pass the token invariant (`tests/support/invariant.py`); where one sequence holds the chat and
    TRL's training twin renders it identically, the labels must also equal the twin's `{% generation %}` ground truth.
    """
    twin = (TRL_TEMPLATES / f"{name}_training.jinja").read_text(encoding="utf-8")
    tok = trl_tokenizer(name, source, twin)
    verdicts = []
    for system in (True, False):
        messages = chat(system)
        if name in MULTIMODAL:
            messages = multimodal(messages)
        try:
            encoding = encode_chat(tok, messages)
        except ChatTemplateError as err:
            verdicts.append(f"refused ({err.kind})")
            continue
        check_invariant(tok, messages, encoding)
        rendered = tok.apply_chat_template(messages, tokenize=False)
        if encoding.layout == "exact" and rendered == tok.apply_chat_template(
            messages, chat_template=twin, tokenize=False
        ):
            ids, labels = twin_truth(tok, messages, twin)
            assert encoding.examples[0] == {"input_ids": ids, "labels": labels}, name
            verdicts.append("equal")
        else:
            verdicts.append(encoding.layout)
    return verdicts


# Originals whose two chats both equal the twin ground truth (measured: 14 of 31 on this toy vocabulary; the rest
# pass the invariant as expanded chats, or are refused above).
MEASURED_EQUAL = 14
TABLE: dict[tuple[str, str], list[str]] = {}


@pytest.mark.parametrize("name", TWINS)
def test_trl_training_twin_without_markers(name):
    """Stripped training twins: exact ids, equal to the markers' ground truth wherever both apply; never a mismatch."""
    source = strip_markers((TRL_TEMPLATES / f"{name}_training.jinja").read_text(encoding="utf-8"))
    assert not GENERATION_MARKER.search(source)
    TABLE[(name, "stripped twin")] = run_against_twin(name, source)


@pytest.mark.parametrize("name", TWINS)
def test_trl_original_template(name):
    """Vendor originals: the invariant holds, equal to the twin's ground truth when both render alike."""
    TABLE[(name, "original")] = run_against_twin(name, (TRL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"))


def test_zz_print_table():
    """Print the per-template verdicts (run with -s) and guard against regressions in coverage."""
    if not TABLE:
        pytest.skip("run with the parametrized TRL tests")
    lines = [f"{'template':28s} {'kind':14s} with system | without system"]
    lines += [f"{n:28s} {k:14s} {' | '.join(v)}" for (n, k), v in sorted(TABLE.items())]
    logging.getLogger(__name__).info("\n".join(lines))
    print("\n" + "\n".join(lines))
    originals = [v for (n, k), v in TABLE.items() if k == "original"]
    if len(originals) == len(TWINS):
        assert sum(all(x == "equal" for x in v) for v in originals) >= MEASURED_EQUAL
        # These chats carry no reasoning: templates whose generation prompt opens <think> (DeepSeek, Nemotron) have no
        # exact reply for them; Gemma takes no system role; GLM-4-MoE closes a turn only with the next header.
        refusals = {x for v in originals for x in v if x.startswith("refused")}
        assert refusals <= {
            "refused (generation prompt prefilled)",
            "refused (template cannot render)",
            "refused (no end-of-turn token)",
        }


# ---- shipped templates and a marker-free custom one: exact labels, token by token ---------------------------------


def _expected(tok, pieces: list[tuple[str, bool]]) -> dict[str, list[int]]:
    """Hand-written pieces (text, trained?) -> exact input_ids and labels.

    Each trained piece's own tokenization must appear, in order, in the tokenization of the whole text (the prompt
    pieces may tokenize differently at their ends, e.g. "\\n\\n" before content).
    """
    ids = tok("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]
    labels, pos = [IGNORE_INDEX] * len(ids), 0
    for text, trained in pieces:
        if trained:
            piece = tok(text, add_special_tokens=False)["input_ids"]
            pos = next(k for k in range(pos, len(ids)) if ids[k : k + len(piece)] == piece)
            labels[pos : pos + len(piece)] = piece
            pos += len(piece)
    return {"input_ids": ids, "labels": labels}


CASES = {
    "chatml": (
        "<|im_end|>",
        [
            (
                "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n<|im_start|>user\nHello there!<|im_end|>\n"
                "<|im_start|>assistant\n",
                False,
            ),
            ("Hi! How can I help?<|im_end|>", True),
            ("\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", False),
            ("2+2 is 4.\nAnything else?<|im_end|>", True),
            ("\n<|im_start|>user\nThanks, bye.<|im_end|>\n<|im_start|>assistant\n", False),
            ("Goodbye, café friend!<|im_end|>", True),
            ("\n", False),
        ],
    ),
    "zephyr": (
        "</s>",
        [
            ("<|system|>\nYou are a terse assistant.</s>\n<|user|>\nHello there!</s>\n<|assistant|>\n", False),
            ("Hi! How can I help?</s>", True),
            ("\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n", False),
            ("2+2 is 4.\nAnything else?</s>", True),
            ("\n<|user|>\nThanks, bye.</s>\n<|assistant|>\n", False),
            ("Goodbye, café friend!</s>", True),
            ("\n", False),
        ],
    ),
    "llama_like": (
        "<|eot_id|>",
        [
            (
                "<|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHello there!<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                False,
            ),
            ("Hi! How can I help?<|eot_id|>", True),
            (
                "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                False,
            ),
            ("2+2 is 4.\nAnything else?<|eot_id|>", True),
            (
                "<|start_header_id|>user<|end_header_id|>\n\nThanks, bye.<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                False,
            ),
            ("Goodbye, café friend!<|eot_id|>", True),
        ],
    ),
}


def _case_tokenizer(name: str):
    source = LLAMA_LIKE if name == "llama_like" else load_chat_template(name)
    tok = build_tokenizer(source, corpus=[t for pair in TURNS for t in pair] * 3)
    set_chat_template(tok, None if name == "llama_like" else name)
    if name == "llama_like":
        tok.chat_template = LLAMA_LIKE
    return tok


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_labels_every_assistant_turn(name):
    eot, pieces = CASES[name]
    tok = _case_tokenizer(name)
    encoding = encode_chat(tok, chat())
    check_invariant(tok, chat(), encoding)
    trained = [segment for example in encoding.examples for segment in trained_segments(tok, example)]
    assert trained == [answer + eot for _, answer in TURNS]
    if name == "llama_like":
        # This toy vocabulary's GPT-2 split keeps "\n\n" whole at the end of a prompt but splits it before a letter,
        # so the whole chat's ids are not what inference feeds for turns 2 and 3: each turn gets its own example.
        assert encoding.layout == "expanded" and len(encoding.examples) == 3
    else:
        assert encoding.examples == [_expected(tok, pieces)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_labels_without_system(name):
    eot, _ = CASES[name]
    tok = _case_tokenizer(name)
    encoding = encode_chat(tok, chat(system=False, turns=2))
    check_invariant(tok, chat(system=False, turns=2), encoding)
    trained = [segment for example in encoding.examples for segment in trained_segments(tok, example)]
    assert trained == [answer + eot for _, answer in TURNS[:2]]


def test_trim_offsets_tokenizer_gives_same_labels():
    """Offsets play no part: a tokenizer whose offsets exclude a token's leading space gives the same ids."""
    src = load_chat_template("chatml")
    a = build_tokenizer(src, corpus=[t for pair in TURNS for t in pair])
    b = build_tokenizer(src, corpus=[t for pair in TURNS for t in pair], trim_offsets=True)
    a.chat_template = b.chat_template = src
    assert tokenize_conversation(a, chat()) == tokenize_conversation(b, chat())


@pytest.mark.parametrize("glue_marked", [False, True])
def test_marker_template_agrees_with_derivation(glue_marked):
    """A `{% generation %}`-marked ChatML gives the same labels: markers are neither needed nor read, the renders
    decide; markers covering the "\\n" glue (TRL style) change nothing either."""
    end, glue = ("'<|im_end|>\\n'", "''") if glue_marked else ("'<|im_end|>'", "'\\n'")
    marked = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
        "{%- if m['role'] == 'assistant' -%}{% generation %}{{- m['content'] + " + end + " -}}{% endgeneration %}"
        "{{- " + glue + " -}}{%- else -%}{{- m['content'] + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    assert GENERATION_MARKER.search(marked)
    tok = build_tokenizer(marked, corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = load_chat_template("chatml")
    expected, rendered = tokenize_conversation(tok, chat()), tok.apply_chat_template(chat(), tokenize=False)
    tok.chat_template = marked
    assert tok.apply_chat_template(chat(), tokenize=False) == rendered
    assert tokenize_conversation(tok, chat()) == expected


# ---- refusals ------------------------------------------------------------------------------------------------------

CHATML_TOKENS = load_chat_template("chatml")


def _tok(template: str, **kw):
    tok = build_tokenizer(CHATML_TOKENS + template, corpus=[t for pair in TURNS for t in pair], **kw)
    tok.chat_template = template
    return tok


HISTORY_REWRITING = (  # earlier assistant turns lose their content once a later turn follows (like reasoning drops)
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['role'] == 'assistant' and not loop.last -%}{{- '[earlier]' -}}{%- else -%}{{- m['content'] -}}"
    "{%- endif -%}{{- '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def test_history_rewriting_template_trains_every_turn_in_its_own_context():
    tok = _tok(HISTORY_REWRITING)
    expanded = encode_chat(tok, chat())
    assert expanded.layout == "expanded" and len(expanded.examples) == 3
    check_invariant(tok, chat(), expanded)
    # Each turn's context is what inference renders: earlier replies as "[earlier]", the trained reply in full.
    assert [trained_segments(tok, example) for example in expanded.examples] == [[a + "<|im_end|>"] for _, a in TURNS]
    assert tok.decode(expanded.examples[2]["input_ids"]).count("[earlier]") == 2

    last = encode_chat(tok, chat(), history_rewrite="last_turn")
    assert last.layout == "last_turn" and last.examples == expanded.examples[-1:]
    check_invariant(tok, chat(), last)

    with pytest.raises(ChatTemplateError, match=r"turn 2 \(assistant\): the template renders it differently") as err:
        encode_chat(tok, chat(), history_rewrite="refuse")
    assert err.value.kind == "history rewritten" and "history_rewrite: expand" in str(err.value)
    with pytest.raises(ChatTemplateError, match="rewrites history"):
        tokenize_conversation(tok, chat())


def test_prefilled_generation_prompt_refused():
    template = CHATML_TOKENS.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    with pytest.raises(ChatTemplateError, match=r"turn 2 \(assistant\).*prefills the generation prompt") as err:
        encode_chat(_tok(template), chat())
    assert err.value.kind == "generation prompt prefilled"


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_token_straddling_the_generation_prompt_keeps_the_inference_prompt(trim_offsets):
    """The generation prompt ends with a space the second reply's first word merges with (' 2' is one token): that
    turn's prompt ids stay what inference feeds, its reply is tokenized after them as generation produces it, and it
    gets its own example (the last turn's prompt holds it as the merged tokens)."""
    template = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>\\n' -}}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant: ' -}}{%- endif -%}"
    )
    tok = _tok(template, trim_offsets=trim_offsets)
    joint = tok("<|im_start|>assistant: 2+2 is 4.", add_special_tokens=False)["input_ids"]
    prompt = tok("<|im_start|>assistant: ", add_special_tokens=False)["input_ids"]
    assert joint[: len(prompt)] != prompt  # the premise: a token straddles the boundary
    turns = assistant_turns(tok, chat())
    assert [turn.tokenized_apart for turn in turns] == [False, True, False]
    assert [tok.decode(turn.reply_ids) for turn in turns] == [a + "<|im_end|>" for _, a in TURNS]
    encoding = encode_chat(tok, chat())
    assert encoding.layout == "expanded" and len(encoding.examples) == 2
    check_invariant(tok, chat(), encoding)
    with pytest.raises(ChatTemplateError, match="re-tokenizes"):
        tokenize_conversation(tok, chat())
    single = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": TURNS[1][1]}]
    assert encode_chat(tok, single).layout == "exact"
    check_invariant(tok, single, encode_chat(tok, single))


def test_turn_without_end_of_turn_token_refused():
    """GLM-style: the assistant turn is closed only by the next message's header."""
    template = (
        "{%- for m in messages -%}{{- '<|' + m['role'] + '|>\\n' + m['content'] -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    )
    tok = build_tokenizer(template + "<|system|><|user|><|assistant|>", corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = template
    with pytest.raises(ChatTemplateError, match="end-of-turn"):
        tokenize_conversation(tok, chat())


def test_system_role_refused_with_clear_error():
    gemma = (TRL_TEMPLATES / "gemma.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(gemma, bos="<bos>", eos="<eos>", corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = gemma
    with pytest.raises(ChatTemplateError, match="does not support a system role"):
        tokenize_conversation(tok, chat(system=True))
    assert len(trained_segments(tok, tokenize_conversation(tok, chat(system=False)))) == 3


def test_template_cannot_render_is_refused():
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(ChatTemplateError, match="failed to render"):
        tokenize_conversation(_tok(template), chat())


def test_no_assistant_turn_is_an_error():
    with pytest.raises(ValueError, match="no assistant"):
        tokenize_conversation(_tok(CHATML_TOKENS), [{"role": "user", "content": "hi"}])


# ---- train_on_prompt, BOS, prompt rendering ------------------------------------------------------------------------


def test_train_on_prompt_trains_everything():
    tok = _tok(CHATML_TOKENS)
    got = tokenize_conversation(tok, chat(), train_on_prompt=True)
    assert got["labels"] == got["input_ids"]
    assert got["input_ids"] == tokenize_conversation(tok, chat())["input_ids"]


def test_template_bos_not_doubled():
    """The template writes the BOS; a tokenizer that would add one too must not double it."""
    from tokenizers import processors

    llama3 = (TRL_TEMPLATES / "llama3.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(llama3, bos="<|begin_of_text|>", eos="<|eot_id|>", corpus=[t for p in TURNS for t in p])
    bos_id = tok.convert_tokens_to_ids("<|begin_of_text|>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos_id)]
    )
    tok.chat_template = llama3
    encoding = encode_chat(tok, chat())  # expanded: this toy vocabulary re-splits "\n\n" (see llama_like)
    check_invariant(tok, chat(), encoding)
    for example in encoding.examples:
        assert example["input_ids"].count(bos_id) == 1 and example["input_ids"][0] == bos_id
    trained = [segment for example in encoding.examples for segment in trained_segments(tok, example)]
    assert trained == [a + "<|eot_id|>" for _, a in TURNS]


def test_render_prompt_and_encode_prompt_replies():
    tok = _tok(CHATML_TOKENS)
    prompt = chat()[:-1]
    assert render_prompt(tok, prompt).endswith("<|im_start|>user\nThanks, bye.<|im_end|>\n<|im_start|>assistant\n")
    encoded = encode_prompt_replies(tok, prompt, chat()[-1:])
    assert encoded.prompt_ids == tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
    assert [tok.decode(ids) for ids in encoded.replies] == ["Goodbye, café friend!<|im_end|>"]


def test_pair_prompts_need_not_be_prefix_stable():
    """DPO and reward prompts are whatever inference renders: a history-rewriting template is fine for pairs."""
    tok = _tok(HISTORY_REWRITING)
    prompt = chat()[:-1]
    encoded = encode_prompt_replies(tok, prompt, [chat()[-1], {"role": "assistant", "content": "Bye."}])
    assert encoded.prompt_ids == tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
    assert "[earlier]" in tok.decode(encoded.prompt_ids)
    assert [tok.decode(ids) for ids in encoded.replies] == ["Goodbye, café friend!<|im_end|>", "Bye.<|im_end|>"]


# ---- choosing templates --------------------------------------------------------------------------------------------


def test_list_and_load_shipped_templates():
    assert {"chatml", "zephyr"} <= set(list_chat_templates())
    assert "<|im_start|>" in load_chat_template("chatml")


def test_unknown_template_name_lists_valid_names():
    with pytest.raises(ChatTemplateError, match=r"chatml.*zephyr"):
        load_chat_template("no-such-template")


def test_load_template_from_path(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(LLAMA_LIKE, encoding="utf-8")
    assert load_chat_template(str(path)) == LLAMA_LIKE
    tok = build_tokenizer(LLAMA_LIKE, corpus=["hi"])
    assert set_chat_template(tok, str(path)) == LLAMA_LIKE and tok.chat_template == LLAMA_LIKE


def test_set_chat_template_none_uses_tokenizers_own_or_errors(caplog):
    tok = build_tokenizer(None, corpus=["hi"])
    with pytest.raises(ChatTemplateError, match="no chat template"):
        set_chat_template(tok, None)
    tok.chat_template = LLAMA_LIKE
    with caplog.at_level(logging.INFO, logger="alignment.chat.templates"):
        assert set_chat_template(tok, None) == LLAMA_LIKE
    assert "tokenizer's own" in caplog.text


def test_set_chat_template_missing_special_tokens():
    tok = build_tokenizer(None, corpus=[t for pair in TURNS for t in pair])
    n = len(tok)
    assert missing_special_tokens(tok, "chatml") == ["<|im_start|>", "<|im_end|>"]
    with pytest.raises(ChatTemplateError, match=r"missing from the tokenizer.s vocabulary.*add_chat_template_tokens"):
        set_chat_template(tok, "chatml")
    assert len(tok) == n
    set_chat_template(tok, "chatml", add_missing_tokens=True)
    assert len(tok) == n + 2 and missing_special_tokens(tok, "chatml") == []
    assert tok.convert_tokens_to_ids("<|im_end|>") in special_token_ids(tok)
    assert trained_segments(tok, tokenize_conversation(tok, chat())) == [a + "<|im_end|>" for _, a in TURNS]
    # zephyr needs no new tokens: its end-of-turn token is the tokenizer's eos
    assert missing_special_tokens(tok, "zephyr") == []
