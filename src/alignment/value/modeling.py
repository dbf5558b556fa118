"""The value model: `ValueHead` on a causal LM's last hidden state (and, optionally, on the LM's own likelihood of
the response so far, `running_min_log_likelihood`), `ValueModel` (body plus head, and the label log-probs of the SFT
term), and how one is built for training
(`build_value_model`), saved (`save_value_model`: `value_head.safetensors` beside the body) and loaded back
(`load_value_model`)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase
from trl import get_peft_config

from alignment.chat.turns import IGNORE_INDEX
from alignment.recipes.arguments import ModelArguments
from alignment.recipes.parser import RecipeError
from alignment.runtime.loading import load_model, match_embeddings_to_tokenizer
from alignment.value.config import ValueConfig, is_zero3
from alignment.value.token_log_probs import check_head_reproduces_logits, chunk_tokens_for, next_token_log_probs

logger = logging.getLogger(__name__)

VALUE_HEAD_NAME = "value_head.safetensors"
PICKLED_VALUE_HEAD_NAME = "value_head.pth"


def running_min_log_likelihood(token_log_probs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per position t, the lowest `log p(x_s | x_<s)` over the response tokens s <= t (0 before the response), in fp32.

    `token_log_probs` are the body's `log p(x_t | x_<t)` for its `input_ids` (`next_token_log_probs`, which scores
    the response's positions at least); `response_mask` is 1 on the response's tokens (the steps), 0 on the prompt and
    padding. The minimum runs over every step so far, so one unlikely token marks the rest of the trace, as a wrong
    step marks the rest of a ReST-MCTS* trace.
    """
    token_log_likelihood = torch.where(response_mask.bool(), token_log_probs.float(), 0.0)
    return torch.cummin(token_log_likelihood, dim=-1).values


class ValueHead(nn.Module):
    """`tanh(w . h + b)` on the last hidden state `h`, computed in fp32 with autocast off; with `reads_likelihood`,
    `tanh(w . h + b + a * m)`, where `m` is the body's `running_min_log_likelihood` of the response so far.

    Why the second input: a step is wrong where its tokens are not what the right step's would be, and the LM computes
    exactly that when it predicts each token; at the step's last token, where the value is read, a body must compute
    the check over again. A small body (the tiny world's 4 or 8 layers) cannot: its head-only value stays near
    chance on the policy's own traces while its LM's likelihood ranks them well (`benchmarks/RESULTS.md`).

    Its parameters are direct (no inner `nn.Linear`), so DeepSpeed ZeRO-3's hook on this module gathers them before
    `forward` reads them.
    """

    def __init__(
        self, hidden_size: int, dtype: torch.dtype = torch.float32, seed: int = 0, reads_likelihood: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, hidden_size, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(1, dtype=dtype))
        # Starts at 0: a new head with the likelihood input begins exactly as the head without it.
        self.likelihood_weight = nn.Parameter(torch.zeros(1, dtype=dtype)) if reads_likelihood else None
        # Scaled so that the initial values have unit-order spread on unit-variance hidden states (as reward heads).
        # Drawn from its own seeded generator: the global one's state depends on how the body was loaded (one
        # process, DDP, ZeRO-3 init), and the head must start the same in every layout.
        generator = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(hidden_size + 1), generator=generator)

    @property
    def reads_likelihood(self) -> bool:
        """Whether the head adds the LM's likelihood term (its state then has `likelihood_weight`)."""
        return self.likelihood_weight is not None

    def forward(self, hidden_states: torch.Tensor, likelihood: torch.Tensor | None = None) -> torch.Tensor:
        if self.reads_likelihood != (likelihood is not None):
            raise ValueError(
                "This value head "
                + ("reads the LM's likelihood and needs it" if self.reads_likelihood else "takes no likelihood")
            )
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            scores = F.linear(hidden_states.float(), self.weight.float(), self.bias.float()).squeeze(-1)
            if likelihood is not None:
                scores = scores + self.likelihood_weight.float() * likelihood.float()
        return torch.tanh(scores)


