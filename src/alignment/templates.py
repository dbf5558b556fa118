"""Chat templates and exact SFT loss masks.

Templates ship as ``.jinja`` files in ``alignment/chat_templates`` and are chosen by name (``chatml``, ``zephyr``), by
path to a ``.jinja`` file, or left to the tokenizer (``None``).

The core is :func:`tokenize_conversation`: SFT trains on every assistant turn of a multi-turn chat -- the text the
model generates after the generation prompt, up to and including its end-of-turn token -- and on nothing else.
Most vendor templates have no ``{% generation %}`` markers (TRL refuses those), so the assistant spans are derived
from the template itself, never by searching the rendered text for role strings:

* for each assistant message ``i``, render ``P = messages[:i]`` with the generation prompt, ``F = messages[:i+1]``
  without it, and the full conversation ``R``; require ``P`` to be a prefix of ``F`` and ``F`` a prefix of ``R``
  (otherwise the template re-renders earlier turns or prefills the generation prompt with something the turn does
  not start with, and the mask cannot be derived: :class:`ChatTemplateError`, naming the turn);
* the assistant turn is ``R[len(P):len(F)]``;
* **span end rule**: trailing whitespace after the turn's last special token is template glue (the ``"\\n"`` after
  ``<|im_end|>``): the model stops at the end-of-turn token and never generates it, so it is not trained. The span
  must then end with a special token (the end-of-turn token); a turn that is closed only by the *next* message's
  header (GLM) has no end-of-turn token of its own and is refused;
* **token-boundary rule**: character spans are mapped to tokens of ``tokenizer(R, add_special_tokens=False)`` using
  the fast tokenizer's offsets, and every boundary is then verified by decoding: ``decode(ids[:k]) == R[:boundary]``.
  A boundary inside a token (or a tokenizer whose decode does not round-trip) is refused, never guessed.

Templates with ``{% generation %}`` markers use the marked spans (same span end rule and token-boundary checks); when
the prefix derivation also succeeds the two must agree. If a marker-free template is one of TRL's known vendor
templates and the derivation refuses it, TRL's training twin (same template plus markers) is used for that
conversation, but only if it renders exactly the same text.

Special tokens: a shipped template declares the special tokens it needs (``chatml``: ``<|im_start|>``,
``<|im_end|>``). :func:`set_chat_template` raises if they are missing from the vocabulary, unless
``add_missing_tokens=True``, in which case they are added as special tokens and the caller must resize the model's
embeddings (``model.resize_token_embeddings(len(tokenizer))``). ``zephyr`` needs none: its role markers are plain
text and its end-of-turn token is the tokenizer's ``eos_token``.

System prompts are kept. A template that cannot take a system role (Gemma: "System role not supported") is refused
with a clear error; it is not silently merged into the first user turn.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path

from jinja2 import TemplateError
from transformers import AddedToken

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

_TEMPLATE_DIR = "chat_templates"

# Special tokens each shipped template writes as single tokens (its end-of-turn token among them).
_SHIPPED_SPECIAL_TOKENS: dict[str, list[str]] = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "zephyr": [],
}

_GENERATION_MARKER_RE = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
_HAS_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")
# Literal `<|...|>` / `<｜...｜>` strings in a custom template: likely special tokens (only used for a warning).
_SPECIAL_LITERAL_RE = re.compile(r"<\|[^|<>\s]+\|>|<｜[^｜<>\s]+｜>")


class ChatTemplateError(ValueError):
    """A chat template cannot be used as asked (unknown, unrenderable, or no exact loss mask can be derived)."""


def list_chat_templates() -> list[str]:
    """Names of the templates shipped in ``alignment/chat_templates`` (file stems, sorted)."""
    root = resources.files("alignment").joinpath(_TEMPLATE_DIR)
    return sorted(p.name[: -len(".jinja")] for p in root.iterdir() if p.name.endswith(".jinja"))


def load_chat_template(name_or_path: str) -> str:
    """Return the source of a shipped template (by name) or of a ``.jinja`` file (by path).

    Raises:
        ChatTemplateError: the name is not shipped and is not an existing file (the message lists the valid names).
    """
    if name_or_path in list_chat_templates():
        return resources.files("alignment").joinpath(_TEMPLATE_DIR, f"{name_or_path}.jinja").read_text("utf-8")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ChatTemplateError(
        f"Unknown chat template {name_or_path!r}: not a shipped template and not a file. "
        f"Shipped templates: {', '.join(list_chat_templates())}; or give the path to a .jinja file."
    )


def missing_special_tokens(tokenizer, chat_template: str) -> list[str]:
    """Special tokens a shipped template needs (by name or by identical source) that the tokenizer lacks."""
    needed: list[str] = []
    for name, tokens in _SHIPPED_SPECIAL_TOKENS.items():
        if chat_template == name or chat_template == load_chat_template(name):
            needed = tokens
            break
    vocab = tokenizer.get_vocab()
    return [t for t in needed if t not in vocab]


def set_chat_template(tokenizer, chat_template: str | None, *, add_missing_tokens: bool = False) -> str:
    """Resolve ``chat_template``, set it as ``tokenizer.chat_template`` and return its source.

    Args:
        tokenizer: a (fast) Hugging Face tokenizer.
        chat_template: a shipped name (see :func:`list_chat_templates`), a path to a ``.jinja`` file, or ``None`` for
            the tokenizer's own template.
        add_missing_tokens: if the shipped template's special tokens are missing from the vocabulary, add them as
            special tokens instead of raising. The model's embeddings must then be resized
            (``model.resize_token_embeddings(len(tokenizer))``); :func:`missing_special_tokens` tells in advance.

    Raises:
        ChatTemplateError: ``None`` and the tokenizer has no template; unknown name; or missing special tokens.
    """
    if chat_template is None:
        source = tokenizer.chat_template
        if isinstance(source, dict):  # named variants: the default one is what apply_chat_template uses
            source = source.get("default")
        if not source:
            raise ChatTemplateError(
                "The tokenizer has no chat template; choose one in the recipe "
                f"(one of {', '.join(list_chat_templates())}, or a path to a .jinja file)."
            )
        logger.info("Using the tokenizer's own chat template.")
        tokenizer.chat_template = source
        return source

    source = load_chat_template(chat_template)
    missing = missing_special_tokens(tokenizer, source)
    if missing:
        if not add_missing_tokens:
            raise ChatTemplateError(
                f"Chat template {chat_template!r} needs special tokens missing from the tokenizer's vocabulary: "
                f"{missing}. Without them its end-of-turn token would be split into pieces and no exact loss mask "
                "exists. Set `add_chat_template_tokens: true` in the recipe to add them (the embeddings are resized), "
                "or pick another template."
            )
        new_tokens = [AddedToken(t, special=True, normalized=False) for t in missing]
        added = tokenizer.add_tokens(new_tokens, special_tokens=True)
        logger.warning(
            "Added %d special tokens for chat template %r: %s. Resize the model's embeddings to len(tokenizer)=%d.",
            added,
            chat_template,
            missing,
            len(tokenizer),
        )
    elif chat_template not in _SHIPPED_SPECIAL_TOKENS:
        vocab = tokenizer.get_vocab()
        unknown = sorted({t for t in _SPECIAL_LITERAL_RE.findall(source) if t not in vocab})
        if unknown:
            logger.warning(
                "Chat template %r writes strings that are not vocabulary tokens: %s", chat_template, unknown
            )
    logger.info("Using chat template %r.", chat_template)
    tokenizer.chat_template = source
    return source


def _template_of(tokenizer) -> str:
    source = tokenizer.chat_template
    if isinstance(source, dict):
        source = source.get("default")
    if not source:
        raise ChatTemplateError("The tokenizer has no chat template; call set_chat_template first.")
    return source


def _render(tokenizer, messages: list[dict], *, add_generation_prompt: bool, template_kwargs: dict | None) -> str:
    """Render exactly as inference does (``apply_chat_template(tokenize=False)``); errors become ChatTemplateError."""
    if not messages:
        raise ChatTemplateError("Cannot render an empty conversation (does it start with an assistant message?).")
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **(template_kwargs or {})
        )
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        roles = [m.get("role") for m in messages]
        hint = ""
        if "system" in str(err).lower():
            hint = (
                " The template does not support a system role: merge the system prompt into the first user turn "
                "in the data, or choose another template."
            )
        raise ChatTemplateError(
            f"The chat template failed to render messages with roles {roles} "
            f"(add_generation_prompt={add_generation_prompt}): {type(err).__name__}: {err}.{hint}"
        ) from err


def render_prompt(tokenizer, messages: list[dict], *, template_kwargs: dict | None = None) -> str:
    """The prompt turns rendered with the generation prompt: what the model sees before it answers."""
    return _render(tokenizer, messages, add_generation_prompt=True, template_kwargs=template_kwargs)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def _derive_spans(tokenizer, messages: list[dict], template_kwargs: dict | None) -> tuple[str, list[tuple[int, int]]]:
    """Assistant turns ``[start, end)`` of the full render, from renders of growing prefixes (glue included)."""
    full = _render(tokenizer, messages, add_generation_prompt=False, template_kwargs=template_kwargs)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:
            raise ChatTemplateError("Turn 0 is an assistant message: there is no prompt to derive its span from.")
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True, template_kwargs=template_kwargs)
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False, template_kwargs=template_kwargs)
        if not upto.startswith(prompt):
            at = _first_difference(prompt, upto)
            raise ChatTemplateError(
                f"Turn {i} (assistant): the render of messages[:{i + 1}] does not extend the render of messages[:{i}] "
                f"with the generation prompt; they differ at character {at}: {prompt[at : at + 40]!r} vs "
                f"{upto[at : at + 40]!r}. The template prefills the generation prompt with text the turn does not "
                "start with, or re-renders earlier turns; the loss mask cannot be derived (add {% generation %} "
                "markers or use another template)."
            )
        if not full.startswith(upto):
            at = _first_difference(upto, full)
            raise ChatTemplateError(
                f"Turn {i} (assistant): the template renders it differently once later messages follow; the render "
                f"of messages[:{i + 1}] and of the whole conversation differ at character {at}: "
                f"{upto[at : at + 40]!r} vs {full[at : at + 40]!r}. The template is not prefix-stable; the loss mask "
                "cannot be derived."
            )
        if len(upto) == len(prompt):
            raise ChatTemplateError(f"Turn {i} (assistant): the template renders nothing for this message.")
        text = _message_text(message).strip()
        if text and text not in upto[len(prompt) :]:
            raise ChatTemplateError(
                f"Turn {i} (assistant): the template does not render the message content verbatim in the turn "
                f"(rendered turn: {upto[len(prompt) :][:80]!r}); refusing to guess what the model should learn."
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def _marker_spans(tokenizer, messages: list[dict], template_kwargs: dict | None, template: str) -> tuple[str, list]:
    """Spans marked with ``{% generation %}`` in ``template``, rendered as apply_chat_template would."""
    from transformers.utils.chat_template_utils import render_jinja_template

    chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
    kwargs = {**tokenizer.special_tokens_map, **(template_kwargs or {})}
    try:
        rendered, indices = render_jinja_template(
            conversations=[chat], chat_template=template, return_assistant_tokens_mask=True, **kwargs
        )
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise ChatTemplateError(f"The marked chat template failed to render: {type(err).__name__}: {err}") from err
    spans = sorted((s, e) for s, e in indices[0] if e > s)
    merged: list[list[int]] = []
    for s, e in spans:  # adjacent or nested generation blocks form one span
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return rendered[0], [(s, e) for s, e in merged]


def _first_difference(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def _strip_glue(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Span end rule: drop trailing whitespace (template glue after the end-of-turn token) from each span."""
    out = []
    for s, e in spans:
        while e > s and text[e - 1].isspace():
            e -= 1
        out.append((s, e))
    return out


