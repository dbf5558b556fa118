"""Verifiable rewards for real datasets: rules (`alignment.runtime.rules`) that check a reply against the reference
answer in its prompt's row, for `rewards: [{kind: rule, path: alignment.grpo.verifiers:<name>}]`.

GSM8K writes its reference as a worked solution ending in `#### 72`; open-r1's math rewards compare the reply's final
answer with it. `final_number_matches` is that check for numeric answers, written to be strict: the reply's last
number (thousands separators and a trailing period allowed) must equal the reference's final number.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> Fraction | None:
    """The last number written in `text` (after GSM8K's `####` when it has one), exactly; None when it has none."""
    text = text.rpartition("####")[2] if "####" in text else text
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return Fraction(numbers[-1].replace(",", ""))


def final_number_matches(prompt_messages: list[dict[str, str]], reply: str, answer: str) -> bool:
    """Whether the reply's last number equals the final number of the row's reference `answer` (GSM8K's `answer`
    column: a solution ending in `#### <number>`)."""
    expected = final_number(answer)
    return expected is not None and final_number(reply) == expected