class ValueModel(nn.Module):
    """A causal LM (`body`: a `PreTrainedModel` or a PEFT model) and its `value_head`.

    `forward` returns `{"values"}`, one value in (-1, 1) per position, and with `labels` also `{"label_log_probs"}`:
    `log p(labels[:, t] | tokens < t)` where a label is set, 0 elsewhere (fp32). The body projects its last position
    only; the log-probs the SFT term and the likelihood need are projected at their positions alone, a chunk of
    tokens at a time (`alignment.value.token_log_probs`), never as `[batch, seq, vocab]` logits. A head that reads
    the likelihood needs `response_mask` (1 on the response's tokens).
    """

    def __init__(self, body: nn.Module, value_head: ValueHead):
        super().__init__()
        self.body = body
        self.value_head = value_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        reads_likelihood = self.value_head.reads_likelihood
        if reads_likelihood and response_mask is None:
            raise ValueError("This value model's head reads the LM's likelihood of the response: pass response_mask.")
        # Positions count real tokens only, so a left-padded row sees the positions it would see unpadded.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,  # the one position `check_head_reproduces_logits` compares
        )
        hidden_states = outputs.hidden_states[-1]
        response = response_mask * attention_mask if reads_likelihood else None
        targets = log_prob_targets(input_ids, labels, response)
        log_probs = None
        if targets is not None:
            lm_head = self.body.get_output_embeddings()
            softcap = getattr(_text_config(self.body), "final_logit_softcapping", None)
            check_head_reproduces_logits(outputs.logits, lm_head, hidden_states, softcap)
            log_probs = next_token_log_probs(
                hidden_states,
                lm_head,
                targets,
                chunk_tokens=chunk_tokens_for(outputs.logits.shape[-1]),
                softcap=softcap,
            )
        likelihood = running_min_log_likelihood(log_probs, response) if reads_likelihood else None
        result = {"values": self.value_head(hidden_states, likelihood)}
        if labels is not None:
            result["label_log_probs"] = torch.where(labels != IGNORE_INDEX, log_probs, 0.0)
        return result

    @property
    def config(self):
        """The body's config (the Trainer and its model card read `model.config`)."""
        return self.body.config

    @property
    def generation_config(self):
        """The body's generation config: the LM still generates steps, and `save_and_card` saves it."""
        return self.body.generation_config

    def create_or_update_model_card(self, output_dir: str) -> None:
        """The LoRA body's adapter card: the Trainer calls this when the card it writes is a PEFT one (a LoRA value
        model saves its adapter, whose card says `library_name: peft`)."""
        self.body.create_or_update_model_card(output_dir)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Checkpoint the body's layers (called by the Trainer for `gradient_checkpointing: true`)."""
        self.body.activation_checkpointing_enable(
            activation_checkpointing_kwargs=activation_checkpointing_kwargs,
            every_n_layers=every_n_layers,
            offload=offload,
        )


