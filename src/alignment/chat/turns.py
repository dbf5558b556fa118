"""Assistant turns as token ids, exactly as inference feeds and generates them: what every stage trains on.

**The invariant.** For every assistant message ``i`` of a chat:

* its *prompt ids* are the ids inference feeds the model to generate it: ``render(messages[:i])`` with the generation
  prompt, tokenized as ``apply_chat_template(tokenize=True)`` tokenizes it (:func:`inference_ids`: no special tokens
  added; the template writes any BOS itself);
* its *reply ids* are the ids the model must generate after them: the turn's text (what the template renders for the
  message after the generation prompt, up to and including its end-of-turn token, without the whitespace glue after
  it) as the continuation of the prompt ids;
* a training sequence holding the turn starts with exactly its prompt ids, continues with exactly its reply ids, and
  trains those reply ids and nothing else.

Everything is proved on token ids, never by decoding: a tokenizer that inserts pieces (SentencePiece's lone ``"▁"``
after a special token in Mistral's and Llama-2's legacy form, whose decode does not give the text back) is fine
whenever the ids agree.

**Reply ids.** Normally ``inference_ids(prompt + reply)`` starts with the prompt ids and the reply ids are the rest.
When a token straddles the boundary (Qwen3.8's generation prompt ends with ``"\\n"`` and its turn starts with
``"\\n"``; a real BPE merges the two), the prompt ids stay the inference ids and the reply is tokenized on its own
after them, as generation produces it; that is accepted only when prompt ids + reply ids decode to the same text as
the tokenizer's own ids of prompt + reply.

**One sequence or several.** A chat is one training example when ``inference_ids(render(messages))`` starts with every
turn's prompt ids + reply ids. Templates that rewrite history break that: Qwen3 (and 3.5/3.6) drop earlier turns'
reasoning and give only the last turn an (empty) think block, DeepSeek-R1 strips reasoning from history, gpt-oss
ends the last turn with ``<|return|>`` and earlier ones with ``<|end|>``; and a straddling token re-tokenizes earlier
turns in later prompts. Then each assistant turn is trained in its own exact inference context (one example per
group of turns that do share one sequence), as chosen by ``history_rewrite``:

* ``"expand"`` (default): expand the chat into those examples;
* ``"last_turn"``: train only the last assistant turn, in its inference context;
* ``"refuse"``: refuse the chat.

**Tool use.** Only assistant messages are trained; ``tool`` messages are prompt context (`alignment.chat.tool_turns`).

A chat is refused (:class:`ChatTemplateError`, naming the turn and the template behaviour) only when no exact answer
exists: the template prefills the generation prompt with text the turn does not start with (DeepSeek-R1 opens
``<think>`` for a reply with no reasoning), renders nothing or not the message's content for the turn, closes the turn
without a special end-of-turn token of its own (the model would never learn to stop), or a straddled reply has no
tokenization that decodes to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from alignment.chat.templates import ChatTemplateError, message_text, render_chat, render_prompt
from alignment.chat.tool_turns import check_tool_calls_rendered, check_tool_context

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

HistoryRewrite = Literal["expand", "last_turn", "refuse"]
HISTORY_REWRITE_CHOICES = ("expand", "last_turn", "refuse")


@dataclass
class TurnIds:
    """One assistant turn as inference sees it: the prompt ids fed to the model and the reply ids it generates."""

    message_index: int
    prompt_ids: list[int]
    reply_ids: list[int]
    # True when the reply had to be tokenized on its own (a token of prompt + reply straddles their boundary).
    tokenized_apart: bool = False

    @property
    def sequence(self) -> list[int]:
        """``prompt_ids + reply_ids``: the shortest training sequence that holds this turn."""
        return self.prompt_ids + self.reply_ids


@dataclass
class ChatEncoding:
    """The training examples of one chat (``{"input_ids", "labels"}`` each) and how they were obtained."""

    examples: list[dict[str, list[int]]]
    # "exact": one sequence holds every turn; "expanded": several examples; "last_turn": earlier turns not trained.
    layout: Literal["exact", "expanded", "last_turn"]


def inference_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered chat text as inference tokenizes it.

    ``apply_chat_template(tokenize=True)`` (and so TRL, vLLM's chat path and ``generate`` on its output) calls the
    tokenizer with ``add_special_tokens=False``: the template writes BOS itself, so none is added twice.
    """
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of every special token (named ones and added tokens flagged special): the candidates for end of turn."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def _first_difference(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


_TWINS: dict[str, str | None] = {}


