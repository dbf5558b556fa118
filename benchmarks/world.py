"""The benchmark's offline world, built once per run and shared by every configuration: a randomly initialised model
sized for the settings, saved to a folder (the trainers, and DPO's reference, load it from that path), and every
stage's data as JSON Lines splits.

With `vocabulary: tiny`, the model is a Llama over `tiny_world`'s tokenizer and the data the mixed-length rows of
`benchmarks.data`. With `vocabulary: qwen3`, it is a Qwen3-shaped model (embeddings tied, as Qwen3-0.6B's) over
Qwen3's real tokenizer and TRL's qwen3 template (built offline by `tests/support/real_tokenizers.py`), SFT chats and
DPO/RM pairs are ShareGPT's (`benchmarks.real_data`), and value traces are `benchmarks.data`'s in that vocabulary.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM
from trl.data_utils import pack_dataset

from alignment.chat.turns import tokenize_conversation
from benchmarks.configs import Settings
from benchmarks.data import chat_rows, preference_rows, trace_rows
from benchmarks.real_data import sharegpt_rows
from benchmarks.sharegpt import build_tokenizer
from tiny_world import build_model, build_tiny_world, write_jsonl_splits

WORLD_FILE = "world.json"


@dataclass
class World:
    model_dir: str
    data_dir: str  # one folder per stage (sft, dpo, rm, value), each with train.jsonl and test.jsonl
    num_parameters: int
    mean_chat_tokens: float  # over the SFT train chats, as `tokenize_chats` tokenizes them
    packs_per_batch: int  # the packing batch holding as many chats per step as the others' batch, on average
    chat_template: str | None = "zephyr"  # our recipes' `chat_template`; None: the tokenizer's own

    @classmethod
    def load(cls, work_dir: str | Path) -> World:
        return cls(**json.loads(Path(work_dir, WORLD_FILE).read_text()))


def tiny_model_and_tokenizer(
    work_dir: Path, settings: Settings, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer_source = build_tiny_world(work_dir / "tiny", seed=seed) / "base"  # its tokenizer, template included
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model = build_model(tokenizer, hidden_size=settings.hidden_size, num_layers=settings.num_layers, seed=seed)
    return model, tokenizer


def qwen3_model_and_tokenizer(
    work_dir: Path, settings: Settings, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = build_tokenizer("qwen3", work_dir / "tokenizers")
    hidden = settings.hidden_size
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128),
        head_dim=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config), tokenizer


def build_world(work_dir: str | Path, settings: Settings, seed: int = 0) -> World:
    """Write the model and every stage's data under `work_dir` and return (and save) what the runs need to know."""
    work_dir = Path(work_dir)
    real = settings.vocabulary == "qwen3"
    build = qwen3_model_and_tokenizer if real else tiny_model_and_tokenizer
    model, tokenizer = build(work_dir, settings, seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model_dir = work_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    length = settings.max_length
    held_out = settings.held_out_rows
    if real:
        counts = {"sft": settings.sft_rows, "dpo": settings.dpo_rows, "rm": settings.rm_rows}
        counts = {
            name: n for stage, rows in counts.items() for name, n in ((stage, rows), (f"{stage}_test", held_out))
        }
        shared = sharegpt_rows(tokenizer, counts, max_length=length)
        splits = {stage: {"train": shared[stage], "test": shared[f"{stage}_test"]} for stage in ("sft", "dpo", "rm")}
    else:
        generators = {
            "sft": (chat_rows, settings.sft_rows),
            "dpo": (preference_rows, settings.dpo_rows),
            "rm": (preference_rows, settings.rm_rows),
        }
        splits = {
            stage: {
                "train": generate(tokenizer, rows, max_length=length, seed=seed + 2 * offset),
                "test": generate(tokenizer, held_out, max_length=length, seed=seed + 2 * offset + 1),
            }
            for offset, (stage, (generate, rows)) in enumerate(generators.items())
        }
    # Real traces leave room for the qwen3 template's longer turn markers, which `benchmarks.data` counts as zephyr's.
    trace_length = length - 64 if real else length
    splits["value"] = {
        "train": trace_rows(tokenizer, settings.value_rows, max_length=trace_length, seed=seed + 6),
        "test": trace_rows(tokenizer, held_out, max_length=trace_length, seed=seed + 7),
    }
    for stage, stage_splits in splits.items():
        write_jsonl_splits(work_dir / "data" / stage, stage_splits)

    chats = [json.loads(line) for line in (work_dir / "data" / "sft" / "train.jsonl").read_text().splitlines()]
    tokenized = Dataset.from_dict(
        {"input_ids": [tokenize_conversation(tokenizer, row["messages"])["input_ids"] for row in chats]}
    )
    packs = len(pack_dataset(tokenized, length, "bfd"))  # what TRL's `packing: true` makes of the same chats
    world = World(
        model_dir=str(model_dir),
        data_dir=str(work_dir / "data"),
        num_parameters=model.num_parameters(),
        mean_chat_tokens=statistics.mean(len(ids) for ids in tokenized["input_ids"]),
        packs_per_batch=max(1, round(settings.batch_size * packs / len(chats))),
        chat_template=None if real else "zephyr",
    )
    Path(work_dir, WORLD_FILE).write_text(json.dumps(asdict(world), indent=2))
    return world
