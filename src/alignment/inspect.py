"""Look at what an SFT recipe will train on, before paying for it.

    python -m alignment.inspect recipes/tiny/sft/config.yaml --num_examples 3
    python -m alignment.inspect recipes/zephyr-7b-beta/sft/config_full.yaml --json > stats.json

Renders examples with the trained tokens marked (green on a terminal, inside «» otherwise), and reports token-length
statistics, how many examples `max_length` truncates, how many lose every trained token, and the padding fraction
a batch of `per_device_train_batch_size` would carry in random order. Any recipe key can be overridden as in the
scripts (`--max_length 512`). Only the tokenizer is loaded, never the model.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.chat_data import IGNORE_INDEX, padding_fraction, tokenize_chats
from alignment.configs import DataArguments, ModelArguments, SFTConfig
from alignment.data import load_mixture, sft_row_problem
from alignment.model_utils import load_tokenizer
from alignment.parser import RecipeParser
from alignment.templates import set_chat_template, tokenize_conversation

GREEN, RESET = "\033[32m", "\033[0m"


def mark_trained(tokenizer, input_ids: list[int], labels: list[int], *, color: bool) -> str:
    """The decoded example with every run of trained tokens highlighted."""
    opening, closing = (GREEN, RESET) if color else ("«", "»")
    pieces, run, trained_run = [], [], False
    for token_id, label in zip(input_ids, labels, strict=True):
        trained = label != IGNORE_INDEX
        if trained != trained_run and run:
            text = tokenizer.decode(run)
            pieces.append(f"{opening}{text}{closing}" if trained_run else text)
            run = []
        run.append(token_id)
        trained_run = trained
    if run:
        text = tokenizer.decode(run)
        pieces.append(f"{opening}{text}{closing}" if trained_run else text)
    return "".join(pieces)


def length_stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def inspect_recipe(argv: list[str]) -> tuple[dict, PreTrainedTokenizerBase, Dataset, bool]:
    """The statistics for the recipe in `argv` (recipe path first, then overrides), with the tokenizer, the train
    rows and `train_on_prompt` needed to render examples."""
    model_args, data_args, training_args = RecipeParser((ModelArguments, DataArguments, SFTConfig)).parse(argv)
    tokenizer = load_tokenizer(model_args, trust_remote_code=training_args.trust_remote_code)
    set_chat_template(tokenizer, data_args.chat_template, add_missing_tokens=data_args.add_chat_template_tokens)
    raw = load_mixture(data_args, validate_row=sft_row_problem, required_columns=["messages"])
    report: dict = {"max_length": training_args.max_length, "splits": {}}
    for split, dataset in raw.items():
        full, _ = tokenize_chats(dataset, tokenizer, max_length=None, train_on_prompt=data_args.train_on_prompt)
        _, truncation = tokenize_chats(
            dataset, tokenizer, max_length=training_args.max_length, train_on_prompt=data_args.train_on_prompt
        )
        lengths = [len(ids) for ids in full["input_ids"]]
        trained = [sum(label != IGNORE_INDEX for label in labels) for labels in full["labels"]]
        capped = [min(n, training_args.max_length or n) for n in lengths]
        random.Random(training_args.seed).shuffle(capped)
        report["splits"][split] = {
            "examples": len(lengths),
            "tokens": length_stats(lengths),
            "trained_tokens": length_stats(trained),
            "trained_fraction": sum(trained) / sum(lengths),
            "truncated": truncation.truncated,
            "lost_every_trained_token": truncation.lost_all_trained_tokens,
            "padding_fraction": padding_fraction(capped, training_args.per_device_train_batch_size),
        }
    return report, tokenizer, raw["train"], data_args.train_on_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_examples", type=int, default=3, help="examples to render with trained tokens marked")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON only")
    own, recipe_argv = parser.parse_known_args()
    report, tokenizer, rows, train_on_prompt = inspect_recipe(recipe_argv)
    if own.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    color = sys.stdout.isatty()
    for index in range(min(own.num_examples, len(rows))):
        encoded = tokenize_conversation(tokenizer, rows[index]["messages"], train_on_prompt=train_on_prompt)
        print(f"--- train example {index} ({len(encoded['input_ids'])} tokens; trained tokens marked) ---")
        print(mark_trained(tokenizer, encoded["input_ids"], encoded["labels"], color=color))
    for split, stats in report["splits"].items():
        tokens, trained = stats["tokens"], stats["trained_tokens"]
        print(f"\n[{split}] {stats['examples']} examples")
        print(
            f"  tokens per example: min {tokens['min']}, median {tokens['median']:.0f}, p95 {tokens['p95']}, "
            f"max {tokens['max']}; trained tokens per example: median {trained['median']:.0f}, "
            f"{stats['trained_fraction']:.1%} of all tokens"
        )
        print(
            f"  max_length {report['max_length']}: {stats['truncated']} truncated, "
            f"{stats['lost_every_trained_token']} lose every trained token"
        )
        print(f"  padding fraction of a padded batch: {stats['padding_fraction']:.1%}")


if __name__ == "__main__":
    main()
