"""The tiny world's command line: build it on disk, or report how a trained model does on its held-out chats.

    python -m tiny_world build --output_dir data/tiny      # writes base/ (model + tokenizer) and every stage's data
    python -m tiny_world evaluate outputs/tiny/sft --data data/tiny/sft/test.jsonl --baseline data/tiny/base
    python -m tiny_world chains --output_dir data/tiny/chains    # chained additions, the task of the search demo

`evaluate` prints, for the model and its baseline, the held-out loss per assistant token and the share of greedy
answers the rule (`tiny_world.arithmetic.answer_is_correct`) calls correct.
"""

import argparse
import logging

from alignment.runtime.cli import run_cli
from tiny_world.build import build_tiny_world
from tiny_world.chains import write_chain_data
from tiny_world.evaluation import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tiny_world", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the tiny model, tokenizer and data")
    build.add_argument("--output_dir", default="data/tiny")
    build.add_argument("--seed", type=int, default=0)
    chains = commands.add_parser("chains", help="write the chained-addition data (SFT chats, value traces, prompts)")
    chains.add_argument("--output_dir", default="data/tiny/chains")
    chains.add_argument("--seed", type=int, default=0)
    chains.add_argument(
        "--largest_number", type=int, default=9, help="numbers 1..this (the rest_mcts recipes fit up to 99)"
    )
    report = commands.add_parser("evaluate", help="held-out loss and accuracy of a trained model vs its base")
    report.add_argument("model_dir")
    report.add_argument("--data", required=True, help="held-out chats (.jsonl)")
    report.add_argument("--baseline", required=True, help="the model before training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "build":
        build_tiny_world(args.output_dir, seed=args.seed)
        return
    if args.command == "chains":
        try:
            write_chain_data(args.output_dir, seed=args.seed, largest_number=args.largest_number)
        except ValueError as err:  # the one refusal of its arguments (`largest_number` too small): a usage error
            parser.error(str(err))
        return
    results = evaluate({"before (base)": args.baseline, "after (SFT)": args.model_dir}, args.data)
    print(f"\nHeld-out results on {args.data}")
    print(f"{'model':<16}{'assistant-token loss':>22}{'rule-correct':>14}")  # exactly `a+b=<sum>`, nothing else
    for name, metrics in results.items():
        print(f"{name:<16}{metrics['held_out_loss']:>22.3f}{metrics['accuracy']:>14.1%}")


if __name__ == "__main__":
    run_cli(main)
