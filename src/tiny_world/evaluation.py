"""How well a model does the tiny world's chat task: greedy accuracy by the rule and held-out loss per assistant token.

`evaluate` reports both for several models on one held-out file (`python -m tiny_world evaluate`); the end-to-end
tests and the benchmarks call `held_out_loss` directly.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.chat.turns import IGNORE_INDEX, tokenize_conversation
from alignment.data.readers import read_rows
from tiny_world.arithmetic import answer_is_correct


@torch.no_grad()
def arithmetic_accuracy(
    model, tokenizer, rows: list[dict], *, batch_size: int = 64, max_new_tokens: int = 16
) -> float:
    """Share of held-out chats whose greedy answer to the last user turn is correct by the rule.

    Prompts are every turn before the final answer, rendered with the chat template's generation prompt, left-padded
    so all rows in a batch end at the same position; generation stops at the template's end of turn.
    """
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    correct = 0
    for start in range(0, len(rows), batch_size):
        prompts = [row["messages"][:-1] for row in rows[start : start + batch_size]]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(answer_is_correct(p, a) for p, a in zip(prompts, answers, strict=True))
    tokenizer.padding_side = padding_side
    return correct / len(rows)


@torch.no_grad()
def held_out_loss(model, tokenizer, rows: list[dict], *, batch_size: int = 64) -> float:
    """Mean cross-entropy per assistant token (every assistant turn, end-of-turn included) over `rows`."""
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        encoded = [tokenize_conversation(tokenizer, row["messages"]) for row in rows[start : start + batch_size]]
        width = max(len(e["input_ids"]) for e in encoded)
        input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
        labels = torch.full((len(encoded), width), IGNORE_INDEX)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            input_ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
            labels[i, : len(e["labels"])] = torch.tensor(e["labels"])
            attention_mask[i, : len(e["input_ids"])] = 1
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        shift_labels = labels[:, 1:].to(model.device)
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), shift_labels, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total_loss += losses.item()
        total_tokens += (shift_labels != IGNORE_INDEX).sum().item()
    return total_loss / total_tokens


def evaluate(model_dirs: dict[str, str], data_path: str) -> dict[str, dict[str, float]]:
    """Held-out loss and greedy accuracy of each named model on the chats in `data_path`."""
    rows = read_rows(data_path)
    results = {}
    for name, model_dir in model_dirs.items():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
        results[name] = {
            "held_out_loss": held_out_loss(model, tokenizer, rows),
            "accuracy": arithmetic_accuracy(model, tokenizer, rows),
        }
    return results
