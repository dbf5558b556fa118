"""Held-out greedy answers of a tiny-world policy, judged by the tiny world's rules: the learning thresholds of the
DPO and GRPO tests."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiny_world import answer_is_clean, answer_is_correct


@torch.no_grad()
def greedy_shares(model_dir, data) -> tuple[float, float]:
    """(clean share, rule-correct share) of the greedy answers to the held-out prompts: clean is `a+b=<number>` for
    the asked operands and nothing else (the flaw absent and the format intact), rule-correct also needs the true sum.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [json.loads(line)["prompt"] for line in (data / "test.jsonl").read_text().splitlines()]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    output = model.generate(**batch, max_new_tokens=16, do_sample=False)
    answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    clean = sum(answer_is_clean(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True))
    correct = sum(answer_is_correct(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True))
    return clean / len(prompts), correct / len(prompts)
