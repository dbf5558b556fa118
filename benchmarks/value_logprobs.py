"""Peak memory and step time of value-training steps: a baseline revision's code against the working tree's, on a
random Qwen3-shaped model with Qwen3's real 151,669-token vocabulary (issue #38: the value stage off full logits).

    python benchmarks/value_logprobs.py                         # baseline 3eaefde (full logits), both heads
    python benchmarks/value_logprobs.py --write_results         # and replace its section of benchmarks/RESULTS.md

Each (code, head) pair trains in a fresh interpreter of its own, one after the other, with one torch thread: the
baseline's `src/` (`git archive` of `--baseline_rev`) or the working tree's on its `PYTHONPATH`; this script, the
model and the data are the same for both. Heads: `head_only` (the default recipe: the SFT term needs the labelled
positions) and `likelihood` (`value_reads_likelihood: true`: every response position is scored too).

Per optimizer step, read by a callback from step begin to step end (forward, loss, backward, AdamW): peak RSS above
the RSS at the step's start (the high-water mark is reset through `/proc/self/clear_refs` at every step begin), wall
seconds and this process's CPU seconds. The first step is left out (AdamW allocates its state there); the figures
are medians over the rest.

Model: `Qwen3Config`, hidden 256, 2 layers, 4 heads (2 key-value heads, head_dim 64), MLP 768, embeddings tied as
Qwen3-0.6B's, fp32; its 38.8M embedding parameters are most of it. Data: 8 traces per step, each a prompt and 7
steps of words drawn from `benchmarks.data.WORDS`, rendered with TRL's qwen3 template and cut at 512 tokens, so each
step is 8 x 512 = 4,096 positions; every other trace is positive (its steps are labels).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/value_logprobs.py` puts benchmarks/ on the path, not the repository that holds `tests`.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.data import WORDS  # noqa: E402
from benchmarks.measure import MemoryPeaks  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from benchmarks.sharegpt import machine  # noqa: E402

# The last commit before the value stage left full logits.
BASELINE_REV = "3eaefde"
HEADS = ("head_only", "likelihood")
ROWS_PER_STEP = 8
MAX_LENGTH = 512
SECTION_TITLE = "## Value stage: log-probs off full logits (issue #38)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline_rev", default=BASELINE_REV, help="git revision whose src/ is the old code")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run, the first left out")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--write_results", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    parser.add_argument("--work_dir", help="where the baseline's src/ and the tokenizer go (default: a temp folder)")
    parser.add_argument("--run", choices=HEADS, help=argparse.SUPPRESS)  # internal: train one head in this process
    return parser.parse_args()


def trace_rows(n: int, seed: int) -> list[dict]:
    """`n` traces in the ReST-MCTS* form, each longer than `MAX_LENGTH` tokens once rendered; every other one ends
    with Q = 1 (positive: its steps are SFT labels)."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    return [
        {
            "prompt": text(60),
            "response": [{"step": text(70), "Q": 1.0 if i % 2 == 0 or k < 6 else -1.0} for k in range(7)],
        }
        for i in range(n)
    ]