def training_twin(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """TRL's training version of the tokenizer's vendor template (`trl.chat_template_utils.get_training_chat_template`:
    the same template, patched to render what the model generates), or None when TRL has none."""
    # Imported here: TRL's chat_template_utils imports `datasets`, and a recipe's parse (which reads this module's
    # HISTORY_REWRITE_CHOICES) must not.
    from trl.chat_template_utils import get_training_chat_template

    source = tokenizer.chat_template
    if source not in _TWINS:
        try:
            _TWINS[source] = get_training_chat_template(tokenizer)
        except ValueError:  # TRL knows no training version of this template
            _TWINS[source] = None
    return _TWINS[source]


def _twin_reply(tokenizer, messages, i, prompt_text, twin, template_kwargs) -> str | None:
    """What the training twin renders for turn ``i`` after its own generation prompt, when that generation prompt is
    the vendor's (the twin may render history differently: the reply follows the vendor's inference prompt)."""
    kwargs = {**(template_kwargs or {}), "chat_template": twin}
    twin_prompt = render_chat(tokenizer, messages[:i], add_generation_prompt=True, template_kwargs=kwargs)
    twin_upto = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False, template_kwargs=kwargs)
    bare = render_chat(tokenizer, messages[:i], add_generation_prompt=False, template_kwargs=template_kwargs)
    twin_bare = render_chat(tokenizer, messages[:i], add_generation_prompt=False, template_kwargs=kwargs)
    same_generation_prompt = prompt_text[len(bare) :] == twin_prompt[len(twin_bare) :]
    if not (twin_upto.startswith(twin_prompt) and same_generation_prompt):
        return None
    return twin_upto[len(twin_prompt) :]


def _reply_text(tokenizer, messages: list[dict], i: int, prompt_text: str, template_kwargs: dict | None) -> str:
    """What the template renders for assistant message ``i`` after its generation prompt, end-of-turn included and
    the whitespace glue after it dropped (the model stops at the end-of-turn token and never generates the glue).

    When the vendor template's render of the turn does not extend its own generation prompt, TRL's training version
    of the template renders the turn instead, if that does extend it (the prompt stays the vendor's inference render).
    """
    upto = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False, template_kwargs=template_kwargs)
    twin = None if upto.startswith(prompt_text) else training_twin(tokenizer)
    if twin is not None:  # e.g. DeepSeek-R1 strips reasoning from every turn it renders; its twin keeps it
        twin_reply = _twin_reply(tokenizer, messages, i, prompt_text, twin, template_kwargs)
        if twin_reply is not None:
            upto = prompt_text + twin_reply
    if not upto.startswith(prompt_text):
        at = _first_difference(prompt_text, upto)
        raise ChatTemplateError(
            f"turn {i} (assistant): the template's generation prompt is not how it renders the turn: they differ at "
            f"character {at}, generation prompt {prompt_text[at : at + 40]!r} vs rendered turn "
            f"{upto[at : at + 40]!r}. "
            "The template prefills the generation prompt with text this reply does not start with (for example "
            "DeepSeek-R1 opens a <think> block: give the reply its reasoning, '<think>\\n...</think>' at the start of "
            "its content), so no reply ids follow the inference prompt exactly.",
            kind="generation prompt prefilled",
        )
    reply = upto[len(prompt_text) :].rstrip()
    if not reply:
        raise ChatTemplateError(f"turn {i} (assistant): the template renders nothing for this message.", "empty turn")
    content = message_text(messages[i]).strip()
    if content and content.split("</think>")[-1].strip() not in reply:
        raise ChatTemplateError(
            f"turn {i} (assistant): the template does not render the message content verbatim in the turn (rendered "
            f"turn: {reply[:80]!r}); refusing to guess what the model should learn.",
            kind="content not rendered",
        )
    check_tool_calls_rendered(reply, messages[i], i)
    return reply


