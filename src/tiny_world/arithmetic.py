"""The chat task of the tiny world: two-digit addition inside a short multi-turn chat, and the rule that grades it.

Here are the chats (`arithmetic_rows`), the careless teacher's style flaw (`STYLE_FLAW`, `with_style_flaw`), the
preference pairs built from them (`preference_rows`) and the rule a reply must meet (`answer_is_correct`), the one
`scripts/run_eval.py` takes as `--rule tiny_world.arithmetic:answer_is_correct`, with the arithmetic alone
(`sum_is_correct`) as its `--extra_rules`. Train and held-out chats draw their operands from disjoint pairs
(`operand_pairs`).
"""

from __future__ import annotations

import random
import re

SYSTEM_PROMPT = "You are a friendly calculator."
GREETINGS = {
    "hi": "Hi! Send me a sum and I will add it.",
    "hello there": "Hello! Send me a sum and I will add it.",
    "good morning": "Good morning! Send me a sum and I will add it.",
    "hey, can you help me?": "Sure! Send me a sum and I will add it.",
}
QUESTIONS = ["What is {a}+{b}?", "{a}+{b}=?", "Please add {a}+{b}.", "Can you compute {a}+{b}?"]


def operand_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All two-digit operand pairs, split 90/10 into train and held-out pairs (disjoint)."""
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(pairs)
    cut = len(pairs) // 10
    return pairs[cut:], pairs[:cut]


def arithmetic_chat(a: int, b: int, rng: random.Random) -> list[dict[str, str]]:
    """One chat: optional system prompt, a greeting exchange, then the sum."""
    greeting = rng.choice(list(GREETINGS))
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if rng.random() < 0.5 else []
    messages += [
        {"role": "user", "content": greeting},
        {"role": "assistant", "content": GREETINGS[greeting]},
        {"role": "user", "content": rng.choice(QUESTIONS).format(a=a, b=b)},
        {"role": "assistant", "content": f"{a}+{b}={a + b}"},
    ]
    return messages


def arithmetic_rows(pairs: list[tuple[int, int]], n: int, seed: int) -> list[dict]:
    """`n` chat rows (`{"messages"}`), operands drawn from `pairs`."""
    rng = random.Random(seed)
    return [{"messages": arithmetic_chat(*rng.choice(pairs), rng)} for _ in range(n)]


def text_rows(rows: list[dict]) -> list[dict]:
    """The chats as raw-text documents (`{"text"}`), the pt stage's data: each chat's turns one line each, no roles."""
    return [{"text": "\n".join(message["content"] for message in row["messages"])} for row in rows]


# A flaw a careless teacher adds to its answers: the sum stays right, the reply breaks the "nothing else" rule.
STYLE_FLAW = " lol!!"


def with_style_flaw(rows: list[dict], share: float, seed: int) -> list[dict]:
    """The chats as a careless teacher writes them: `STYLE_FLAW` appended to the final answer of exactly
    `round(share * len(rows))` rows, chosen by `seed`. Returns new rows; `rows` is left as it was."""
    flawed = set(random.Random(seed).sample(range(len(rows)), round(share * len(rows))))
    result = []
    for index, row in enumerate(rows):
        messages = [dict(m) for m in row["messages"]]
        if index in flawed:
            messages[-1]["content"] += STYLE_FLAW
        result.append({"messages": messages})
    return result


def wrong_answer(a: int, b: int, rng: random.Random, rejection: str) -> str:
    """A rejected reply: the sum off by one (`off_by_one`) or the right sum with the style flaw (`style_flaw`)."""
    if rejection == "off_by_one":
        return f"{a}+{b}={a + b + rng.choice([-1, 1])}"
    if rejection == "style_flaw":
        return f"{a}+{b}={a + b}{STYLE_FLAW}"
    raise ValueError(f"rejection must be 'off_by_one' or 'style_flaw', got {rejection!r}")


def preference_rows(pairs: list[tuple[int, int]], n: int, seed: int, *, rejection: str = "off_by_one") -> list[dict]:
    """TRL conversational preference rows: the chat up to the sum question, the correct sum as `chosen` and a
    `wrong_answer` as `rejected`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(pairs)
        chat = arithmetic_chat(a, b, rng)
        rows.append(
            {
                "prompt": chat[:-1],
                "chosen": [chat[-1]],
                "rejected": [{"role": "assistant", "content": wrong_answer(a, b, rng, rejection)}],
            }
        )
    return rows


def unpaired_rows(pairs: list[dict], desirable_share: float, seed: int) -> list[dict]:
    """TRL unpaired (KTO) rows from `preference_rows`: one reply per prompt, the chosen one labelled desirable on
    exactly `round(desirable_share * len(pairs))` rows chosen by `seed`, the rejected one undesirable on the rest."""
    desirable = set(random.Random(seed).sample(range(len(pairs)), round(desirable_share * len(pairs))))
    return [
        {
            "prompt": pair["prompt"],
            "completion": pair["chosen" if index in desirable else "rejected"],
            "label": index in desirable,
        }
        for index, pair in enumerate(pairs)
    ]


def asked_operands(prompt_messages: list[dict[str, str]]) -> tuple[int, int]:
    """The two operands of the sum that the last user turn asks for."""
    a, b = map(int, re.findall(r"\d+", prompt_messages[-1]["content"])[:2])
    return a, b


def answer_is_correct(prompt_messages: list[dict[str, str]], answer: str) -> bool:
    """The rule: the answer states `a+b=<the true sum>` for the operands of the last user turn, and nothing else."""
    a, b = asked_operands(prompt_messages)
    return answer.strip() == f"{a}+{b}={a + b}"


def answer_is_clean(prompt_messages: list[dict[str, str]], answer: str) -> bool:
    """The style alone: the answer is `a+b=<a number>` for the asked operands and nothing else (no style flaw, the
    format intact), whatever the sum."""
    a, b = asked_operands(prompt_messages)
    return re.fullmatch(rf"{a}\+{b}=\d+", answer.strip()) is not None


def sum_is_correct(prompt_messages: list[dict[str, str]], answer: str) -> bool:
    """The arithmetic alone: the answer starts with `a+b=<the true sum>`, whatever follows (the style flaw or any
    other tail). Where `answer_is_correct` fails and this holds, the reply broke style, not the sum."""
    a, b = asked_operands(prompt_messages)
    stated = re.match(rf"{a}\+{b}=(\d+)", answer.strip())
    return stated is not None and int(stated.group(1)) == a + b