def _twin_for(template: str) -> str | None:
    """TRL's training twin (same template plus generation markers) of a known vendor template, if any."""
    try:
        from trl import chat_template_utils as ctu
    except ImportError:  # pragma: no cover - trl is a dependency
        return None
    for name in dir(ctu):
        if name.endswith("_chat_template") and not name.endswith("_training_chat_template"):
            if getattr(ctu, name) == template:
                return getattr(ctu, name.replace("_chat_template", "_training_chat_template"), None)
    return None


def _spans_from_markers(
    tokenizer, messages: list[dict], template_kwargs: dict | None, marked: str
) -> tuple[str, list[tuple[int, int]]]:
    """Assistant spans from a ``{% generation %}``-marked template, one per assistant message, checked and narrowed.

    The marked template must render the conversation exactly as the tokenizer's template does. Each marked span must
    follow its turn's generation prompt: ``render(messages[:i], add_generation_prompt=True)`` must be a prefix of the
    conversation (otherwise the model would be trained in a context it never sees at inference), and whatever the
    markers cover of that prompt (TRL's Qwen2.5 twin marks the ``"\\n"`` of ``<|im_start|>assistant\\n``) is not
    trained: the model is given the prompt, it does not generate it. The end of the span is the markers' end, minus
    trailing whitespace glue.
    """
    text, raw = _marker_spans(tokenizer, messages, template_kwargs, marked)
    full = _render(tokenizer, messages, add_generation_prompt=False, template_kwargs=template_kwargs)
    if text != full:
        raise ChatTemplateError("The {% generation %}-marked template renders this conversation differently.")
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if len(raw) != len(turns):
        raise ChatTemplateError(
            f"The {{% generation %}} markers give {len(raw)} spans for {len(turns)} assistant turns; cannot pair them."
        )
    spans = []
    for i, (start, end) in zip(turns, raw, strict=True):
        if i == 0:
            raise ChatTemplateError("Turn 0 is an assistant message: there is no prompt to train it after.")
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True, template_kwargs=template_kwargs)
        if not full.startswith(prompt):
            at = _first_difference(prompt, full)
            raise ChatTemplateError(
                f"Turn {i} (assistant): the prompt with the generation prompt is not a prefix of the conversation; "
                f"they differ at character {at}: {prompt[at : at + 40]!r} vs {full[at : at + 40]!r}. The template "
                "prefills the generation prompt with text the turn does not start with, or re-renders earlier turns."
            )
        if not start <= len(prompt) < end and not len(prompt) < start < end:
            raise ChatTemplateError(f"Turn {i} (assistant): the marked span does not follow the generation prompt.")
        start = max(start, len(prompt))
        text_i = _message_text(messages[i]).strip()
        if text_i and text_i not in full[start:end]:
            raise ChatTemplateError(f"Turn {i} (assistant): the marked span does not contain the message content.")
        spans.append((start, end))
    return full, _strip_glue(full, spans)