def continuation_ids(
    tokenizer: PreTrainedTokenizerBase, prefix_ids: list[int], prefix_text: str, text: str, where: str
) -> tuple[list[int], bool]:
    """``(ids, tokenized_apart)``: the ids that follow ``prefix_ids`` (the ids of ``prefix_text``) for ``text``.

    The continuation of ``prefix_ids`` in ``inference_ids(prefix_text + text)`` when they are its prefix; otherwise
    (a token straddles the boundary) ``text`` tokenized on its own, as generation appends it, accepted only when
    ``prefix_ids`` + those ids decode to the same text as the tokenizer's own ids of the whole (nothing inserted or
    changed where the pieces meet; a normalizer, such as NFKC, applies alike to both).

    Raises:
        ChatTemplateError: neither gives ids for ``text`` after the prefix (names ``where``).
    """
    joint = inference_ids(tokenizer, prefix_text + text)
    if joint[: len(prefix_ids)] == prefix_ids:
        ids, apart = joint[len(prefix_ids) :], False
    else:
        ids, apart = inference_ids(tokenizer, text), True
        appended, whole = (
            tokenizer.decode(sequence, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for sequence in (prefix_ids + ids, joint)
        )
        if appended != whole:
            raise ChatTemplateError(
                f"{where}: a token straddles the boundary ({prefix_text[-20:]!r} | {text[:20]!r}), and the text "
                f"tokenized on its own after the prefix does not read as the whole does ({appended[-40:]!r} vs "
                f"{whole[-40:]!r}: the tokenizer inserts or changes text at a sequence start), so no token ids follow "
                "the inference ids exactly.",
                kind="token straddles a boundary",
            )
    if not ids:
        raise ChatTemplateError(f"{where}: {text[:40]!r} covers no token.", "no tokens")
    return ids, apart


def reply_ids_after(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], prompt_text: str, reply_text: str, where: str
) -> tuple[list[int], bool]:
    """``continuation_ids`` of an assistant reply, whose last id must be a special token: the end of turn.

    Raises:
        ChatTemplateError: no exact reply ids, or the reply does not end with a special end-of-turn token.
    """
    reply_ids, apart = continuation_ids(tokenizer, prompt_ids, prompt_text, reply_text, where)
    if reply_ids[-1] not in special_token_ids(tokenizer):
        raise ChatTemplateError(
            f"{where}: the reply ends with {reply_text[-30:]!r}, not with an end-of-turn special token: the template "
            "does not close assistant turns with their own end-of-turn token (it ends them with the next message's "
            "header), or that token is not a special token of this tokenizer. The model would never learn to stop.",
            kind="no end-of-turn token",
        )
    return reply_ids, apart


def assistant_turns(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, template_kwargs: dict | None = None
) -> list[TurnIds]:
    """Every assistant turn of ``messages`` in its exact inference context (see the module doc).

    Raises:
        ChatTemplateError: the template cannot render the chat, or a turn has no exact answer (names the turn).
    """
    turns = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:
            raise ChatTemplateError(
                "turn 0 is an assistant message: there is no prompt to train it after.", "no prompt"
            )
        prompt_text = render_prompt(tokenizer, messages[:i], template_kwargs=template_kwargs)
        check_tool_context(prompt_text, messages[:i], template_kwargs, f"turn {i} (assistant)")
        prompt_ids = inference_ids(tokenizer, prompt_text)
        reply_text = _reply_text(tokenizer, messages, i, prompt_text, template_kwargs)
        reply_ids, apart = reply_ids_after(tokenizer, prompt_ids, prompt_text, reply_text, f"turn {i} (assistant)")
        turns.append(TurnIds(i, prompt_ids, reply_ids, apart))
    return turns


def _labelled(sequence: list[int], turns: list[TurnIds]) -> dict[str, list[int]]:
    labels = [IGNORE_INDEX] * len(sequence)
    for turn in turns:
        start = len(turn.prompt_ids)
        labels[start : start + len(turn.reply_ids)] = turn.reply_ids
    return {"input_ids": sequence, "labels": labels}


def _starts_with(sequence: list[int], prefix: list[int]) -> bool:
    return sequence[: len(prefix)] == prefix


