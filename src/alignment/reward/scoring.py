"""Scoring with a saved reward model: one float per conversation, rendered exactly as in training."""

from __future__ import annotations

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from trl.trainer.reward_trainer import suppress_seqcls_warning

from alignment.data.rows import conversation_problem
from alignment.recipes.parser import RecipeError
from alignment.reward.pairs import conversation_ids
from alignment.runtime.loading import is_adapter_folder


def load_reward_model(model_path: str, *, dtype: torch.dtype = torch.float32):
    """A saved reward model and its tokenizer, in eval mode: a full model folder, or a LoRA adapter folder whose
    base is loaded with a one-output head that the adapter's saved `score` weights then replace."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if is_adapter_folder(model_path):
        base_path = PeftConfig.from_pretrained(model_path).base_model_name_or_path
        with suppress_seqcls_warning():
            base = AutoModelForSequenceClassification.from_pretrained(
                base_path, num_labels=1, dtype=dtype, use_safetensors=True
            )
        model = PeftModel.from_pretrained(base, model_path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=dtype, use_safetensors=True)
    if model.config.num_labels != 1:
        raise RecipeError(f"{model_path} has {model.config.num_labels} outputs; a reward model has exactly one.")
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


@torch.no_grad()
def score_with(
    model, tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]], *, batch_size: int = 16
) -> list[float]:
    """Rewards of `conversations` (each ending with the assistant reply to score) under an in-memory model.

    Batches are padded on the tokenizer's padding side; position ids come from the attention mask, so a left-padded
    sequence sees the same positions as alone, and the reward is read at its last real token (sequences ending with
    the pad token are refused, as in training).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sequences = []
    for index, messages in enumerate(conversations):
        problem = conversation_problem(messages)
        if problem is None and messages[-1]["role"] != "assistant":
            problem = "the last message must be the assistant reply to score"
        if problem is not None:
            raise ValueError(f"conversation {index}: {problem}")
        sequences.append(conversation_ids(tokenizer, messages))
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = tokenizer.pad({"input_ids": sequences[start : start + batch_size]}, padding=True, return_tensors="pt")
        mask = batch["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # last attended column, either padding side
        ends_with_pad = batch["input_ids"][torch.arange(len(last)), last] == tokenizer.pad_token_id
        if ends_with_pad.any():
            index = start + int(ends_with_pad.nonzero()[0])
            raise ValueError(
                f"conversation {index} ends with the pad token {tokenizer.pad_token!r}; see tokenize_pairs."
            )
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
        ).logits
        scores.extend(logits.squeeze(-1).float().cpu().tolist())
    return scores


def score(model_path: str, conversations: list[list[dict]], *, batch_size: int = 16) -> list[float]:
    """One reward per conversation from a saved reward model (full folder or LoRA adapter folder, see
    `load_reward_model`); each conversation ends with the assistant reply to score."""
    model, tokenizer = load_reward_model(model_path)
    return score_with(model, tokenizer, conversations, batch_size=batch_size)
