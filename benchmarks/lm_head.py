"""The LM head alone on CPU: TRL's fused head as it runs off Triton against ours (`alignment.runtime.lm_head`), at
Qwen3's 151,669-token vocabulary, by the share of positions that are trained (issue #38).

    python benchmarks/lm_head.py                     # 4,096 positions, hidden 256, trained shares 25/50/100%
    python benchmarks/lm_head.py --write_results     # and replace its section of benchmarks/RESULTS.md

One forward and backward of the head per step, from the token ids to the loss (`fused_lm_head=True` on a one-layer
Qwen3-shaped model whose body is negligible next to its head), the way TRL's SFT trainer asks for it: the label
log-probs plus the entropy and top-1 flags its `entropy` and `mean_token_accuracy` metrics read. Each
(head, share) pair runs in a fresh interpreter with one torch thread: peak RSS above the step's start (`MemoryPeaks`)
and CPU seconds, medians of the steps after the first. "TRL" is `trl.trainer.utils.add_fused_lm_head` as installed;
"ours" is the same forward wrapped by `compact_fused_head`. The last two rows are ours without the metrics' outputs,
which is what they cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from alignment.runtime.lm_head import CPU_VOCAB_TILE  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from benchmarks.sharegpt import machine  # noqa: E402

SECTION_TITLE = "## The LM head alone on CPU: TRL's fused head against ours (issue #38)"
VOCAB = 151_669  # Qwen3's
SFT_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what TRL's SFT trainer asks the fused head for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=4096, help="positions per step (batch x sequence)")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="trained shares")
    parser.add_argument("--steps", type=int, default=3, help="steps per run, the first left out")
    parser.add_argument("--write_results", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one (head, share, outputs) run, as JSON
    return parser.parse_args()


def run_one(head: str, share: float, outputs: list[str], args: argparse.Namespace) -> dict:
    """`args.steps` head steps in this process; their figures."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from alignment.runtime.lm_head import compact_fused_head
    from benchmarks.measure import MemoryPeaks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size,
        num_hidden_layers=1,
        num_attention_heads=args.hidden_size // 64,
        num_key_value_heads=1,
        head_dim=64,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(config)
    add_fused_lm_head(model, outputs=tuple(outputs))
    if head == "ours":
        compact_fused_head(model)
    rows, length = args.positions // 512, 512
    input_ids = torch.randint(0, VOCAB, (rows, length))
    labels = input_ids.clone()
    labels[:, : round(length * (1 - share))] = -100  # a prompt before each trained reply
    memory, steps = MemoryPeaks("cpu"), []
    for _ in range(args.steps):
        memory.step_begin()
        cpu = time.process_time()
        loss = model(input_ids=input_ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        steps.append({"peak_mib": memory.step_peak(), "cpu_s": time.process_time() - cpu, "loss": loss.item()})
    return {key: statistics.median(step[key] for step in steps[1:]) for key in ("peak_mib", "cpu_s", "loss")}


def in_fresh_process(head: str, share: float, outputs: tuple[str, ...], args: argparse.Namespace) -> dict:
    spec = json.dumps({"head": head, "share": share, "outputs": list(outputs)})
    command = [sys.executable, __file__, "--run", spec, "--positions", str(args.positions)]
    command += ["--hidden_size", str(args.hidden_size), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": f"{REPO_ROOT / 'src'}"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def section(rows: list[tuple[str, float, tuple[str, ...], dict]], args: argparse.Namespace, command: str) -> str:
    trl = {share: figures for head, share, outputs, figures in rows if head == "trl"}
    lines = [
        SECTION_TITLE,
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {machine()}, one torch "
        f"thread per run, each in its own process. {args.positions:,} positions per step (rows of 512, a prompt of "
        f"-100 labels before the trained share), hidden {args.hidden_size}, vocabulary {VOCAB:,}, fp32, forward and "
        f"backward of the head; medians of steps 2-{args.steps} (method: `benchmarks/lm_head.py`).",
        "",
        "| head | outputs | trained share | step peak MiB | CPU s/step | peak / TRL's | CPU / TRL's |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for head, share, outputs, figures in rows:
        name = "TRL 1.16 off Triton" if head == "trl" else f"ours (compact, {CPU_VOCAB_TILE:,}-wide tiles)"
        base = trl.get(share)
        ratios = (
            f"{figures['peak_mib'] / base['peak_mib']:.3f} | {figures['cpu_s'] / base['cpu_s']:.2f}"
            if base and head != "trl"
            else " | "
        )
        lines.append(
            f"| {name} | {', '.join(outputs)} | {share:.0%} | {figures['peak_mib']:,.0f} | {figures['cpu_s']:.2f} | "
            f"{ratios} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.run:
        spec = json.loads(args.run)
        print(json.dumps(run_one(spec["head"], spec["share"], spec["outputs"], args)))
        return
    command = "python " + " ".join([str(Path(__file__).relative_to(REPO_ROOT)), *sys.argv[1:]])
    plan = [(head, share, SFT_OUTPUTS) for share in args.shares for head in ("trl", "ours")]
    plan += [("ours", share, ("log_probs",)) for share in (min(args.shares), max(args.shares))]
    rows = []
    for head, share, outputs in plan:
        figures = in_fresh_process(head, share, outputs, args)
        rows.append((head, share, outputs, figures))
        print(f"{head} share {share:.0%} {outputs}: {figures}", flush=True)
    text = section(rows, args, command)
    if args.write_results:
        write_section(text, REPO_ROOT / "benchmarks" / "RESULTS.md")
    else:
        print(text)


if __name__ == "__main__":
    main()