def _why_not_one_sequence(tokenizer, messages, turns, full_ids, template_kwargs) -> str:
    """Which turn breaks the single sequence, and how (for messages and `inspect`)."""
    turn = next(t for t in turns if not _starts_with(full_ids, t.sequence))
    upto = render_chat(
        tokenizer, messages[: turn.message_index + 1], add_generation_prompt=False, template_kwargs=template_kwargs
    )
    full = render_chat(tokenizer, messages, add_generation_prompt=False, template_kwargs=template_kwargs)
    where = f"turn {turn.message_index} (assistant)"
    if not full.startswith(upto.rstrip()):
        at = _first_difference(upto, full)
        return (
            f"{where}: the template renders it differently once later messages follow (it rewrites history: "
            f"{upto[at : at + 40]!r} vs {full[at : at + 40]!r} at character {at})"
        )
    return f"{where}: a later prompt re-tokenizes this turn (a token straddles the boundary of its reply)"


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    *,
    history_rewrite: HistoryRewrite = "expand",
    train_on_prompt: bool = False,
    template_kwargs: dict | None = None,
) -> ChatEncoding:
    """The SFT examples of one chat: every assistant turn trained once, each in its exact inference context.

    One example (``inference_ids`` of the whole render, every reply labelled) when one sequence holds every turn;
    otherwise as ``history_rewrite`` says (module doc). ``train_on_prompt=True`` trains every token of the whole
    render instead (one example; no mask to derive).

    Raises:
        ChatTemplateError: no exact answer exists for a turn, or ``history_rewrite="refuse"`` and one sequence cannot
            hold every turn (names the turn and the template behaviour).
        ValueError: no assistant message to train on.
    """
    full_text = render_chat(tokenizer, messages, add_generation_prompt=False, template_kwargs=template_kwargs)
    full_ids = inference_ids(tokenizer, full_text)
    if train_on_prompt:
        return ChatEncoding([{"input_ids": full_ids, "labels": list(full_ids)}], "exact")
    if not any(m.get("role") == "assistant" for m in messages):
        raise ValueError("The conversation has no assistant message: nothing to train on.")
    turns = assistant_turns(tokenizer, messages, template_kwargs=template_kwargs)
    # The latest untrained turn opens an example; every earlier untrained turn its sequence also holds joins it.
    examples, pending = [], list(turns)
    while pending:
        head = pending.pop()
        sequence = full_ids if _starts_with(full_ids, head.sequence) else head.sequence
        members = [head] + [turn for turn in pending if _starts_with(sequence, turn.sequence)]
        pending = [turn for turn in pending if turn not in members]
        examples.append(_labelled(sequence, members))
    if len(examples) == 1:
        return ChatEncoding(examples, "exact")
    if history_rewrite == "refuse":
        reason = _why_not_one_sequence(tokenizer, messages, turns, full_ids, template_kwargs)
        raise ChatTemplateError(
            f"{reason}; no single token sequence trains every turn in its inference context. Set "
            "`history_rewrite: expand` to train each turn in its own example, or `last_turn` to train the last only.",
            kind="history rewritten",
        )
    if history_rewrite == "last_turn":
        return ChatEncoding(examples[:1], "last_turn")
    return ChatEncoding(examples[::-1], "expanded")


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    *,
    train_on_prompt: bool = False,
    template_kwargs: dict | None = None,
) -> dict[str, list[int]]:
    """The chat as ONE training sequence ``{"input_ids", "labels"}``, labels ``-100`` except on assistant replies.

    For callers that need one sequence per chat (evaluation, statistics); training uses :func:`encode_chat`, which
    expands chats that one sequence cannot hold.

    Raises:
        ChatTemplateError: no exact mask in one sequence (see :func:`encode_chat` with ``history_rewrite="refuse"``).
        ValueError: no assistant message to train on (with ``train_on_prompt=False``).
    """
    encoding = encode_chat(
        tokenizer, messages, history_rewrite="refuse", train_on_prompt=train_on_prompt, template_kwargs=template_kwargs
    )
    return encoding.examples[0]


def end_of_turn_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token(s) that end an assistant turn under the tokenizer's chat template, for the generation config.

    Read from the replies themselves: the last reply id of each assistant turn of a probe chat. Generation must stop
    there, or a model trained with `<|im_end|>` endings rambles on until the tokenizer's EOS.
    """
    probe = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    return list(dict.fromkeys(turn.reply_ids[-1] for turn in assistant_turns(tokenizer, probe)))


@dataclass
class PromptReplyIds:
    """A prompt and replies to it as ids: ``prompt_ids`` (inference ids) and one reply-id list per reply."""

    prompt_ids: list[int]
    replies: list[list[int]]


def encode_prompt_replies(
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[dict],
    replies: list[dict],
    *,
    template_kwargs: dict | None = None,
) -> PromptReplyIds:
    """Preference and reward data: the prompt's inference ids, then each reply's ids after them (the invariant).

    A pair's prompt is whatever the template renders for inference, so earlier turns need not be prefix-stable: only
    each reply must follow the prompt exactly.

    Raises:
        ChatTemplateError: a reply has no exact ids after the prompt (names the reply).
    """
    prompt_text = render_prompt(tokenizer, prompt, template_kwargs=template_kwargs)
    prompt_ids = inference_ids(tokenizer, prompt_text)
    out = []
    for number, reply in enumerate(replies):
        messages = [*prompt, reply]
        reply_text = _reply_text(tokenizer, messages, len(prompt), prompt_text, template_kwargs)
        ids, _ = reply_ids_after(tokenizer, prompt_ids, prompt_text, reply_text, f"reply {number}")
        out.append(ids)
    return PromptReplyIds(prompt_ids, out)


__all__ = [
    "HISTORY_REWRITE_CHOICES",
    "IGNORE_INDEX",
    "ChatEncoding",
    "PromptReplyIds",
    "TurnIds",
    "assistant_turns",
    "continuation_ids",
    "encode_chat",
    "encode_prompt_replies",
    "end_of_turn_token_ids",
    "inference_ids",
    "reply_ids_after",
    "special_token_ids",
    "tokenize_conversation",
]
