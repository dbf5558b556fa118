"""Chat templates: shipped ``.jinja`` files chosen by name or path, set on the tokenizer, rendered as inference does.

Templates ship as ``.jinja`` files in ``alignment/chat/chat_templates`` and are chosen by name (``chatml``,
``zephyr``), by path to a ``.jinja`` file, or left to the tokenizer (``None``). Rendering is
``apply_chat_template(tokenize=False)``, exactly what inference renders; ``alignment.chat.turns`` turns renders into
the token ids every stage trains on.

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

from jinja2 import TemplateError, TemplateSyntaxError
from transformers import AddedToken

logger = logging.getLogger(__name__)

_TEMPLATE_DIR = "chat_templates"

# Special tokens each shipped template writes as single tokens (its end-of-turn token among them).
_SHIPPED_SPECIAL_TOKENS: dict[str, list[str]] = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama2": [],
    "mistral_instruct": [],
    "vicuna": [],
    "zephyr": [],
}

# Literal `<|...|>` / `<｜...｜>` strings in a custom template: likely special tokens (only used for a warning).
_SPECIAL_LITERAL_RE = re.compile(r"<\|[^|<>\s]+\|>|<｜[^｜<>\s]+｜>")


class ChatTemplateError(ValueError):
    """A chat template cannot be used as asked (unknown, unrenderable, or no exact token ids for a turn).

    `kind` is the stable class of the refusal ("history rewritten", "no end-of-turn token", ...): dropped rows are
    counted by it (`skip_invalid_rows`), as row problems are.
    """

    def __init__(self, message: str, kind: str = "template cannot render"):
        super().__init__(message)
        self.kind = kind

    @property
    def of_every_row(self) -> bool:
        """True when no row can render (the template itself is broken): never a row to drop or fix."""
        return self.kind == TEMPLATE_SYNTAX


TEMPLATE_SYNTAX = "template syntax error"


def list_chat_templates() -> list[str]:
    """Names of the templates shipped in ``alignment/chat/chat_templates`` (file stems, sorted)."""
    root = resources.files("alignment.chat").joinpath(_TEMPLATE_DIR)
    return sorted(p.name[: -len(".jinja")] for p in root.iterdir() if p.name.endswith(".jinja"))


def load_chat_template(name_or_path: str) -> str:
    """Return the source of a shipped template (by name) or of a ``.jinja`` file (by path).

    Raises:
        ChatTemplateError: the name is not shipped and is not an existing file (the message lists the valid names).
    """
    if name_or_path in list_chat_templates():
        return resources.files("alignment.chat").joinpath(_TEMPLATE_DIR, f"{name_or_path}.jinja").read_text("utf-8")
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


def render_chat(
    tokenizer, messages: list[dict], *, add_generation_prompt: bool, template_kwargs: dict | None = None
) -> str:
    """Render exactly as inference does (``apply_chat_template(tokenize=False)``); errors become ChatTemplateError."""
    if not messages:
        raise ChatTemplateError("Cannot render an empty conversation (does it start with an assistant message?).")
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **(template_kwargs or {})
        )
    except TemplateSyntaxError as err:
        raise ChatTemplateError(
            f"The chat template is not valid Jinja (line {err.lineno}: {err.message}): fix the template "
            "(`chat_template`), not the data.",
            kind=TEMPLATE_SYNTAX,
        ) from err
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
    return render_chat(tokenizer, messages, add_generation_prompt=True, template_kwargs=template_kwargs)


__all__ = [
    "ChatTemplateError",
    "list_chat_templates",
    "load_chat_template",
    "missing_special_tokens",
    "render_chat",
    "render_prompt",
    "set_chat_template",
]


def message_text(message: dict) -> str:
    """The text of a message's `content`: the string itself, or the text blocks of a content list joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""