def log_prob_targets(
    input_ids: torch.Tensor, labels: torch.Tensor | None, response_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """The token whose log-prob each position needs: its label where one is set (the SFT term), else its input
    token on the response (the likelihood), else `IGNORE_INDEX`; None when no position needs one.

    One pass serves both because a label set on the response is the response's own token (`alignment.value.rows`);
    labels that differ there are refused rather than scored twice.
    """
    if labels is None and response_mask is None:
        return None
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    if response_mask is not None:
        targets = torch.where(response_mask.bool(), input_ids, targets)
    if labels is not None:
        labelled = labels != IGNORE_INDEX
        if response_mask is not None and (labelled & response_mask.bool() & (labels != input_ids)).any():
            raise ValueError("Labels on the response must be its own tokens (input_ids) for the likelihood input.")
        targets = torch.where(labelled, labels, targets)
    return targets


def _text_config(body: nn.Module):
    return body.config.get_text_config() if hasattr(body.config, "get_text_config") else body.config


def _hidden_size(body: nn.Module) -> int:
    return _text_config(body).hidden_size


def has_value_head(path: str | Path) -> bool:
    """True when `path` holds a value head, as safetensors or as a pickle (`value_head.pth`)."""
    return (Path(path) / VALUE_HEAD_NAME).is_file() or (Path(path) / PICKLED_VALUE_HEAD_NAME).is_file()


def load_value_head(
    path: str | Path, hidden_size: int, dtype: torch.dtype = torch.float32, *, allow_pickle_weights: bool = False
) -> ValueHead:
    """Read `path/value_head.safetensors` into a `ValueHead`, checking its width against the body's.

    A `value_head.pth` alone (older value-model code saves one) is read only with `allow_pickle_weights`, and then
    as tensors only (`weights_only=True`)."""
    file = Path(path) / VALUE_HEAD_NAME
    if file.is_file():
        state = load_file(str(file))
    elif (Path(path) / PICKLED_VALUE_HEAD_NAME).is_file():
        file = Path(path) / PICKLED_VALUE_HEAD_NAME
        if not allow_pickle_weights:
            raise ValueError(
                f"{file} is a pickle, which can run arbitrary code when loaded, and {path} has no {VALUE_HEAD_NAME}. "
                "Set `allow_pickle_weights: true` if you trust the source."
            )
        state = torch.load(file, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"No {VALUE_HEAD_NAME} in {path}: not the output of scripts/run_value.py.")
    if set(state) - {"likelihood_weight"} != {"weight", "bias"} or tuple(state["weight"].shape) != (1, hidden_size):
        shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
        raise ValueError(
            f"{file} holds {shapes}; a value head for this model needs weight (1, {hidden_size}) and bias (1,), and "
            "likelihood_weight (1,) when it reads the likelihood."
        )
    head = ValueHead(hidden_size, dtype=dtype, reads_likelihood="likelihood_weight" in state)
    head.load_state_dict(state)
    return head


def build_value_model(
    model_args: ModelArguments, training_args: ValueConfig, tokenizer: PreTrainedTokenizerBase
) -> ValueModel:
    """The model to train: the body from `load_model` (embeddings matched to the tokenizer, LoRA/QLoRA when asked)
    and a value head, read from `model_name_or_path` when it is a value model's output, else freshly initialised."""
    body = load_model(
        model_args,
        trust_remote_code=training_args.trust_remote_code,
        gradient_checkpointing=training_args.gradient_checkpointing,
    )
    match_embeddings_to_tokenizer(body, tokenizer)
    zero3 = is_zero3(training_args)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        if getattr(body, "is_loaded_in_4bit", False) or getattr(body, "is_loaded_in_8bit", False):
            body = prepare_model_for_kbit_training(
                body, use_gradient_checkpointing=training_args.gradient_checkpointing
            )
        # Under ZeRO-3, fp32 adapters beside a bf16 base break DeepSpeed's coalesced all-gather (trl#6089).
        body = get_peft_model(body, peft_config, autocast_adapter_dtype=not zero3)
    # The same all-gather needs one dtype for small persistent parameters such as the head: under ZeRO-3 the head is
    # stored in the body's dtype (its optimizer keeps an fp32 master copy; its arithmetic is fp32 either way).
    head_dtype = body.dtype if zero3 and body.dtype in (torch.bfloat16, torch.float16) else torch.float32
    hidden_size = _hidden_size(body)
    source = Path(model_args.model_name_or_path)
    if has_value_head(source):
        logger.info("Value head: continuing from %s", source)
        head = load_value_head(
            source, hidden_size, dtype=head_dtype, allow_pickle_weights=model_args.allow_pickle_weights
        )
        if head.reads_likelihood != training_args.value_reads_likelihood:
            raise RecipeError(
                f"`value_reads_likelihood: {str(training_args.value_reads_likelihood).lower()}`, but the value head "
                f"in {source} {'reads' if head.reads_likelihood else 'does not read'} the likelihood: set it to "
                f"{str(head.reads_likelihood).lower()} to continue that model."
            )
    else:
        logger.info("Value head: new, %d inputs, stored in %s", hidden_size, head_dtype)
        head = ValueHead(
            hidden_size,
            dtype=head_dtype,
            seed=training_args.seed,
            reads_likelihood=training_args.value_reads_likelihood,
        )
    return ValueModel(body, head)


def save_value_model(model: ValueModel, output_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None):
    """Write the body (`save_pretrained`: full weights, or the adapter of a PEFT body) and `value_head.safetensors`.

    `state_dict` is the whole `ValueModel`'s (keys `body.*`, `value_head.*`), as the Trainer gathers it (under ZeRO-3
    the consolidated copy on rank 0); None reads the live parameters, which is right only without sharding.
    """
    state_dict = model.state_dict() if state_dict is None else state_dict
    head = {
        k.removeprefix("value_head."): v.float().contiguous()
        for k, v in state_dict.items()
        if k.startswith("value_head.")
    }
    body = {k.removeprefix("body."): v for k, v in state_dict.items() if k.startswith("body.")}
    if set(head) - {"likelihood_weight"} != {"weight", "bias"}:
        raise ValueError(f"The state dict has no value head (value_head.* keys: {sorted(head)}); cannot save it.")
    os.makedirs(output_dir, exist_ok=True)
    model.body.save_pretrained(output_dir, state_dict=body)
    save_file(head, str(Path(output_dir) / VALUE_HEAD_NAME), metadata={"format": "pt"})


def load_value_model(path: str | Path, *, dtype: str = "float32", allow_pickle_weights: bool = False) -> ValueModel:
    """A trained value model from `path` (full weights or a LoRA adapter merged into its base, plus the head), in
    eval mode. The tokenizer, with its chat template, is in the same folder."""
    if not has_value_head(path):
        raise FileNotFoundError(f"No {VALUE_HEAD_NAME} in {path}: not the output of scripts/run_value.py.")
    body = load_model(
        ModelArguments(model_name_or_path=str(path), dtype=dtype, allow_pickle_weights=allow_pickle_weights)
    )
    head = load_value_head(path, _hidden_size(body), allow_pickle_weights=allow_pickle_weights)
    return ValueModel(body, head).eval()
