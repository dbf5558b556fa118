"""Tests for `alignment.templates`: template choice and exact SFT loss masks (offline, CPU, throwaway tokenizers)."""

from __future__ import annotations

import logging
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import trl

from alignment import templates as T
from alignment.templates import ChatTemplateError

sys.path.insert(0, str(Path(__file__).parent))
from _template_tokenizer import build_tokenizer  # noqa: E402

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
TWINS = sorted(p.name[: -len("_training.jinja")] for p in TRL_TEMPLATES.glob("*_training.jinja"))
# Templates that read `content` as a list of typed blocks (VLMs); plain strings render nothing or fail.
MULTIMODAL = {"idefics3", "smolvlm", "llava_next"}
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
        if label != T.IGNORE_INDEX:
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
    special = T._special_ids(tok)
    for j in range(len(ids) - 1, -1, -1):
        if mask[j] and (j + 1 == len(ids) or not mask[j + 1]):
            k = j
            while k >= 0 and mask[k] and ids[k] not in special and tok.decode([ids[k]]).strip() == "":
                mask[k] = 0
                k -= 1
    return ids, [t if m else T.IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]


def run_against_twin(name: str, source: str) -> list[str]:
    """Run tokenize_conversation under `source` on chats with and without a system prompt; one verdict per chat."""
    twin = (TRL_TEMPLATES / f"{name}_training.jinja").read_text(encoding="utf-8")
    tok = trl_tokenizer(name, source, twin)
    verdicts = []
    for system in (True, False):
        messages = chat(system)
        if name in MULTIMODAL:
            messages = multimodal(messages)
        try:
            got = T.tokenize_conversation(tok, messages)
        except ChatTemplateError as err:
            verdicts.append(f"refused ({_reason(err)})")
            continue
        rendered = tok.apply_chat_template(messages, tokenize=False)
        assert got["input_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]
        if rendered == tok.apply_chat_template(messages, chat_template=twin, tokenize=False):
            ids, labels = twin_truth(tok, messages, twin)
            assert got["input_ids"] == ids
            assert got["labels"] == labels, (name, system, trained_segments(tok, got))
            verdicts.append("equal")
        else:  # no ground truth: each trained run must be exactly the assistant content and its end-of-turn token
            segments = trained_segments(tok, got)
            answers = [a for _, a in TURNS]
            assert len(segments) == len(answers), (name, segments)
            for segment, answer in zip(segments, answers, strict=True):
                rest = segment[segment.index(answer) + len(answer) :] if answer in segment else None
                assert rest is not None and tok.convert_tokens_to_ids(rest) in T._special_ids(tok), (name, segment)
            verdicts.append("content+EOT (twin renders differently)")
    return verdicts


def _reason(err: Exception) -> str:
    text = str(err)
    for key, reason in [
        ("does not extend", "generation prompt prefilled / not extended"),
        ("renders it differently once later", "earlier turn re-rendered"),
        ("not a token boundary", "span boundary inside a token"),
        ("end-of-turn special token", "turn has no end-of-turn token of its own"),
        ("system role", "system role not supported"),
        ("not a prefix of the conversation", "generation prompt not a prefix"),
        ("failed to render", "template cannot render this chat"),
        ("verbatim", "content not rendered verbatim"),
    ]:
        if key in text:
            return reason
    return text[:80]


TABLE: dict[tuple[str, str], list[str]] = {}


@pytest.mark.parametrize("name", TWINS)
def test_trl_training_twin_without_markers(name):
    """Stripped training twins: the derivation equals the markers' ground truth, or refuses; never a mismatch."""
    source = strip_markers((TRL_TEMPLATES / f"{name}_training.jinja").read_text(encoding="utf-8"))
    assert not T._HAS_GENERATION_RE.search(source)
    TABLE[(name, "stripped twin")] = run_against_twin(name, source)


@pytest.mark.parametrize("name", TWINS)
def test_trl_original_template(name):
    """Vendor originals: equal to the twin's ground truth when both render alike, else content+EOT, or refused."""
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
        assert sum(all(x == "equal" for x in v) for v in originals) >= 18  # measured: 18 of 31


# ---- shipped templates and a marker-free custom one: exact labels, token by token ---------------------------------


def _expected(tok, pieces: list[tuple[str, bool]]) -> dict[str, list[int]]:
    """Hand-written pieces (text, trained?) -> exact input_ids and labels.

    Each trained piece's own tokenization must appear, in order, in the tokenization of the whole text (the prompt
    pieces may tokenize differently at their ends, e.g. "\\n\\n" before content).
    """
    ids = tok("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]
    labels, pos = [T.IGNORE_INDEX] * len(ids), 0
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
    source = LLAMA_LIKE if name == "llama_like" else T.load_chat_template(name)
    tok = build_tokenizer(source, corpus=[t for pair in TURNS for t in pair] * 3)
    T.set_chat_template(tok, None if name == "llama_like" else name)
    if name == "llama_like":
        tok.chat_template = LLAMA_LIKE
    return tok


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_labels_every_assistant_turn(name):
    eot, pieces = CASES[name]
    tok = _case_tokenizer(name)
    got = T.tokenize_conversation(tok, chat())
    assert trained_segments(tok, got) == [answer + eot for _, answer in TURNS]
    assert got == _expected(tok, pieces)
    text, spans = T.assistant_spans(tok, chat())
    assert [text[s:e] for s, e in spans] == [answer + eot for _, answer in TURNS]


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_labels_without_system(name):
    eot, _ = CASES[name]
    tok = _case_tokenizer(name)
    got = T.tokenize_conversation(tok, chat(system=False, turns=2))
    assert trained_segments(tok, got) == [answer + eot for _, answer in TURNS[:2]]


def test_trim_offsets_tokenizer_gives_same_labels():
    """Offsets that exclude a token's leading space must not shift a boundary (decode verification)."""
    src = T.load_chat_template("chatml")
    a = build_tokenizer(src, corpus=[t for pair in TURNS for t in pair])
    b = build_tokenizer(src, corpus=[t for pair in TURNS for t in pair], trim_offsets=True)
    a.chat_template = b.chat_template = src
    assert T.tokenize_conversation(a, chat()) == T.tokenize_conversation(b, chat())


@pytest.mark.parametrize("glue_marked", [False, True])
def test_marker_template_agrees_with_derivation(glue_marked):
    """A `{% generation %}`-marked ChatML gives the same labels; markers covering the "\\n" glue (TRL style) too."""
    end, glue = ("'<|im_end|>\\n'", "''") if glue_marked else ("'<|im_end|>'", "'\\n'")
    marked = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
        "{%- if m['role'] == 'assistant' -%}{% generation %}{{- m['content'] + " + end + " -}}{% endgeneration %}"
        "{{- " + glue + " -}}{%- else -%}{{- m['content'] + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    assert T._HAS_GENERATION_RE.search(marked)
    tok = build_tokenizer(marked, corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = T.load_chat_template("chatml")
    expected, rendered = T.tokenize_conversation(tok, chat()), tok.apply_chat_template(chat(), tokenize=False)
    tok.chat_template = marked
    assert tok.apply_chat_template(chat(), tokenize=False) == rendered
    assert T.tokenize_conversation(tok, chat()) == expected


# ---- refusals ------------------------------------------------------------------------------------------------------

CHATML_TOKENS = T.load_chat_template("chatml")


def _tok(template: str, **kw):
    tok = build_tokenizer(CHATML_TOKENS + template, corpus=[t for pair in TURNS for t in pair], **kw)
    tok.chat_template = template
    return tok


def test_non_prefix_stable_template_refused():
    """Earlier assistant turns are rendered without their content once a later turn follows (like reasoning drops)."""
    template = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
        "{%- if m['role'] == 'assistant' and not loop.last -%}{{- '[earlier]' -}}{%- else -%}{{- m['content'] -}}"
        "{%- endif -%}{{- '<|im_end|>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    with pytest.raises(ChatTemplateError, match=r"Turn 2 \(assistant\).*prefix-stable"):
        T.tokenize_conversation(_tok(template), chat())


def test_prefilled_generation_prompt_refused():
    template = CHATML_TOKENS.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    with pytest.raises(ChatTemplateError, match=r"Turn 2 \(assistant\).*does not extend"):
        T.tokenize_conversation(_tok(template), chat())


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_boundary_inside_a_token_refused(trim_offsets):
    """The generation prompt ends with a space the content's first word merges with (' Hi' is one token)."""
    template = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>\\n' -}}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant: ' -}}{%- endif -%}"
    )
    with pytest.raises(ChatTemplateError, match="not a token boundary"):
        T.tokenize_conversation(_tok(template, trim_offsets=trim_offsets), chat())


