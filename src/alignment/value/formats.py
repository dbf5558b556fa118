"""The value row forms and their readers, each reading a row into one `StepTrace`, the common form of a trace.

Four forms are accepted, one per dataset (`alignment.value` describes each with an example row): ReST-MCTS*'s
`response: [{step, Q}]`, the same list as JSON inside one assistant message (LLaMA-Factory v0.6.1, as the authors
trained on it), TRL's stepwise supervision, and ReST-MCTS*'s released value data `{prompt_answer, label}`. `FORMS`
lists them with the columns that identify each; `alignment.value.rows.to_trace` picks a row's form by its columns
and calls that reader. Every reader checks its form strictly and answers a `RowProblem` (a stable `kind` plus a
message naming what was found) rather than repairing a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from alignment.chat.turns import IGNORE_INDEX
from alignment.data.rows import RowProblem, clip, conversation_problem, describe

# Q at every position that is not a step's last token: the Trainer's own padding value (see `alignment.value`). In a
# `StepTrace` it marks a step without a value target (the released form's earlier steps).
Q_IGNORE = float(IGNORE_INDEX)

# ReST-MCTS*'s value prompt, `prefix + question + separator + steps`, in its two languages: `MCTS_Task.get_step_value`
# scores `'Problem: ' + question + '\nSolution:\n' + y` (Chinese: `'问题:' + question + '\n步骤:\n' + '【答案】' + y`),
# and `utils/extract_both_samples.py` writes the training rows as `'Problem:' + content + '\nSolution:\n' + steps`.
RELEASED_LAYOUTS = (("Problem:", "\nSolution:\n"), ("问题:", "\n步骤:\n【答案】"))


@dataclass
class StepTrace:
    """One row in the common form: prompt turns, step texts, one Q per step (`Q_IGNORE`: no target for that step),
    and whether the trace is SFT data."""

    prompt: list[dict[str, str]]
    steps: list[str]
    q: list[float]
    positive: bool


def read_response_row(row: dict) -> StepTrace | RowProblem:
    """A ReST-MCTS* row (`response: [{step, Q}]`) or a LLaMA-Factory one (`response`: one assistant message whose
    content is that list as JSON): the same trace either way, positive when the final Q is exactly 1."""
    prompt = _prompt(row)
    if isinstance(prompt, RowProblem):
        return prompt
    response = row["response"]
    if isinstance(response, list) and response and isinstance(response[0], dict) and "role" in response[0]:
        items, where = _llama_factory_steps(response), "response[0].content[{}]"
    else:
        items, where = response, "response[{}]"
    if isinstance(items, RowProblem):
        return items
    if not isinstance(items, list) or not items:
        return RowProblem("malformed response", "response must be a non-empty list of {step, Q}")
    steps, q = [], []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "step" not in item or "Q" not in item:
            return RowProblem(
                "malformed step", f"{where.format(index)} is not a dict with 'step' and 'Q': {describe(item)}"
            )
        steps.append(item["step"])
        q.append(item["Q"])
    problem = _steps_problem(steps, q, where)
    if problem is not None:
        return problem
    return StepTrace(prompt=prompt, steps=[s.strip() for s in steps], q=[float(v) for v in q], positive=q[-1] == 1)


def read_stepwise_row(row: dict) -> StepTrace | RowProblem:
    """A TRL stepwise-supervision row: Q +1 for a true label, -1 for a false one; positive when every label is true."""
    prompt = _prompt(row)
    if isinstance(prompt, RowProblem):
        return prompt
    steps, labels = row.get("completions"), row.get("labels")
    if not isinstance(steps, list) or not steps or not isinstance(labels, list):
        return RowProblem("malformed completions", "completions and labels must be lists, completions non-empty")
    if len(labels) != len(steps):
        return RowProblem(
            "label count", f"{len(steps)} completions but {len(labels)} labels: one boolean per step is needed"
        )
    if not all(isinstance(label, bool) for label in labels):
        return RowProblem("non-boolean label", f"labels must be true/false, got {labels}")
    q = [1.0 if label else -1.0 for label in labels]
    problem = _steps_problem(steps, q, "completions[{}]")
    if problem is not None:
        return problem
    return StepTrace(prompt=prompt, steps=[s.strip() for s in steps], q=q, positive=all(labels))


def _llama_factory_steps(response: list) -> Any:
    """The parsed step list of a LLaMA-Factory response (one assistant message, content a JSON list of {step, Q}),
    checked as the ReST-MCTS* list by the caller; a `RowProblem` when the message or its JSON is not that."""
    if len(response) != 1:
        return RowProblem(
            "malformed response",
            f"response holds {len(response)} messages; the LLaMA-Factory form has exactly one assistant message whose "
            "content is a JSON list of {step, Q}",
        )
    role, content = response[0].get("role"), response[0].get("content")
    if role != "assistant":
        return RowProblem("malformed response", f"response[0] role is {role!r}, expected 'assistant'")
    if not isinstance(content, str):
        return RowProblem("malformed response", f"response[0] content is {describe(content)}, expected a JSON string")
    try:
        items = json.loads(content)
    except json.JSONDecodeError as err:
        return RowProblem(
            "invalid step JSON",
            f"response[0].content is not valid JSON ({err.msg} at character {err.pos}): {clip(content)}",
        )
    if not isinstance(items, list) or not items:
        return RowProblem(
            "malformed response",
            f"response[0].content is JSON {describe(items)}, expected a non-empty list of {{step, Q}}",
        )
    return items


def read_released_row(row: dict) -> StepTrace | RowProblem:
    """A released ReST-MCTS* row: `prompt_answer` split at its layout's separator into the question (one user turn)
    and the partial solution's steps, one per non-blank line; `label`, the partial solution's value, is the Q of its
    last step, the earlier steps carry none. Positive only when `label` is exactly 1 (see `alignment.value`)."""
    missing = [column for column in ("prompt_answer", "label") if column not in row]
    if missing:
        return RowProblem(
            "missing column",
            f"no {missing[0]!r} column: the released ReST-MCTS* form has `prompt_answer` and `label` "
            f"(the row has: {', '.join(row)})",
        )
    text, label = row["prompt_answer"], row["label"]
    if not isinstance(text, str):
        return RowProblem("malformed prompt_answer", f"prompt_answer is {describe(text)}, expected a string")
    for prefix, separator in RELEASED_LAYOUTS:
        if text.startswith(prefix) and separator in text:
            question, _, solution = text[len(prefix) :].partition(separator)
            break
    else:
        layouts = " or ".join(
            f"'{clip(prefix)}' + question + '{clip(separator)}' + steps" for prefix, separator in RELEASED_LAYOUTS
        )
        return RowProblem(
            "missing separator",
            f"prompt_answer does not split into question and steps: it must be {layouts} (one step per line, as "
            f"ReST-MCTS* writes it); found: {clip(text)}",
        )
    if not question.strip():
        return RowProblem(
            "empty prompt", f"prompt_answer has no question between '{clip(prefix)}' and '{clip(separator)}'"
        )
    steps = [line.strip() for line in solution.split("\n") if line.strip()]
    if not steps:
        return RowProblem("no steps", f"prompt_answer has no steps after '{clip(separator)}'")
    if not _is_number(label) or not 0.0 <= label <= 1.0:
        return RowProblem(
            "label out of range", f"label {label!r} is not a number in [0, 1] (the value of the partial solution)"
        )
    return StepTrace(
        prompt=[{"role": "user", "content": question.strip()}],
        steps=steps,
        q=[Q_IGNORE] * (len(steps) - 1) + [float(label)],
        positive=label == 1.0,
    )


# Each form: its name, the columns that identify it (a row has those of exactly one form), and its reader.
FORMS = (
    (
        "ReST-MCTS*: [{step, Q}], or LLaMA-Factory: one assistant message holding that list as JSON",
        ("response",),
        read_response_row,
    ),
    ("TRL stepwise supervision", ("completions", "labels"), read_stepwise_row),
    ("ReST-MCTS* released value data", ("prompt_answer", "label"), read_released_row),
)


def _steps_problem(steps: list, q: list, where: str) -> RowProblem | None:
    """Why the step texts and Q values are not a valid trace (`where` names step i), or None."""
    for index, (step, value) in enumerate(zip(steps, q, strict=True)):
        if not isinstance(step, str) or not step.strip():
            return RowProblem("empty step", f"{where.format(index)}: the step text is empty or not a string")
        if not _is_number(value) or not -1.0 <= value <= 1.0:
            return RowProblem("Q out of range", f"{where.format(index)}: Q {value!r} is not a number in [-1, 1]")
    return None


def _prompt(row: dict) -> list[dict[str, str]] | RowProblem:
    """The row's `prompt` as messages: a string is one user turn, a list must be a chat that ends with a user turn."""
    if "prompt" not in row:
        return RowProblem("missing column", f"no 'prompt' column (the row has: {', '.join(row)})")
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            return RowProblem("empty prompt", "the prompt is empty")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        # A prompt is a chat missing its answer: check it as one with a placeholder reply appended.
        problem = conversation_problem([*prompt, {"role": "assistant", "content": "placeholder"}])
        if problem is not None:
            return RowProblem(problem.kind, f"prompt: {problem}")
        return prompt
    return RowProblem(
        "malformed prompt", f"prompt must be a string or a list of messages, got {type(prompt).__name__}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
