"""Building the tiny world on disk: a byte-level BPE trained in-process, a random tiny Llama, and every stage's data.

`build_tiny_world` writes the folder the demo and the tests train from (`python -m tiny_world build`); the tokenizer,
the model and the split writer are separate so the benchmarks can size their own model over the same tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignment.chat.templates import load_chat_template
from tiny_world.arithmetic import (
    arithmetic_rows,
    operand_pairs,
    preference_rows,
    text_rows,
    unpaired_rows,
    with_style_flaw,
)
from tiny_world.steps import step_rows

logger = logging.getLogger(__name__)

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


def write_jsonl_splits(directory: str | Path, splits: dict[str, list[dict]]) -> Path:
    """Write each split as `<directory>/<split>.jsonl`, the layout `load_mixture` reads as a dataset folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(directory / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return directory


def write_step_data(directory: str | Path, *, seed: int = 0, num_train: int = 2000, num_test: int = 200) -> Path:
    """Write `train.jsonl` and `test.jsonl` of ReST-MCTS* step traces (held-out traces drawn with another seed)."""
    return write_jsonl_splits(directory, {"train": step_rows(num_train, seed), "test": step_rows(num_test, seed + 1)})


# The careless teacher's share of flawed answers: high enough that greedy decoding keeps the flaw on every seed
# (benchmarks/RESULTS.md, "The tiny pipeline over seeds").
TEACHER_FLAW_SHARE = 0.8
# Training rows of the SFT chats and the preference pairs (the value traces keep `write_step_data`'s 2,000): enough
# to cover nearly all 8,100 training operand pairs, so the dSFT model learns to add rather than memorise.
NUM_TRAIN_ROWS = 8000
# Share of desirable rows in the KTO data: real feedback is unbalanced, and 1:4 is the imbalance the KTO paper's
# weights rule is for.
KTO_DESIRABLE_SHARE = 0.2
# Layers of the search demo's value body, whose head reads the LM's likelihood (`value_reads_likelihood`): deeper
# than the 4-layer policy, whose LM slips where the policy does.
VALUE_BODY_LAYERS = 8


def build_tiny_world(
    output_dir: str | Path, *, seed: int = 0, num_train: int = NUM_TRAIN_ROWS, num_test: int = 200
) -> Path:
    """Write the tiny model and every stage's data under `output_dir`:

        base/          BPE tokenizer (zephyr template) + random tiny Llama
        value_base/    the same tokenizer + a random Llama of `VALUE_BODY_LAYERS` layers: the body of the search
                       demo's value model (`recipes/tiny/rest_mcts.yaml`)
        sft/           clean addition chats
        sft_teacher/   the same chats from a careless teacher: `STYLE_FLAW` on `TEACHER_FLAW_SHARE` of train answers
                       (test clean);
                       the dSFT data of the tiny pipeline, whose flaw dDPO must remove
        dpo/, rm/      preference pairs: the clean answer chosen, the flawed one rejected
        sft_chosen/    the DPO pairs' prompts with their chosen replies, as chats: one more SFT epoch on the
                       preferred replies instead of DPO (Zephyr's Table 3 ablation, `benchmarks/evidence.py`)
        value/         step traces with per-step Q (see `step_rows`)
        pt/            the clean chats as raw-text documents (`text_rows`): the pt stage's data
        kto/           the DPO pairs unpaired (`unpaired_rows`): one reply per prompt, the clean one desirable on
                       `KTO_DESIRABLE_SHARE` of rows, the flawed one undesirable on the rest

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
        output_dir / "sft_teacher",
        {"train": with_style_flaw(sft["train"], TEACHER_FLAW_SHARE, seed), "test": sft["test"]},
    )
    pairs = {
        stage: {
            "train": preference_rows(train_pairs, num_train, seed + offset, rejection="style_flaw"),
            "test": preference_rows(test_pairs, num_test, seed + offset + 1, rejection="style_flaw"),
        }
        for stage, offset in (("dpo", 2), ("rm", 4))
    }
    for stage, splits in pairs.items():
        write_jsonl_splits(output_dir / stage, splits)
    chosen = {
        split: [{"messages": row["prompt"] + row["chosen"]} for row in rows] for split, rows in pairs["dpo"].items()
    }
    write_jsonl_splits(output_dir / "sft_chosen", chosen)
    write_step_data(output_dir / "value", seed=seed)
    write_jsonl_splits(output_dir / "pt", {split: text_rows(rows) for split, rows in sft.items()})
    kto = {split: unpaired_rows(rows, KTO_DESIRABLE_SHARE, seed + 6) for split, rows in pairs["dpo"].items()}
    write_jsonl_splits(output_dir / "kto", kto)

    write_base(output_dir / "base", sft["train"], seed=seed)
    write_base(output_dir / "value_base", sft["train"], seed=seed, num_layers=VALUE_BODY_LAYERS)
    logger.info("Wrote the tiny world to %s", output_dir)
    return output_dir


def write_base(directory: str | Path, chats: list[dict], *, seed: int = 0, num_layers: int = 4) -> Path:
    """Write the tiny base model to `directory`: a tokenizer trained on the text of `chats` (`{"messages"}` rows)
    and a random tiny Llama of `num_layers` layers over it. Token ids follow the corpus, so the same seed over other
    chats is another initialisation."""
    corpus = [m["content"] for row in chats for m in row["messages"]]
    tokenizer = build_tokenizer(corpus)
    model = build_model(tokenizer, num_layers=num_layers, seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)
    logger.info("Wrote the tiny base model to %s (%d parameters)", directory, model.num_parameters())
    return Path(directory)
