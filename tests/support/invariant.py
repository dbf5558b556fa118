"""An independent check of the token invariant (`alignment.chat.turns`), written from `apply_chat_template` alone.

For every trained run of every example: the ids before it are exactly what `apply_chat_template(messages[:i],
add_generation_prompt=True, tokenize=True)` gives for one assistant turn `i` (the ids inference feeds the model); the
run is exactly that turn's reply ids (the continuation of those ids in the tokenization of prompt + reply, or the
reply tokenized on its own where a token straddles the two; the reply as TRL's training twin renders it where the
vendor template drops what the turn generates); it ends with a special token; labels equal ids there and
are -100 everywhere else; and every assistant turn is trained exactly once over the chat's examples (the last at
least, with `last_turn`). An "exact" chat is one example: the whole chat's `apply_chat_template` ids, or the last
turn's prompt and reply ids when that reply had to be tokenized apart.
"""

from __future__ import annotations

from trl.chat_template_utils import get_training_chat_template

from alignment.chat.turns import IGNORE_INDEX, ChatEncoding


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """`[start, end)` of each run of consecutive trained positions."""
    runs, start = [], None
    for position, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, position))
            start = None
    return runs


def special_ids(tok) -> set[int]:
    ids = set(tok.all_special_ids)
    ids.update(i for i, token in tok.added_tokens_decoder.items() if token.special)
    return ids


def expected_turn(tok, messages: list[dict], index: int, template_kwargs: dict | None = None) -> tuple[list, list]:
    """`(prompt_ids, reply_ids)` of assistant message `index`, from `apply_chat_template` and the tokenizer."""
    kwargs = template_kwargs or {}
    prompt_ids = list(
        tok.apply_chat_template(
            messages[:index], add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs
        )
    )
    prompt_text = tok.apply_chat_template(messages[:index], add_generation_prompt=True, tokenize=False, **kwargs)
    upto = tok.apply_chat_template(messages[: index + 1], tokenize=False, **kwargs)
    if upto.startswith(prompt_text):
        reply = upto[len(prompt_text) :].rstrip()
    else:  # the vendor template drops what the turn generates (DeepSeek-R1's reasoning): TRL's training twin has it
        twin = get_training_chat_template(tok)
        twin_prompt = tok.apply_chat_template(
            messages[:index], add_generation_prompt=True, tokenize=False, chat_template=twin, **kwargs
        )
        twin_upto = tok.apply_chat_template(messages[: index + 1], tokenize=False, chat_template=twin, **kwargs)
        assert twin_upto.startswith(twin_prompt), "a turn the library accepted must extend its generation prompt"
        reply = twin_upto[len(twin_prompt) :].rstrip()
    joint = tok(prompt_text + reply, add_special_tokens=False)["input_ids"]
    reply_ids = (
        joint[len(prompt_ids) :]
        if joint[: len(prompt_ids)] == prompt_ids
        else tok(reply, add_special_tokens=False)["input_ids"]
    )
    return prompt_ids, list(reply_ids)


def check_invariant(tok, messages: list[dict], encoding: ChatEncoding, *, template_kwargs: dict | None = None) -> None:
    """Assert the invariant (module doc) for `encoding`, the library's examples of `messages`."""
    turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    expected = {i: expected_turn(tok, messages, i, template_kwargs) for i in turns}
    special = special_ids(tok)
    trained: dict[int, int] = {i: 0 for i in turns}
    for example in encoding.examples:
        ids, labels = example["input_ids"], example["labels"]
        assert len(ids) == len(labels)
        for start, end in trained_runs(labels):
            assert labels[start:end] == ids[start:end]
            owners = [i for i in turns if expected[i][0] == ids[:start]]
            assert len(owners) == 1, f"the ids before trained run {start}:{end} are no turn's inference prompt"
            owner = owners[0]
            assert ids[start:end] == expected[owner][1], f"turn {owner}: trained ids are not its reply ids"
            assert ids[end - 1] in special, f"turn {owner}: the reply does not end with a special token"
            trained[owner] += 1
    if encoding.layout == "last_turn":
        assert trained[turns[-1]] == 1
    else:
        assert trained == {i: 1 for i in turns}, f"turns trained {trained}, expected each once"
    if encoding.layout == "exact":
        # One example: the whole chat's ids, or (when the last reply is tokenized apart) its last turn's sequence.
        whole = tok.apply_chat_template(messages, tokenize=True, return_dict=False, **(template_kwargs or {}))
        last_prompt, last_reply = expected[turns[-1]]
        assert len(encoding.examples) == 1
        assert encoding.examples[0]["input_ids"] in (list(whole), last_prompt + last_reply)
