"""Benchmark the handbook's training configurations against plain TRL, on the same data, model and global batch.

    python benchmarks/run.py --quick                  # CPU: 8.6-9.6 min measured on 2 cores another job kept busy
                                                      # (with --threads 1); est. 5-7 min on 2 quiet cores
    python benchmarks/run.py --quick --threads 1      # on a machine shared with other jobs (see --threads)
    python benchmarks/run.py                          # CPU, the full sizes (benchmarks/configs.py: FULL)
    python benchmarks/run.py --device cuda            # GPU: bf16, flash-attention 2 when installed, MFU
    python benchmarks/run.py --real_vocabulary --threads 1   # Qwen3's 151,669-token vocabulary on ShareGPT chats
                                                             # against plain TRL (configs.REAL_VOCABULARY)
    python benchmarks/run.py --real_vocabulary --device cuda # the same on a GPU (peak allocated memory)

One run builds the offline world once (`benchmarks.world`: a random Llama and long-tailed chats, pairs and traces),
then trains every configuration of `benchmarks.configs` in its own subprocess (so its peak memory is its own),
repeat by repeat, each stage's configurations back to back so that every ratio compares runs made under the same
machine load. It prints a progress line per run, the tables at the end, and writes `results.json` (every figure of
every run; `results_real_vocabulary.json` with `--real_vocabulary`) and `RESULTS.md` (the tables, the targets, the
machine and this command; `--real_vocabulary` replaces its own section only) to `--output_dir`.

Subprocesses are forked from a fork server that has imported the training stack once: a fresh interpreter per run
would spend ~5 CPU seconds per run importing torch, transformers and TRL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/run.py` puts benchmarks/ on the path, not the repository that holds the `benchmarks` package.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.configs import CONFIGURATIONS, FULL, QUICK, REAL_VOCABULARY, STAGES, Settings  # noqa: E402
from benchmarks.report import (  # noqa: E402
    keeping_other_sections,
    real_vocabulary_markdown,
    results_markdown,
    summarize,
    tables,
    with_sections_replaced,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller model, data and repeats (configs.QUICK)")
    sizes.add_argument(
        "--real_vocabulary",
        action="store_true",
        help="Qwen3's real vocabulary, ShareGPT chats, plain TRL against our defaults (configs.REAL_VOCABULARY); "
        "writes its own section of RESULTS.md",
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run")
    parser.add_argument("--repeats", type=int, help="override the settings' number of repeats")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per run (default: one per core). On a machine other jobs keep busy, 1 avoids OpenMP "
        "threads spinning at barriers while a core is taken: measured 0.8 s vs 6.4 s per step here",
    )
    parser.add_argument("--output_dir", default=str(REPO_ROOT / "benchmarks"), help="where RESULTS.md goes")
    parser.add_argument("--work_dir", help="where the world and the runs' logs go (default: a new temp folder)")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:  # no runs would still rewrite RESULTS.md, with empty tables
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def in_subprocess(entry: str, *args) -> None:
    """Subprocess body: `benchmarks.stages.<entry>(*args)`. Imported here, so that this parent process never loads
    the training stack; the fork server has it preloaded."""
    from benchmarks import stages

    getattr(stages, entry)(*args)


def run_subprocess(context, entry: str, *args) -> int:
    """Run `in_subprocess(entry, *args)` in a process forked from the fork server; its exit code."""
    process = context.Process(target=in_subprocess, args=(entry, *args))
    process.start()
    process.join()
    return process.exitcode


def progress(figures: dict, stage: str) -> str:
    """The progress line's figures for one run: its headline speed and its quality figure."""
    if stage == "dpo":
        return f"wall {figures['wall_s']:.1f} s, pref. acc. {figures['preference_accuracy']:.3f}"
    quality = {"sft": "held_out_loss", "rm": "preference_accuracy", "value": "value_auroc"}[stage]
    return (
        f"{figures['non_pad_tokens_per_s']:,.0f} non-pad tok/s, padding {figures['padding_fraction']:.1%}, "
        f"{quality} {figures[quality]:.4f}"
    )


def main() -> None:
    args = parse_args()
    settings = QUICK if args.quick else REAL_VOCABULARY if args.real_vocabulary else FULL
    if args.repeats:
        settings = Settings(**{**vars(settings), "repeats": args.repeats})
    command = shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]])
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="alignment-benchmarks-"))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # The fork server is a fresh interpreter that imports `benchmarks.stages` before the first fork; Python 3.11 does
    # not hand it this process's sys.path, so the repository goes on its PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["benchmarks.stages"])

    started = time.perf_counter()
    print(f"Building the world in {work_dir} ...", flush=True)
    if run_subprocess(context, "build", vars(settings), str(work_dir)):
        sys.exit(f"Building the world failed: see {work_dir / 'world.log'}")
    world = json.loads((work_dir / "world.json").read_text())

    configurations = [
        c
        for c in CONFIGURATIONS
        if c.stage in args.stages and (c.in_real_vocabulary if args.real_vocabulary else c.in_quick or not args.quick)
    ]
    results: dict[str, list[dict | None]] = {c.key: [] for c in configurations}
    total, done = settings.repeats * len(configurations), 0
    for repeat in range(settings.repeats):
        for configuration in configurations:
            run_dir = work_dir / "runs" / f"{configuration.stage}-{configuration.name}-{repeat}"
            run_started = time.perf_counter()
            exitcode = run_subprocess(
                context,
                "run_configuration",
                configuration.key,
                vars(settings),
                args.device,
                args.threads,
                str(work_dir),
                str(run_dir),
            )
            done += 1
            result_file = run_dir / "result.json"
            figures = json.loads(result_file.read_text()) if exitcode == 0 and result_file.is_file() else None
            results[configuration.key].append(figures)
            status = progress(figures, configuration.stage) if figures else f"FAILED (see {run_dir / 'run.log'})"
            print(
                f"[{done:>2}/{total}] {configuration.key:<18} repeat {repeat + 1}/{settings.repeats}: {status} "
                f"({time.perf_counter() - run_started:.0f} s)",
                flush=True,
            )
    wall = time.perf_counter() - started

    summaries = summarize(results, settings, world["num_parameters"])
    device_name = next((r["device_name"] for runs in results.values() for r in runs if r and "device_name" in r), None)
    print(f"\n{tables(summaries, with_mfu=args.device == 'cuda')}\n\nTotal wall time {wall / 60:.1f} min")
    raw = output_dir / ("results_real_vocabulary.json" if args.real_vocabulary else "results.json")
    raw.write_text(
        json.dumps(
            {"command": command, "settings": vars(settings), "world": world, "wall_s": wall, "runs": results}, indent=2
        )
    )
    results_path = output_dir / "RESULTS.md"
    previous = results_path.read_text() if results_path.is_file() else None
    markdown = real_vocabulary_markdown if args.real_vocabulary else results_markdown
    text = markdown(summaries, settings, world, args.device, device_name, args.threads, command, wall)
    if args.real_vocabulary:
        results_path.write_text(with_sections_replaced(previous, [text]))
    else:
        results_path.write_text(keeping_other_sections(text, previous))
    print(f"Wrote {output_dir / 'RESULTS.md'} and {raw}")
    if any(s.failures for s in summaries):
        sys.exit(1)


if __name__ == "__main__":
    main()
