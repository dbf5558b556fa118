"""Step proposals from a causal LM, and partial traces scored by a value model: the two models a search calls.

A *step* is what the value data calls one (`alignment.value`): one line of the assistant's reply. The policy sees the
prompt rendered with its chat template and generation prompt, then the steps so far, each written as
`step.strip() + "\\n"`, laid out exactly as `alignment.value.encode_steps` lays them out for the value model; it
generates until a token holding a newline (the step is the text before it) or its end of turn (the step is the text
before it, and the trace is finished), or `max_step_tokens`. Generation is batched through transformers' `generate`
(its KV cache, left padding, `num_return_sequences` samples of every prefix in one call), and every generated token
is counted, the stop token included, whether the step is kept, merged with a duplicate or empty.

`LMPolicy` and `ValueScorer` are the real models, `RuleScorer` a step rule in the value model's place; a search
takes anything with their `propose` / `score` methods (`StepPolicy`, `StepScorer`), so the tests drive the searches
with scripted stubs whose right answer is known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria

from alignment.value.modeling import ValueModel
from alignment.value.rows import encode_steps
from alignment.value.scoring import score_traces

logger = logging.getLogger(__name__)

Prompt = list[dict[str, str]]
StepRule = Callable[[Prompt, list[str]], Sequence[bool]]  # whether each step of a trace is right


@dataclass(frozen=True)
class Proposal:
    """One generated step: its text (stripped; empty when the policy ended its turn or wrote a blank line at once),
    whether the policy ended its turn in it, and the tokens generated for it."""

    text: str
    ended: bool
    tokens: int


class StepPolicy(Protocol):
    def propose(
        self, prompt: Prompt, prefixes: Sequence[Sequence[str]], num_samples: int, *, sample: bool
    ) -> list[list[Proposal]]:
        """`num_samples` next steps after each prefix (a list of steps), sampled or (with `sample=False` and one
        sample) greedy."""


class StepScorer(Protocol):
    def score(self, prompt: Prompt, traces: Sequence[Sequence[str]]) -> tuple[list[float], int]:
        """The value after the last step of each trace, and the tokens the value model read to compute them."""


class _StepEnd(StoppingCriteria):
    """Stop each row once its newest token holds a newline (the end of the step)."""

    def __init__(self, newline_ids: torch.Tensor):
        self.newline_ids = newline_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.newline_ids.to(input_ids.device))


def newline_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token id whose text holds a newline: the tokens that can end a step."""
    return [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]


class LMPolicy:
    """A causal LM and its tokenizer (with the chat template it was trained with) as a `StepPolicy`.

    Generation stops at the model's `generation_config.eos_token_id` (the chat template's end of turn, as
    `scripts/run_sft.py` saves it) and at any token holding a newline. Sampling uses `temperature` and `top_p` over
    the whole vocabulary (no top-k).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_step_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        eos = model.generation_config.eos_token_id
        self.eos_ids = set([eos] if isinstance(eos, int) else list(eos or []))
        if not self.eos_ids:
            raise ValueError("The policy's generation config has no `eos_token_id`: it could never end its turn.")
        self.newline_ids = set(newline_token_ids(tokenizer))
        self.stop = _StepEnd(torch.tensor(sorted(self.newline_ids)))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.max_step_tokens, self.temperature, self.top_p = max_step_tokens, temperature, top_p

    @torch.no_grad()
    def propose(
        self, prompt: Prompt, prefixes: Sequence[Sequence[str]], num_samples: int, *, sample: bool
    ) -> list[list[Proposal]]:
        if not sample and num_samples != 1:
            raise ValueError(f"greedy decoding gives one step per prefix, not {num_samples}")
        rows = [encode_steps(self.tokenizer, prompt, list(steps))[0] for steps in prefixes]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):  # left padding: every row's next token is at the same position
            input_ids[index, width - len(row) :] = torch.tensor(row)
            attention_mask[index, width - len(row) :] = 1
        config = GenerationConfig(
            max_new_tokens=self.max_step_tokens,
            do_sample=sample,
            num_return_sequences=num_samples,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            **({"temperature": self.temperature, "top_p": self.top_p, "top_k": 0} if sample else {}),
        )
        device = self.model.device
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            stopping_criteria=[self.stop],
        )
        generated = output[:, width:].tolist()
        proposals = [self._proposal(ids) for ids in generated]
        return [proposals[i * num_samples : (i + 1) * num_samples] for i in range(len(rows))]

    def _proposal(self, ids: list[int]) -> Proposal:
        """The step in one row of generated ids: up to its first newline or end of turn, which is counted."""
        for count, token in enumerate(ids, start=1):
            if token in self.eos_ids:
                return Proposal(self.tokenizer.decode(ids[: count - 1]).strip(), ended=True, tokens=count)
            if token in self.newline_ids:
                text = self.tokenizer.decode(ids[:count]).split("\n", 1)[0]
                return Proposal(text.strip(), ended=False, tokens=count)
        return Proposal(self.tokenizer.decode(ids).strip(), ended=False, tokens=len(ids))


class ValueScorer:
    """A value model (`alignment.value.load_value_model`) and its tokenizer as a `StepScorer`: the value read at
    the last token of each trace's last step, where training put its target (`alignment.value.score_traces`)."""

    def __init__(self, model: ValueModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def score(self, prompt: Prompt, traces: Sequence[Sequence[str]]) -> tuple[list[float], int]:
        values = score_traces(
            self.model, self.tokenizer, [(prompt, list(steps)) for steps in traces], batch_size=self.batch_size
        )
        tokens = sum(len(encode_steps(self.tokenizer, prompt, list(steps))[0]) for steps in traces)
        return [trace_values[-1] for trace_values in values], tokens


class RuleScorer:
    """A step rule as a `StepScorer`: +1 when the rule holds at a trace's last step, -1 when it does not. Where steps
    can be checked (the tiny world's chains), this is a perfect process verifier: a search guided by it shows the
    most that a value model could give that search. It reads no tokens."""

    def __init__(self, rule: StepRule):
        self.rule = rule

    def score(self, prompt: Prompt, traces: Sequence[Sequence[str]]) -> tuple[list[float], int]:
        return [1.0 if self.rule(prompt, list(steps))[-1] else -1.0 for steps in traces], 0
