"""The multi-step task of the tiny world: chained additions, where every step can go wrong and search can help.

    prompt  Add 7, 5, 9 and 3.
    reply   7+5=12
            12+9=21
            21+3=24

Each step adds the next number to the running total, one step per line (the lines are the steps of the value data,
`alignment.value`), and the reply ends after the step that adds the last number. A chain has 3-5 steps (4-6
numbers). The rule `final_answer_is_correct` checks only the final answer, as ReST-MCTS*'s oracle does: the number
after the last `=` must be the sum of the prompt's numbers. `step_correctness` judges every step, for the initial
value traces and for measuring a value model on steps.

The numbers are 1-9 and the sums at most 54. The tiny policy of `recipes/tiny/rest_mcts/sft` is trained briefly so
that it still slips on some steps (adding the wrong number of the prompt, or misadding), which is what a search and
a value model have to catch; how often, per seed, is in `benchmarks/RESULTS.md` (the search section).
`largest_number` draws the numbers from a wider range, where the running totals carry more often; `num_train` makes
worked solutions scarcer than questions. The initial value traces err the ways the policy's first errors fall on its
own held-out chains (`erring_steps`): a wrong number, a misadd (a carry slip or off by 1-3), or a running total
restated wrong. Held-out prompts are chains that no training prompt has, and the self-training prompts
(`prompts/train`) chains that neither has, so that self-training finds solutions the dSFT data does not hold.

    chain_prompt, chain_steps     one chain's prompt and its correct steps
    final_answer_is_correct       the rule: the final answer alone (ReST-MCTS*'s oracle)
    step_correctness              each step, the numbers in the prompt's order (the initial value traces' labels)
    sound_in_any_order            each step, the numbers in any order (what a right final answer does not show)
    chain_rows                    SFT chats (`{"messages"}`) whose assistant reply is the steps
    value_rows                    initial value traces (ReST-MCTS* form, Q +1 while correct, -1 from the first error)
    prompt_rows                   prompts to search over (`{"prompt"}`)
    write_chain_data              all of them as train/test splits (`python -m tiny_world chains`)
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from tiny_world.build import write_jsonl_splits

LARGEST_NUMBER = 9  # the numbers of a chain are 1..LARGEST_NUMBER unless a caller asks for more
STEPS = (3, 5)  # inclusive range of steps per chain
_NUMBER = re.compile(r"-?\d+")


def chain_prompt(numbers: Sequence[int]) -> str:
    """`Add 7, 5, 9 and 3.`"""
    return f"Add {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}."


def prompt_numbers(prompt: str | list[dict[str, str]]) -> list[int]:
    """The numbers of a chain prompt (a string, or messages whose last user turn is the prompt)."""
    text = prompt if isinstance(prompt, str) else [m for m in prompt if m["role"] == "user"][-1]["content"]
    return [int(n) for n in _NUMBER.findall(text)]


def chain_steps(numbers: Sequence[int]) -> list[str]:
    """The correct steps: `total+next=new total`, one per number after the first."""
    steps, total = [], numbers[0]
    for number in numbers[1:]:
        steps.append(f"{total}+{number}={total + number}")
        total += number
    return steps


def _as_steps(steps_or_reply: str | Sequence[str]) -> list[str]:
    lines = steps_or_reply.split("\n") if isinstance(steps_or_reply, str) else list(steps_or_reply)
    return [line.strip() for line in lines if line.strip()]


def final_answer_is_correct(prompt: str | list[dict[str, str]], steps_or_reply: str | Sequence[str]) -> bool:
    """The rule: the number after the last `=` of the reply (a string, one step per line, or the list of steps) is
    the sum of the prompt's numbers. Only the final answer counts, as for ReST-MCTS*'s oracle; the steps are judged
    by `step_correctness`. Usable as `scripts/run_eval.py --rule tiny_world.chains:final_answer_is_correct`."""
    steps = _as_steps(steps_or_reply)
    if not steps or "=" not in steps[-1]:
        return False
    answer = steps[-1].rsplit("=", 1)[1].strip()
    return answer.lstrip("-").isdigit() and int(answer) == sum(prompt_numbers(prompt))


def step_correctness(prompt: str | list[dict[str, str]], steps: Sequence[str]) -> list[bool]:
    """Per step, whether the trace is still correct after it: this step and every earlier one is exactly the
    correct step (`chain_steps`: the numbers in the prompt's order), and the trace has not run past the last
    number. Stricter than the rule, which accepts the numbers added in any order."""
    correct = chain_steps(prompt_numbers(prompt))
    result, still = [], True
    for index, step in enumerate(steps):
        still = still and index < len(correct) and step.strip() == correct[index]
        result.append(still)
    return result


_STEP = re.compile(r"^(\d+)\+(\d+)=(\d+)$")


def sound_in_any_order(prompt: str | list[dict[str, str]], steps_or_reply: str | Sequence[str]) -> bool:
    """Whether every step is right with the prompt's numbers taken in some order: the first step adds two of them,
    each later one adds a number not yet used to the running total, every sum is exact, and every number is used.
    Looser than `step_correctness` (the prompt's order), stricter than `final_answer_is_correct`, which also passes
    a right sum reached through two slips that cancel (`3+5=8, 8+6=14, 14+7=21` for 3, 5, 6 and 8)."""
    unused = prompt_numbers(prompt)
    total = None
    for step in _as_steps(steps_or_reply):
        match = _STEP.match(step.replace(" ", ""))
        if match is None:
            return False
        left, number, result = map(int, match.groups())
        if total is None:  # the first step's left side is a number of the prompt too
            if left not in unused:
                return False
            unused.remove(left)
        elif left != total:
            return False
        if number not in unused or left + number != result:
            return False
        unused.remove(number)
        total = result
    return total is not None and not unused


def random_numbers(
    rng: random.Random, steps: tuple[int, int] = STEPS, largest: int = LARGEST_NUMBER
) -> tuple[int, ...]:
    """The numbers of one chain, each in 1..`largest`: `steps` gives the inclusive range of its step count."""
    return tuple(rng.choice(range(1, largest + 1)) for _ in range(rng.randint(*steps) + 1))


class ChainSplits(NamedTuple):
    """The chains of one world: `train` for dSFT and the initial value traces, `test` held out to measure search,
    `search` the self-training prompts (answers only: no SFT chat or value trace has their chains)."""

    train: list[tuple[int, ...]]
    test: list[tuple[int, ...]]
    search: list[tuple[int, ...]]


def split_chains(
    n_train: int, n_test: int, seed: int, largest: int = LARGEST_NUMBER, n_search: int = 0
) -> ChainSplits:
    """Train, held-out and self-training chains of numbers 1..`largest`, drawn with `seed`: no held-out or
    self-training chain is a training chain, and none is in both. They are drawn in that order (held-out, train,
    self-training) from one stream, so `n_search` leaves the other two unchanged."""
    rng = random.Random(seed)

    def unique(count: int, taken: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
        chains: list[tuple[int, ...]] = []
        while len(chains) < count:
            chain = random_numbers(rng, largest=largest)
            if chain not in taken:
                taken.add(chain)
                chains.append(chain)
        return chains

    test = unique(n_test, set())
    held_out, train = set(test), []
    while len(train) < n_train:  # training chains may repeat, as a corpus does
        chain = random_numbers(rng, largest=largest)
        if chain not in held_out:
            train.append(chain)
    return ChainSplits(train, test, unique(n_search, held_out | set(train)))


def chain_rows(chains: Sequence[Sequence[int]]) -> list[dict]:
    """SFT chats: the prompt as the user turn, the correct steps (one per line) as the assistant reply."""
    return [
        {
            "messages": [
                {"role": "user", "content": chain_prompt(numbers)},
                {"role": "assistant", "content": "\n".join(chain_steps(numbers))},
            ]
        }
        for numbers in chains
    ]


def erring_steps(
    numbers: Sequence[int], rng: random.Random, *, wrong_at: int | None, largest: int = LARGEST_NUMBER
) -> list[str]:
    """The chain's steps with step `wrong_at` wrong (None: no error), in one of the three ways the tiny policy's
    first errors fall on its own chains: it adds a wrong number; it misadds, by a carry slip (off by 10) or by 1-3;
    or it restates the running total wrong (off the same way) and adds on from there. Later steps go on correctly
    from the wrong total, as a policy that slipped once would, so the final answer is wrong too.

    The wrong number (1..`largest`) is one that the prompt does not still hold: adding a later number early is no
    error by the final-answer rule (the policy can add the skipped one after it, and the sum is the same), so such a
    step is not labelled -1 here.
    """
    steps, total = [], numbers[0]
    for index, number in enumerate(numbers[1:]):
        result = total + number
        if index == wrong_at:
            kind = rng.random()
            if kind < 0.4:
                number = rng.choice([n for n in range(1, largest + 1) if n not in numbers[index + 1 :]])
                result = total + number
            elif kind < 0.8:
                result = _slipped(result, rng)
            else:
                total = _slipped(total, rng)
                result = total + number
        steps.append(f"{total}+{number}={result}")
        total = result
    return steps


def _slipped(right: int, rng: random.Random) -> int:
    """`right` off by a carry slip (10) half the time, else by 1-3, and never below 0."""
    offset = 10 if rng.random() < 0.5 else rng.randint(1, 3)
    return right - offset if right - offset >= 0 and rng.random() < 0.5 else right + offset


def value_rows(
    chains: Sequence[Sequence[int]], seed: int, *, error_rate: float = 0.6, largest: int = LARGEST_NUMBER
) -> list[dict]:
    """Initial value traces in the ReST-MCTS* form: with probability `error_rate` one step (chosen uniformly) is
    off, and Q is +1 while the trace is correct and -1 from its first wrong step on (a trace that went wrong cannot
    recover), as `tiny_world.steps` writes them. A wrong number is drawn from 1..`largest`."""
    rng = random.Random(seed)
    rows = []
    for numbers in chains:
        wrong_at = rng.randrange(len(numbers) - 1) if rng.random() < error_rate else None
        steps = erring_steps(numbers, rng, wrong_at=wrong_at, largest=largest)
        q = [1.0 if wrong_at is None or index < wrong_at else -1.0 for index in range(len(steps))]
        rows.append(
            {
                "prompt": chain_prompt(numbers),
                "response": [{"step": step, "Q": value} for step, value in zip(steps, q, strict=True)],
            }
        )
    return rows


def prompt_rows(chains: Sequence[Sequence[int]]) -> list[dict]:
    """Prompts to search over, one `{"prompt"}` row each (the form `alignment.evaluation.prompts_from_rows` reads)."""
    return [{"prompt": chain_prompt(numbers)} for numbers in chains]


def write_chain_data(
    output_dir: str | Path,
    *,
    seed: int = 0,
    num_train: int = 2000,
    num_test: int = 200,
    num_search: int = 200,
    largest_number: int = LARGEST_NUMBER,
) -> Path:
    """Write under `output_dir`:

        sft/       chats whose reply is the correct steps (train, test)
        value/     initial value traces with per-step Q (train, test)
        prompts/   the prompts alone: `train` to search for self-training data, `test` held out to measure search

    `prompts/train` are `num_search` self-training chains whose gold steps no SFT chat or value trace holds (the
    ReST-MCTS* setting: a question and its answer, no solution), so the verified traces a search finds there are data
    the dSFT policy never saw, and `prompts/test` the held-out ones. The numbers are 1..`largest_number`: above 9 the
    running totals carry more often and the tiny policy errs on every step, not mostly on the last (see
    `benchmarks/RESULTS.md`).
    """
    if largest_number <= STEPS[1]:
        raise ValueError(
            f"`largest_number: {largest_number}`: must be at least {STEPS[1] + 1}, so that a wrong number outside "
            "the prompt's remaining numbers always exists."
        )
    output_dir = Path(output_dir)
    train, test, search = split_chains(num_train, num_test, seed, largest_number, n_search=num_search)
    write_jsonl_splits(output_dir / "sft", {"train": chain_rows(train), "test": chain_rows(test)})
    write_jsonl_splits(
        output_dir / "value",
        {
            "train": value_rows(train, seed + 1, largest=largest_number),
            "test": value_rows(test, seed + 2, largest=largest_number),
        },
    )
    write_jsonl_splits(output_dir / "prompts", {"train": prompt_rows(search), "test": prompt_rows(test)})
    return output_dir
