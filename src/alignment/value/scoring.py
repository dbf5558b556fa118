"""Scoring with a trained value model: the value after each step of a trace, read where training put its target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from alignment.value.modeling import ValueModel
from alignment.value.rows import ValueCollator, encode_steps


@torch.no_grad()
def score_traces(
    model: ValueModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: Sequence[tuple[str | list[dict[str, str]], Sequence[str]]],
    *,
    batch_size: int = 16,
) -> list[list[float]]:
    """The value after each step of each `(prompt, steps)` trace, read at each step's last token as in training.

    Traces are batched `batch_size` at a time and padded on `tokenizer.padding_side`; the values do not depend on
    either (up to float rounding). Puts the model in eval mode. No truncation: a trace longer than the model's
    context is the caller's to split.
    """
    model.eval()
    device = next(model.parameters()).device
    collator = ValueCollator(tokenizer.pad_token_id, tokenizer.padding_side)
    scores = []
    for start in range(0, len(traces), batch_size):
        encoded = [encode_steps(tokenizer, prompt, steps) for prompt, steps in traces[start : start + batch_size]]
        batch = collator(
            [
                {"input_ids": ids, "response_mask": [0] * length + [1] * (len(ids) - length)}
                for ids, length, _ in encoded
            ]
        )
        values = model(**{k: v.to(device) for k, v in batch.items()})["values"].float().cpu()
        width = batch["input_ids"].shape[1]
        for row, (ids, _, ends) in enumerate(encoded):
            offset = width - len(ids) if tokenizer.padding_side == "left" else 0
            scores.append([values[row, offset + end].item() for end in ends])
    return scores


def score_steps(
    model: ValueModel, tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], steps: Sequence[str]
) -> list[float]:
    """The value after each of `steps` (one trace): `score_traces` of that trace alone."""
    return score_traces(model, tokenizer, [(prompt, steps)])[0]