def test_turn_without_end_of_turn_token_refused():
    """GLM-style: the assistant turn is closed only by the next message's header."""
    template = (
        "{%- for m in messages -%}{{- '<|' + m['role'] + '|>\\n' + m['content'] -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    )
    tok = build_tokenizer(template + "<|system|><|user|><|assistant|>", corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = template
    with pytest.raises(ChatTemplateError, match="end-of-turn"):
        T.tokenize_conversation(tok, chat())


def test_system_role_refused_with_clear_error():
    gemma = (TRL_TEMPLATES / "gemma.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(gemma, bos="<bos>", eos="<eos>", corpus=[t for pair in TURNS for t in pair])
    tok.chat_template = gemma
    with pytest.raises(ChatTemplateError, match="does not support a system role"):
        T.tokenize_conversation(tok, chat(system=True))
    assert len(trained_segments(tok, T.tokenize_conversation(tok, chat(system=False)))) == 3


def test_template_cannot_render_is_refused():
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(ChatTemplateError, match="failed to render"):
        T.tokenize_conversation(_tok(template), chat())


def test_no_assistant_turn_is_an_error():
    with pytest.raises(ValueError, match="no assistant"):
        T.tokenize_conversation(_tok(CHATML_TOKENS), [{"role": "user", "content": "hi"}])


# ---- train_on_prompt, BOS, prompt rendering ------------------------------------------------------------------------


def test_train_on_prompt_trains_everything():
    tok = _tok(CHATML_TOKENS)
    got = T.tokenize_conversation(tok, chat(), train_on_prompt=True)
    assert got["labels"] == got["input_ids"]
    assert got["input_ids"] == T.tokenize_conversation(tok, chat())["input_ids"]


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
    got = T.tokenize_conversation(tok, chat())
    assert got["input_ids"].count(bos_id) == 1 and got["input_ids"][0] == bos_id
    assert trained_segments(tok, got) == [a + "<|eot_id|>" for _, a in TURNS]


def test_render_prompt_and_split_prompt_completion():
    tok = _tok(CHATML_TOKENS)
    prompt = chat()[:-1]
    assert T.render_prompt(tok, prompt).endswith("<|im_start|>user\nThanks, bye.<|im_end|>\n<|im_start|>assistant\n")
    p, c = T.split_prompt_completion(tok, prompt, chat()[-1:])
    assert p == T.render_prompt(tok, prompt)
    assert c == "Goodbye, café friend!<|im_end|>"


# ---- choosing templates --------------------------------------------------------------------------------------------


def test_list_and_load_shipped_templates():
    assert {"chatml", "zephyr"} <= set(T.list_chat_templates())
    assert "<|im_start|>" in T.load_chat_template("chatml")


def test_unknown_template_name_lists_valid_names():
    with pytest.raises(ChatTemplateError, match=r"chatml.*zephyr"):
        T.load_chat_template("no-such-template")


def test_load_template_from_path(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(LLAMA_LIKE, encoding="utf-8")
    assert T.load_chat_template(str(path)) == LLAMA_LIKE
    tok = build_tokenizer(LLAMA_LIKE, corpus=["hi"])
    assert T.set_chat_template(tok, str(path)) == LLAMA_LIKE and tok.chat_template == LLAMA_LIKE


def test_set_chat_template_none_uses_tokenizers_own_or_errors(caplog):
    tok = build_tokenizer(None, corpus=["hi"])
    with pytest.raises(ChatTemplateError, match="no chat template"):
        T.set_chat_template(tok, None)
    tok.chat_template = LLAMA_LIKE
    with caplog.at_level(logging.INFO, logger="alignment.templates"):
        assert T.set_chat_template(tok, None) == LLAMA_LIKE
    assert "tokenizer's own" in caplog.text


def test_set_chat_template_missing_special_tokens():
    tok = build_tokenizer(None, corpus=[t for pair in TURNS for t in pair])
    n = len(tok)
    assert T.missing_special_tokens(tok, "chatml") == ["<|im_start|>", "<|im_end|>"]
    with pytest.raises(ChatTemplateError, match=r"missing from the tokenizer.s vocabulary.*add_chat_template_tokens"):
        T.set_chat_template(tok, "chatml")
    assert len(tok) == n
    T.set_chat_template(tok, "chatml", add_missing_tokens=True)
    assert len(tok) == n + 2 and T.missing_special_tokens(tok, "chatml") == []
    assert tok.convert_tokens_to_ids("<|im_end|>") in T._special_ids(tok)
    assert trained_segments(tok, T.tokenize_conversation(tok, chat())) == [a + "<|im_end|>" for _, a in TURNS]
    # zephyr needs no new tokens: its end-of-turn token is the tokenizer's eos
    assert T.missing_special_tokens(tok, "zephyr") == []
