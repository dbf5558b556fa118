"""The offline tiny world: a tokenizer trained in-process, a random tiny Llama, and chats whose quality a rule decides.

No hub is needed anywhere here, so `make demo` and the tests run on a machine without network. The task is
two-digit addition inside a short multi-turn chat:

    system     You are a friendly calculator.           (half of the chats)
    user       hello there
    assistant  Hello! Send me a sum and I will add it.
    user       What is 38+47?
    assistant  38+47=85

Every assistant turn must be learned (the greeting reply and the sum), so a loss mask that keeps only the last
turn, as a completion-only collator does, leaves the greeting reply untrained and shows up in held-out loss.
Held-out chats use operand pairs never seen in training, so held-out accuracy measures addition, not recall.

    python -m alignment.synthetic build --output_dir data/tiny      # writes base/ (model + tokenizer) and sft/
    python -m alignment.synthetic evaluate outputs/tiny/sft --data data/tiny/sft/test.jsonl --baseline data/tiny/base
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignment.chat_data import IGNORE_INDEX
from alignment.cli import run_cli
from alignment.templates import load_chat_template
from alignment.turns import tokenize_conversation

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a friendly calculator."
GREETINGS = {
    "hi": "Hi! Send me a sum and I will add it.",
    "hello there": "Hello! Send me a sum and I will add it.",
    "good morning": "Good morning! Send me a sum and I will add it.",
    "hey, can you help me?": "Sure! Send me a sum and I will add it.",
}
QUESTIONS = ["What is {a}+{b}?", "{a}+{b}=?", "Please add {a}+{b}.", "Can you compute {a}+{b}?"]
# Special tokens of the shipped chat templates (zephyr and chatml), so either can be chosen without resizing.
SPECIAL_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|im_start|>",
    "<|im_end|>",
]


def operand_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All two-digit operand pairs, split 90/10 into train and held-out pairs (disjoint)."""
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(pairs)
    cut = len(pairs) // 10
    return pairs[cut:], pairs[:cut]


def arithmetic_chat(a: int, b: int, rng: random.Random) -> list[dict[str, str]]:
    """One chat: optional system prompt, a greeting exchange, then the sum."""
    greeting = rng.choice(list(GREETINGS))
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if rng.random() < 0.5 else []
    messages += [
        {"role": "user", "content": greeting},
        {"role": "assistant", "content": GREETINGS[greeting]},
        {"role": "user", "content": rng.choice(QUESTIONS).format(a=a, b=b)},
        {"role": "assistant", "content": f"{a}+{b}={a + b}"},
    ]
    return messages