def train_one(head: str, steps: int, work_dir: Path) -> dict:
    """Train `steps` value steps in this process with whichever `alignment` is on the path; the per-step figures."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Qwen3Config, TrainerCallback

    from alignment.chat.turns import IGNORE_INDEX
    from alignment.value.config import ValueConfig
    from alignment.value.modeling import ValueHead, ValueModel
    from alignment.value.rows import tokenize_traces
    from alignment.value.trainer import ValueTrainer
    from tests.support.real_tokenizers import build

    torch.set_num_threads(1)
    tokenizer = build("qwen3", work_dir / "tokenizers")
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    rows = trace_rows(ROWS_PER_STEP * steps, seed=0)
    dataset, _ = tokenize_traces(Dataset.from_list(rows), tokenizer, max_length=MAX_LENGTH)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    reads_likelihood = head == "likelihood"
    model = ValueModel(AutoModelForCausalLM.from_config(config), ValueHead(256, reads_likelihood=reads_likelihood))

    class StepMemory(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []
            self.memory = MemoryPeaks("cpu")

        def on_step_begin(self, args, state, control, **kwargs):
            self.memory.step_begin()
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            wall, cpu = self.start
            self.steps.append(
                {
                    "peak_mib": self.memory.step_peak(),
                    "wall_s": time.perf_counter() - wall,
                    "cpu_s": time.process_time() - cpu,
                }
            )

    meter = StepMemory()
    args = ValueConfig(
        output_dir=str(work_dir / f"run-{head}-{os.getpid()}"),
        report_to="none",
        max_steps=steps,
        per_device_train_batch_size=ROWS_PER_STEP,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        value_reads_likelihood=reads_likelihood,
    )
    trainer = ValueTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[meter]
    )
    trainer.train()
    labels = torch.tensor(dataset["labels"])
    response = torch.tensor(dataset["response_mask"])
    return {
        "vocab": len(tokenizer),
        "positions_per_step": labels.numel() / steps,
        "labelled_share": float((labels[:, 1:] != IGNORE_INDEX).float().mean()),
        "response_share": float(response.float().mean()),
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "steps": meter.steps,
    }


def run_in_fresh_process(src: Path, head: str, args: argparse.Namespace) -> dict:
    """`train_one(head)` in a new interpreter with `src` first on its path and one thread."""
    command = [sys.executable, __file__, "--run", head, "--steps", str(args.steps), "--work_dir", args.work_dir]
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, **threads, "PYTHONPATH": f"{src}:{REPO_ROOT}", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{head} with {src} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_src(rev: str, work_dir: Path) -> Path:
    """`src/` of revision `rev`, exported under `work_dir`."""
    target = work_dir / f"baseline-{rev}"
    if not target.is_dir():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def medians(run: dict) -> dict[str, float]:
    measured = run["steps"][1:]
    return {key: statistics.median(step[key] for step in measured) for key in ("peak_mib", "wall_s", "cpu_s")}


def section(runs: dict[tuple[str, str], dict], args: argparse.Namespace, command: str) -> str:
    """Markdown: one row per (head, code), the ratios new / old, the machine, the command."""
    first = next(iter(runs.values()))
    lines = [
        SECTION_TITLE,
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {machine()}, one torch "
        "thread per run, the runs one after the other, each in its own process (method: `benchmarks/value_logprobs.py`"
        f"). Random Qwen3-shaped model (hidden 256, 2 layers, tied embeddings), vocabulary {first['vocab']:,}; "
        f"{first['positions_per_step']:,.0f} positions per step, {first['labelled_share']:.0%} of them labelled, "
        f"{first['response_share']:.0%} on the response. Medians of steps 2-{args.steps}. "
        "Wall seconds also count the time other jobs held the core; CPU seconds measure the work (as in "
        "`benchmarks/measure.py`).",
        "",
        "| head | code | peak RSS above step start, MiB | wall s/step | CPU s/step | peak new/old | CPU new/old |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for head in args.heads:
        old, new = medians(runs[head, "old"]), medians(runs[head, "new"])
        for code, figures in (("old", old), ("new", new)):
            name = f"{args.baseline_rev} (full logits)" if code == "old" else "chunked log-probs"
            ratios = (
                "| | |"
                if code == "old"
                else f"| {new['peak_mib'] / old['peak_mib']:.3f} | {new['cpu_s'] / old['cpu_s']:.2f} |"
            )
            lines.append(
                f"| {head} | {name} | {figures['peak_mib']:,.0f} | {figures['wall_s']:.1f} | {figures['cpu_s']:.1f} "
                + ratios
            )
    for head in args.heads:
        pairs = zip(runs[head, "old"]["losses"], runs[head, "new"]["losses"], strict=True)
        lines.append(
            f"\nLogged losses of {head}, old / new (the same batches): "
            + ", ".join(f"{a:.4f} / {b:.4f}" for a, b in pairs)
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.run:
        print(json.dumps(train_one(args.run, args.steps, Path(args.work_dir))))
        return
    command = "python " + " ".join([str(Path(__file__).relative_to(REPO_ROOT)), *sys.argv[1:]])
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="value-logprobs-")
    sources = {"old": baseline_src(args.baseline_rev, Path(args.work_dir)), "new": REPO_ROOT / "src"}
    runs = {}
    for head in args.heads:
        for code, src in sources.items():
            runs[head, code] = run_in_fresh_process(src, head, args)
            figures = medians(runs[head, code])
            print(f"{head} {code}: " + ", ".join(f"{key} {value:.1f}" for key, value in figures.items()), flush=True)
    text = section(runs, args, command)
    if args.write_results:
        write_section(text, REPO_ROOT / "benchmarks" / "RESULTS.md")
    else:
        print(text)


if __name__ == "__main__":
    main()