def assistant_spans(
    tokenizer, messages: list[dict], *, template_kwargs: dict | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans ``[start, end)`` the model must learn to generate.

    One span per assistant turn: what follows its generation prompt -- content and end-of-turn token(s) -- without
    the whitespace glue after the end-of-turn token. Derived from renders of growing prefixes; for a template with
    ``{% generation %}`` markers the marked spans are used (narrowed to what follows the generation prompt) and must
    agree with the derivation when it succeeds; for a marker-free template that TRL knows, its training twin is used
    when the derivation refuses, only if the twin renders the conversation identically.

    Raises:
        ChatTemplateError: the template cannot render the conversation, or no exact span can be derived.
    """
    template = _template_of(tokenizer)
    try:
        text, derived = _derive_spans(tokenizer, messages, template_kwargs)
        derived = _strip_glue(text, derived)
        derive_error = None
    except ChatTemplateError as err:
        derive_error = err
    if _HAS_GENERATION_RE.search(template):
        text, spans = _spans_from_markers(tokenizer, messages, template_kwargs, template)
        if derive_error is None and spans != derived:
            raise ChatTemplateError(
                f"The template's {{% generation %}} spans {spans} disagree with the spans {derived} derived from "
                "renders of growing prefixes; refusing to choose."
            )
        return text, spans
    if derive_error is None:
        return text, derived
    twin = _twin_for(template)
    if twin is None:
        raise derive_error
    try:
        text, spans = _spans_from_markers(tokenizer, messages, template_kwargs, twin)
    except ChatTemplateError as twin_error:
        raise ChatTemplateError(f"{derive_error} (TRL's training twin does not help: {twin_error})") from derive_error
    logger.debug("Prefix derivation refused (%s); using TRL's training twin, which renders identically.", derive_error)
    return text, spans


def _token_boundary(tokenizer, ids: list[int], offsets: list[tuple[int, int]], text: str, char: int) -> int:
    """Index ``k`` with ``ids[:k]`` exactly ``text[:char]``; ChatTemplateError if ``char`` is inside a token."""
    k = sum(1 for start, end in offsets if end <= char and not (start == end == char))
    # Zero-width tokens sitting exactly at the boundary belong after it.
    decoded = tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if decoded != text[:char]:
        raise ChatTemplateError(
            f"Character {char} ({text[max(0, char - 20) : char]!r} | {text[char : char + 20]!r}) is not a token "
            "boundary of the rendered conversation: a token straddles the generation prompt and the assistant turn "
            "(or the turn's end), so no exact loss mask exists."
        )
    return k


def tokenize_conversation(
    tokenizer, messages: list[dict], *, train_on_prompt: bool = False, template_kwargs: dict | None = None
) -> dict[str, list[int]]:
    """Tokenize a chat for SFT: ``{"input_ids", "labels"}`` with labels ``-100`` except on assistant turns.

    ``input_ids`` is ``tokenizer(rendered, add_special_tokens=False)`` of the full render -- exactly what inference
    sees (the template writes any BOS itself, so none is added twice). ``labels`` equals ``input_ids`` on every
    assistant turn's content and end-of-turn token (see :func:`assistant_spans`) and ``-100`` elsewhere;
    ``train_on_prompt=True`` trains every token. ``template_kwargs`` go to the template (e.g. ``enable_thinking``).

    Raises:
        ChatTemplateError: the template cannot render the conversation or no exact mask exists (see module docs).
        ValueError: no assistant message to train on (with ``train_on_prompt=False``), or a slow tokenizer.
    """
    if train_on_prompt:
        text = _render(tokenizer, messages, add_generation_prompt=False, template_kwargs=template_kwargs)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": list(ids), "labels": list(ids)}
    if not any(m.get("role") == "assistant" for m in messages):
        raise ValueError("The conversation has no assistant message: nothing to train on.")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Exact loss masks need a fast tokenizer (character offsets); got a slow one.")
    text, spans = assistant_spans(tokenizer, messages, template_kwargs=template_kwargs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    full_decode = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if full_decode != text:
        raise ChatTemplateError(
            "The tokenizer's decode does not reproduce the rendered text, so token boundaries cannot be verified; "
            "refusing to guess the loss mask."
        )
    special = _special_ids(tokenizer)
    labels = [IGNORE_INDEX] * len(ids)
    for turn, (start, end) in enumerate(spans):
        lo = _token_boundary(tokenizer, ids, offsets, text, start)
        hi = _token_boundary(tokenizer, ids, offsets, text, end)
        if hi <= lo:
            raise ChatTemplateError(f"Assistant span {turn} ({text[start:end]!r}) covers no token.")
        if ids[hi - 1] not in special:
            raise ChatTemplateError(
                f"Assistant span {turn} ends with {text[max(start, end - 30) : end]!r}, not with an end-of-turn "
                "special token: the template does not close assistant turns with their own end-of-turn token (e.g. "
                "it ends them with the next message's header), or that token is not a special token of this "
                "tokenizer. The "
                "model would never learn to stop; refusing."
            )
        labels[lo:hi] = ids[lo:hi]
    return {"input_ids": ids, "labels": labels}


def end_of_turn_token_ids(tokenizer) -> list[int]:
    """The token(s) that end an assistant turn under the tokenizer's chat template, for the generation config.

    Read from the mask itself: the last trained token of each assistant turn of a probe chat. Generation must stop
    there, or a model trained with `<|im_end|>` endings rambles on until the tokenizer's EOS.
    """
    probe = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    labels = tokenize_conversation(tokenizer, probe)["labels"]
    ends = [
        label
        for label, following in zip(labels, [*labels[1:], IGNORE_INDEX], strict=True)
        if label != IGNORE_INDEX and following == IGNORE_INDEX
    ]
    return list(dict.fromkeys(ends))


def split_prompt_completion(
    tokenizer, prompt: list[dict], completion: list[dict], *, template_kwargs: dict | None = None
) -> tuple[str, str]:
    """Render ``prompt`` (with the generation prompt) and the ``completion`` that follows it, for DPO/reward data.

    ``prompt_text + completion_text`` is the render of the whole conversation, and the completion ends at its last
    end-of-turn token (trailing glue dropped, as in SFT).

    Raises:
        ChatTemplateError: the full render does not extend the prompt render (prefilled generation prompt, ...).
    """
    prompt_text = render_prompt(tokenizer, prompt, template_kwargs=template_kwargs)
    full = _render(tokenizer, prompt + completion, add_generation_prompt=False, template_kwargs=template_kwargs)
    if not full.startswith(prompt_text):
        at = _first_difference(prompt_text, full)
        raise ChatTemplateError(
            f"The render of prompt + completion does not extend the prompt's render at character {at}: "
            f"{prompt_text[at : at + 40]!r} vs {full[at : at + 40]!r}."
        )
    return prompt_text, full[len(prompt_text) :].rstrip()


__all__ = [
    "IGNORE_INDEX",
    "ChatTemplateError",
    "assistant_spans",
    "end_of_turn_token_ids",
    "list_chat_templates",
    "load_chat_template",
    "missing_special_tokens",
    "render_prompt",
    "set_chat_template",
    "split_prompt_completion",
    "tokenize_conversation",
]
