"""Alignment evidence on the tiny world over seeds: the demo's figures, Zephyr's ablation in miniature, every
preference loss on the same task, and online RL (GRPO) against a rule and the trained reward model.

    python benchmarks/evidence.py                       # the three parts below, seeds 0 1 2
    python benchmarks/evidence.py --parts demo          # the tiny pipeline (`make demo`) over seeds
    python benchmarks/evidence.py --parts ablation      # Zephyr's Table 3 in miniature (`make ablation`)
    python benchmarks/evidence.py --parts losses        # every preference loss on the demo's DPO task
    python benchmarks/evidence.py --parts grpo          # online RL from the dSFT model: a rule, the reward model
    python benchmarks/evidence.py --seeds 3 4 --work_dir /tmp/align   # more seeds; an interrupted run resumes

Seed `s` builds its own tiny world (`python -m tiny_world build --seed s`: data, tokenizer and initial weights) and
trains every stage with `seed: s`, so the spread over seeds covers the model's initialisation, the data and the
batch order. Every run is the stage script a user types, on the recipes of `recipes/tiny/` with only paths, the seed
and the part's own keys overridden (`alignment.pipeline`), so a finished run is reused by every part that needs it
(the dSFT model is trained once per seed) and an interrupted benchmark continues where it stopped.

Each policy is judged on the 200 held-out prompts of `data/tiny/dpo/test.jsonl` (operand pairs never trained on) by
greedy decoding: `rule-correct` is the share of replies that are exactly `a+b=<sum>` (`answer_is_correct`), and
`sum-correct` the share whose sum is right whatever follows (`sum_is_correct`), so a style fix that cost arithmetic
shows. The tables (min / median / max over seeds) replace their own sections of `benchmarks/RESULTS.md`
(`--output`) and keep the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

# `python benchmarks/evidence.py` puts benchmarks/ on the path, not the repository that holds the package (named
# `alignment.py`, this script would shadow the `alignment` package itself).
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.evidence_runs import LOSSES, UNPAIRED_LOSSES, Runs  # noqa: E402
from benchmarks.evidence_tables import ablation_section, demo_section, grpo_section, losses_section  # noqa: E402
from benchmarks.report import with_sections_replaced  # noqa: E402

PARTS = ("demo", "ablation", "losses", "grpo")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    losses = [*LOSSES, *UNPAIRED_LOSSES]
    parser.add_argument("--losses", nargs="+", choices=losses, default=losses, help="for --parts losses")
    parser.add_argument("--work_dir", default="outputs/alignment", help="worlds and runs, one folder per seed")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    figures: dict[str, dict[int, dict]] = {part: {} for part in args.parts}
    for seed in args.seeds:
        runs = Runs(Path(args.work_dir) / f"seed{seed}", seed)
        if "demo" in args.parts:
            figures["demo"][seed] = runs.demo()
        if "ablation" in args.parts:
            figures["ablation"][seed] = runs.ablation()
        if "losses" in args.parts:
            figures["losses"][seed] = {
                "dsft": runs.policy_figures(runs.sft()),
                **{loss: runs.preference_loss(loss) for loss in args.losses},
            }
        if "grpo" in args.parts:
            figures["grpo"][seed] = runs.grpo()
    minutes = (time.perf_counter() - start) / 60
    command = "python benchmarks/evidence.py " + " ".join(
        [f"--parts {' '.join(args.parts)}", f"--seeds {' '.join(map(str, args.seeds))}"]
    )
    writers = {"demo": demo_section, "ablation": ablation_section, "losses": losses_section, "grpo": grpo_section}
    sections = [writers[part](figures[part], command, minutes) for part in args.parts]
    Path(args.work_dir, "figures.json").write_text(json.dumps(figures, indent=2))
    output = Path(args.output)
    output.write_text(with_sections_replaced(output.read_text() if output.is_file() else None, sections))
    print("\n\n".join(sections))
    print(f"\n{minutes:.1f} min; written to {output}")


if __name__ == "__main__":
    main()
