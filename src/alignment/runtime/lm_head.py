"""TRL's fused LM head, projecting only trained positions on CPU too.

TRL 1.16's SFT, DPO, KTO and GRPO trainers score tokens through `trl.trainer.utils.add_fused_lm_head`: per-token
log-probs (and the entropy and top-1 metrics) computed in tiles by `trl.kernels.ChunkedLogProbFunction`, never the
`[batch, seq, vocab]` logits. On a Triton device the head projects only the positions whose label is trained
(`compact`). Elsewhere it projects every position, prompt and padding included, in tiles of 4,096 tokens x 32,768
vocabulary entries; its torch fold keeps several fp32 copies of a tile (512 MiB each), and with a real vocabulary
that costs gigabytes per step and as much time on prompts as on replies. TRL scores every position off Triton so that
a varying number of positions does not recompile tile shapes on Neuron; on CPU nothing is compiled.

`CompactLMHeadMixin`, mixed in before those trainers, wraps the fused forward of the trained model and of its
reference: on CPU, each fused call runs with `compact` on and vocabulary tiles of `CPU_VOCAB_TILE` entries. It is
still TRL's forward and TRL's kernel: its logit scales, soft caps, MoE auxiliary loss, ZeRO-3 gathering and outputs
are untouched. On a GPU the forward is TRL's own, Triton kernel and tiles unchanged. The switch is the one place we
patch TRL's head: `compact_tiles` sets two names of `trl.trainer.utils` for the duration of a call, both listed in
`alignment.runtime.private_hooks`. Memory and time against plain TRL: `benchmarks/RESULTS.md` ("Real vocabulary").
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import trl.trainer.utils as trl_utils
from torch import nn

# Vocabulary entries per tile on CPU: each fp32 copy of a tile is `TOKEN_CHUNK_SIZE` (4,096, in
# `trl.kernels.chunked_logprob`) x 1,024 x 4 bytes = 16 MiB, against 512 MiB at TRL's 32,768. The torch fold streams
# each tile several times, so a tile that stays in cache is also faster (measured: benchmarks/RESULTS.md, "The LM
# head alone on CPU").
CPU_VOCAB_TILE = 1024


@contextmanager
def compact_tiles() -> Iterator[None]:
    """Within it, `add_fused_lm_head`'s forward projects only trained positions (`compact`), in tiles of
    `CPU_VOCAB_TILE` vocabulary entries."""
    saved = trl_utils._use_triton, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    trl_utils._use_triton = lambda device: True  # read by the forward only to choose `compact`
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_VOCAB_TILE
    try:
        yield
    finally:
        trl_utils._use_triton, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = saved


def compact_fused_head(model: nn.Module) -> None:
    """Wrap `model`'s fused-head forward (set by `add_fused_lm_head` as an instance attribute) so that its fused calls
    on CPU run under `compact_tiles`; a model without one is left as it is."""
    fused_forward = vars(model).get("forward")
    if fused_forward is None or getattr(fused_forward, "compact_on_cpu", False):
        return

    @functools.wraps(fused_forward)  # keeps the signature `generate` validates its kwargs against
    def forward(*args, **kwargs):
        if not kwargs.get("fused_lm_head") or model.get_output_embeddings().weight.device.type != "cpu":
            return fused_forward(*args, **kwargs)
        with compact_tiles():
            return fused_forward(*args, **kwargs)

    forward.compact_on_cpu = True
    model.forward = forward


class CompactLMHeadMixin:
    """Mixed in before a TRL trainer that adds the fused LM head: its model's head (the base model's under PEFT) and
    its reference's project only trained positions on CPU (`compact_fused_head`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        compact_fused_head(model)
        if getattr(self, "ref_model", None) is not None:
            compact_fused_head(self.ref_model)
