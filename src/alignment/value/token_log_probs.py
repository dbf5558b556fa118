"""Next-token log-probabilities at chosen positions, projected through the LM head a chunk of tokens at a time.

Why: the value stage needs `log p(token | prefix)` at its label positions (the SFT term) and at its response
positions (`running_min_log_likelihood`), never the logits themselves. Full `[batch, seq, vocab]` logits, their fp32
copy and their softmax cost several bytes x 4,096 tokens x 151,669 (Qwen3's vocabulary) = gigabytes per step;
here only the needed positions are projected, `chunk_tokens` rows at a time, each chunk under
`torch.utils.checkpoint`: the forward keeps one log-prob per token, the backward recomputes one chunk's logits at a
time. Peak memory and step time, old against new: `benchmarks/RESULTS.md` ("Value stage: log-probs off full
logits").

Why not TRL's pieces: `trl.trainer.utils.add_fused_lm_head` replaces the body's forward with one that returns
log-probs of one label set and no hidden states, while the value head reads the last hidden state and the
likelihood feature scores the response's own tokens. `trl.kernels.ChunkedLogProbFunction` computes per-token
log-probs with a correct backward on CPU, but from `lm_head.weight` read directly: a LoRA on the head would be
skipped without a word, and ZeRO-3 needs the weight gathered by hand. Calling the head module per chunk keeps
adapters, DeepSpeed's hooks and quantized layers as the body's own forward has them (the ZeRO-3 case of
`tests/test_multiprocess.py` trains through it).

The head must be the body's whole vocabulary projection: `check_head_reproduces_logits` compares it, on every
batch, with the body's own logits at the last position (Gemma's `final_logit_softcapping` is applied; a body that
scales its logits in another way is refused there, not trained on wrong log-probs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from alignment.chat.turns import IGNORE_INDEX

# Bytes of one chunk's fp32 logits (64 MiB: 110 tokens of Qwen3's vocabulary). The backward holds about four such
# tensors at once (the logits, their softmax, the gather's and the sum's gradients): about 256 MiB, whatever the
# number of tokens.
LOGITS_CHUNK_BYTES = 64 * 2**20


def chunk_tokens_for(vocab_size: int) -> int:
    """Tokens per chunk whose fp32 logits fit `LOGITS_CHUNK_BYTES` (at least 1)."""
    return max(1, LOGITS_CHUNK_BYTES // (4 * vocab_size))


def head_logits(lm_head: nn.Module, hidden_states: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """The body's logits for `hidden_states`: its LM head, then Gemma's soft cap when the body has one, in the body's
    dtype and order of operations."""
    logits = lm_head(hidden_states)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def check_head_reproduces_logits(
    body_logits: torch.Tensor, lm_head: nn.Module, last_hidden_state: torch.Tensor, softcap: float | None
) -> None:
    """Raise ValueError unless `head_logits` of the last position equals `body_logits` (the body's own, computed with
    `logits_to_keep=1`): a body that transforms its logits after the head would otherwise train on wrong log-probs.

    Skipped while the head drops out (a LoRA on the head with `lora_dropout` > 0, in training): the body's call and
    this one draw different masks, so they differ whatever the body does. Evaluation, with dropout off, checks it."""
    if lm_head.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in lm_head.modules()):
        return
    with torch.no_grad():
        ours = head_logits(lm_head, last_hidden_state[:, -1:], softcap)
    if not torch.allclose(ours.float(), body_logits.float(), rtol=1e-4, atol=1e-5):
        raise ValueError(
            "This body's logits are not its output embeddings' projection of the last hidden state (it scales or "
            "caps them in a way the value stage's chunked log-probs do not reproduce; only Gemma's "
            "`final_logit_softcapping` is): the value stage cannot train it."
        )


def _chunk_log_probs(
    lm_head: nn.Module, hidden_states: torch.Tensor, targets: torch.Tensor, softcap: float | None
) -> torch.Tensor:
    logits = head_logits(lm_head, hidden_states, softcap).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def next_token_log_probs(
    hidden_states: torch.Tensor,
    lm_head: nn.Module,
    targets: torch.Tensor,
    *,
    chunk_tokens: int,
    softcap: float | None = None,
) -> torch.Tensor:
    """`[batch, seq]` fp32: at position t, `log p(targets[:, t] | tokens < t)`, predicted from `hidden_states[:, t-1]`
    (the last hidden state, `[batch, seq, hidden]`); 0 where `targets` is `IGNORE_INDEX` and at t = 0.

    Only the positions with a target are projected through `lm_head`, `chunk_tokens` at a time.
    """
    wanted = targets[:, 1:] != IGNORE_INDEX
    hidden = hidden_states[:, :-1][wanted]
    ids = targets[:, 1:][wanted]
    # At least one chunk, empty when no position has a target: the head's parameters then still get a (zero)
    # gradient, so every process of a data-parallel step reduces the same set of parameters.
    chunks = [
        checkpoint(
            _chunk_log_probs,
            lm_head,
            hidden[start : start + chunk_tokens],
            ids[start : start + chunk_tokens],
            softcap,
            use_reentrant=False,
        )
        for start in range(0, max(len(ids), 1), chunk_tokens)
    ]
    # `masked_scatter` rather than indexed assignment: the result stays in the graph even with no position wanted.
    scattered = torch.zeros(wanted.shape, dtype=torch.float32, device=hidden.device).masked_scatter(
        wanted, torch.cat(chunks)
    )
    return F.pad(scattered, (1, 0))  # the first token has no prediction