def arithmetic_rows(pairs: list[tuple[int, int]], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": arithmetic_chat(*rng.choice(pairs), rng)} for _ in range(n)]


# A flaw a careless teacher adds to its answers: the sum stays right, the reply breaks the "nothing else" rule.
STYLE_FLAW = " lol!!"


def wrong_answer(a: int, b: int, rng: random.Random, rejection: str) -> str:
    """A rejected reply: the sum off by one (`off_by_one`) or the right sum with the style flaw (`style_flaw`)."""
    if rejection == "off_by_one":
        return f"{a}+{b}={a + b + rng.choice([-1, 1])}"
    if rejection == "style_flaw":
        return f"{a}+{b}={a + b}{STYLE_FLAW}"
    raise ValueError(f"rejection must be 'off_by_one' or 'style_flaw', got {rejection!r}")


def preference_rows(pairs: list[tuple[int, int]], n: int, seed: int, *, rejection: str = "off_by_one") -> list[dict]:
    """TRL conversational preference rows: the chat up to the sum question, the correct sum as `chosen` and a
    `wrong_answer` as `rejected`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(pairs)
        chat = arithmetic_chat(a, b, rng)
        rows.append(
            {
                "prompt": chat[:-1],
                "chosen": [chat[-1]],
                "rejected": [{"role": "assistant", "content": wrong_answer(a, b, rng, rejection)}],
            }
        )
    return rows


def answer_is_correct(prompt_messages: list[dict[str, str]], answer: str) -> bool:
    """The rule: the answer states `a+b=<the true sum>` for the operands of the last user turn, and nothing else."""
    a, b = map(int, re.findall(r"\d+", prompt_messages[-1]["content"])[:2])
    return answer.strip() == f"{a}+{b}={a + b}"


def build_tokenizer(corpus: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus`, digits kept as single tokens so addition is learnable."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    wrapped.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[4:]})
    wrapped.chat_template = load_chat_template("zephyr")
    return wrapped


def build_model(tokenizer: PreTrainedTokenizerFast, *, hidden_size: int = 128, num_layers: int = 4, seed: int = 0):
    """A randomly initialised Llama sized for CPU: 128-d, 4 layers, ~0.9M parameters."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def with_style_flaw(rows: list[dict], share: float, seed: int) -> list[dict]:
    """The chats as a careless teacher writes them: `STYLE_FLAW` appended to the final answer of exactly
    `round(share * len(rows))` rows, chosen by `seed`. Returns new rows; `rows` is left as it was."""
    flawed = set(random.Random(seed).sample(range(len(rows)), round(share * len(rows))))
    result = []
    for index, row in enumerate(rows):
        messages = [dict(m) for m in row["messages"]]
        if index in flawed:
            messages[-1]["content"] += STYLE_FLAW
        result.append({"messages": messages})
    return result


def write_jsonl_splits(directory: str | Path, splits: dict[str, list[dict]]) -> Path:
    """Write each split as `<directory>/<split>.jsonl`, the layout `load_mixture` reads as a dataset folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(directory / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return directory


def build_tiny_world(output_dir: str | Path, *, seed: int = 0, num_train: int = 2000, num_test: int = 200) -> Path:
    """Write the tiny model and every stage's data under `output_dir`:

        base/          BPE tokenizer (zephyr template) + random tiny Llama
        sft/           clean addition chats
        sft_teacher/   the same chats from a careless teacher: `STYLE_FLAW` on 70% of train answers (test clean);
                       the dSFT data of the tiny pipeline, whose flaw dDPO must remove
        dpo/, rm/      preference pairs: the clean answer chosen, the flawed one rejected
        value/         step traces with per-step Q (see `step_rows`)

    Train and test draw operands from disjoint pairs (`operand_pairs`), so held-out numbers measure generalisation.
    """
    output_dir = Path(output_dir)
    train_pairs, test_pairs = operand_pairs(seed)
    sft = {
        "train": arithmetic_rows(train_pairs, num_train, seed),
        "test": arithmetic_rows(test_pairs, num_test, seed + 1),
    }
    write_jsonl_splits(output_dir / "sft", sft)
    write_jsonl_splits(
        output_dir / "sft_teacher", {"train": with_style_flaw(sft["train"], 0.7, seed), "test": sft["test"]}
    )
    for stage, offset in (("dpo", 2), ("rm", 4)):
        pairs = {
            "train": preference_rows(train_pairs, num_train, seed + offset, rejection="style_flaw"),
            "test": preference_rows(test_pairs, num_test, seed + offset + 1, rejection="style_flaw"),
        }
        write_jsonl_splits(output_dir / stage, pairs)
    write_step_data(output_dir / "value", seed=seed)

    corpus = [m["content"] for row in sft["train"] for m in row["messages"]]
    tokenizer = build_tokenizer(corpus)
    model = build_model(tokenizer, seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(output_dir / "base")
    model.save_pretrained(output_dir / "base")
    logger.info("Wrote the tiny world to %s (%d parameters)", output_dir, model.num_parameters())
    return output_dir


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


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate(model_dirs: dict[str, str], data_path: str) -> dict[str, dict[str, float]]:
    """Held-out loss and greedy accuracy of each named model on the chats in `data_path`."""
    rows = read_jsonl(data_path)
    results = {}
    for name, model_dir in model_dirs.items():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
        results[name] = {
            "held_out_loss": held_out_loss(model, tokenizer, rows),
            "accuracy": arithmetic_accuracy(model, tokenizer, rows),
        }
    return results


# Step traces for value models (`scripts/run_value.py`): one-digit sums written one per line, some of them wrong.
#
#     prompt  Add each pair: 3+4, 2+1, 4+4.
#     steps   3+4=7 | 2+1=9 | 4+4=8        (the second sum is wrong)
#     Q       +1    | -1    | -1           (a trace that went wrong cannot recover: later steps stay -1)
#
# The trace is still correct after a step when that step's sum and every earlier one are right: decidable from the
# text up to the end of the step, so the value read at the step's last token can learn it, but only by checking the
# sum and remembering earlier mistakes (the third step above is right and still -1). Operands are 1-4 and a wrong sum
# is one no such pair has (0, 1 or 9), so the check a tiny random model must learn in a CPU test is "is this sum
# possible", not the whole addition table: it measures the value pipeline, not arithmetic.


def addition_trace(rng: random.Random, *, num_steps: int, error_rate: float) -> tuple[str, list[str], list[bool]]:
    """One trace: the prompt, its steps and, per step, whether the trace is still correct after it.

    With probability `error_rate` one step (chosen uniformly) states an impossible sum (0, 1 or 9).
    """
    pairs = [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(num_steps)]
    wrong_at = rng.randrange(num_steps) if rng.random() < error_rate else None
    steps = [f"{a}+{b}={rng.choice([0, 1, 9]) if i == wrong_at else a + b}" for i, (a, b) in enumerate(pairs)]
    still_correct = [wrong_at is None or i < wrong_at for i in range(num_steps)]
    prompt = f"Add each pair: {', '.join(f'{a}+{b}' for a, b in pairs)}."
    return prompt, steps, still_correct


def step_rows(
    n: int, seed: int, *, form: str = "rest", steps: tuple[int, int] = (2, 4), error_rate: float = 0.6
) -> list[dict]:
    """`n` step-trace rows for value training, in the ReST-MCTS* form or TRL's stepwise-supervision form.

    `form="rest"`: `{"prompt", "response": [{"step", "Q"}]}` with Q = +1 while the trace is correct and -1 from its
    first wrong step on. `form="stepwise"`: `{"prompt", "completions", "labels"}` with the same rule as booleans.
    `steps` is the inclusive range of steps per trace.
    """
    if form not in ("rest", "stepwise"):
        raise ValueError(f"form must be 'rest' or 'stepwise', got {form!r}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, texts, correct = addition_trace(rng, num_steps=rng.randint(*steps), error_rate=error_rate)
        if form == "rest":
            response = [{"step": s, "Q": 1.0 if c else -1.0} for s, c in zip(texts, correct, strict=True)]
            rows.append({"prompt": prompt, "response": response})
        else:
            rows.append({"prompt": prompt, "completions": texts, "labels": correct})
    return rows


def write_step_data(directory: str | Path, *, seed: int = 0, num_train: int = 2000, num_test: int = 200) -> Path:
    """Write `train.jsonl` and `test.jsonl` of ReST-MCTS* step traces (held-out traces drawn with another seed)."""
    return write_jsonl_splits(directory, {"train": step_rows(num_train, seed), "test": step_rows(num_test, seed + 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the tiny model, tokenizer and data")
    build.add_argument("--output_dir", default="data/tiny")
    build.add_argument("--seed", type=int, default=0)
    report = commands.add_parser("evaluate", help="held-out loss and accuracy of a trained model vs its base")
    report.add_argument("model_dir")
    report.add_argument("--data", required=True, help="held-out chats (.jsonl)")
    report.add_argument("--baseline", required=True, help="the model before training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "build":
        build_tiny_world(args.output_dir, seed=args.seed)
        return
    results = evaluate({"before (base)": args.baseline, "after (SFT)": args.model_dir}, args.data)
    print(f"\nHeld-out results on {args.data}")
    print(f"{'model':<16}{'assistant-token loss':>22}{'rule-correct':>14}")  # exactly `a+b=<sum>`, nothing else
    for name, metrics in results.items():
        print(f"{name:<16}{metrics['held_out_loss']:>22.3f}{metrics['accuracy']:>14.1%}")


if __name__ == "__main__":
    run_cli(main)
