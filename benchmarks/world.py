"""The benchmark's offline world, built once per run and shared by every configuration: a randomly initialised Llama
sized for the settings over `tiny_world`'s tokenizer, saved to a folder (the trainers, and DPO's reference,
load it from that path), and the mixed-length data of `benchmarks.data` as JSON Lines splits.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer
from trl.data_utils import pack_dataset

from alignment.chat.turns import tokenize_conversation
from benchmarks.configs import Settings
from benchmarks.data import chat_rows, preference_rows, trace_rows
from tiny_world import build_model, build_tiny_world, write_jsonl_splits

WORLD_FILE = "world.json"


@dataclass
class World:
    model_dir: str
    data_dir: str  # one folder per stage (sft, dpo, rm, value), each with train.jsonl and test.jsonl
    num_parameters: int
    mean_chat_tokens: float  # over the SFT train chats, as `tokenize_chats` tokenizes them
    packs_per_batch: int  # the packing batch holding as many chats per step as the others' batch, on average

    @classmethod
    def load(cls, work_dir: str | Path) -> World:
        return cls(**json.loads(Path(work_dir, WORLD_FILE).read_text()))


def build_world(work_dir: str | Path, settings: Settings, seed: int = 0) -> World:
    """Write the model and every stage's data under `work_dir` and return (and save) what the runs need to know."""
    work_dir = Path(work_dir)
    tokenizer_source = build_tiny_world(work_dir / "tiny", seed=seed) / "base"  # its tokenizer, template included
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model = build_model(tokenizer, hidden_size=settings.hidden_size, num_layers=settings.num_layers, seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model_dir = work_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    length = settings.max_length
    held_out = settings.held_out_rows
    generators = {
        "sft": (chat_rows, settings.sft_rows),
        "dpo": (preference_rows, settings.dpo_rows),
        "rm": (preference_rows, settings.rm_rows),
        "value": (trace_rows, settings.value_rows),
    }
    for offset, (stage, (generate, rows)) in enumerate(generators.items()):
        write_jsonl_splits(
            work_dir / "data" / stage,
            {
                "train": generate(tokenizer, rows, max_length=length, seed=seed + 2 * offset),
                "test": generate(tokenizer, held_out, max_length=length, seed=seed + 2 * offset + 1),
            },
        )

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
    )
    Path(work_dir, WORLD_FILE).write_text(json.dumps(asdict(world), indent=2))
    return world
