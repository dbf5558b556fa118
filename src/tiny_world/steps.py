"""Step traces for value models (`scripts/run_value.py`): one-digit sums written one per line, some of them wrong.

    prompt  Add each pair: 3+4, 2+1, 4+4.
    steps   3+4=7 | 2+1=9 | 4+4=8        (the second sum is wrong)
    Q       +1    | -1    | -1           (a trace that went wrong cannot recover: later steps stay -1)

The trace is still correct after a step when that step's sum and every earlier one are right: decidable from the
text up to the end of the step, so the value read at the step's last token can learn it, but only by checking the
sum and remembering earlier mistakes (the third step above is right and still -1). Operands are 1-4 and a wrong sum
is one no such pair has (0, 1 or 9), so the check a tiny random model must learn in a CPU test is "is this sum
possible", not the whole addition table: it measures the value pipeline, not arithmetic.
"""

from __future__ import annotations

import random


def addition_trace(rng: random.Random, *, num_steps: int, error_rate: float) -> tuple[str, list[str], list[bool]]:
    """One trace: the prompt, its steps and, per step, whether the trace is still correct after it.

    With probability `error_rate` one step (chosen uniformly) states an impossible sum (0, 1 or 9).
    """
    pairs = [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(num_steps)]
    wrong_at = rng.randrange(num_steps) if rng.random() < error_rate else None
    steps = [f"{a}+{b}={rng.choice([0, 1, 9]) if i == wrong_at else a + b}" for i, (a, b) in enumerate(pairs)]
    still_correct = [wrong_at is None or i < wrong_at for i in range(num_steps)]
    prompt = f"Add each pair: {', '.join(f'{a}+{b}' for a, b in pairs)}."
    return prompt, steps, still_correct


def step_rows(
    n: int, seed: int, *, form: str = "rest", steps: tuple[int, int] = (2, 4), error_rate: float = 0.6
) -> list[dict]:
    """`n` step-trace rows for value training, in the ReST-MCTS* form or TRL's stepwise-supervision form.

    `form="rest"`: `{"prompt", "response": [{"step", "Q"}]}` with Q = +1 while the trace is correct and -1 from its
    first wrong step on. `form="stepwise"`: `{"prompt", "completions", "labels"}` with the same rule as booleans.
    `steps` is the inclusive range of steps per trace.
    """
    if form not in ("rest", "stepwise"):
        raise ValueError(f"form must be 'rest' or 'stepwise', got {form!r}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, texts, correct = addition_trace(rng, num_steps=rng.randint(*steps), error_rate=error_rate)
        if form == "rest":
            response = [{"step": s, "Q": 1.0 if c else -1.0} for s, c in zip(texts, correct, strict=True)]
            rows.append({"prompt": prompt, "response": response})
        else:
            rows.append({"prompt": prompt, "completions": texts, "labels": correct})
    return rows
