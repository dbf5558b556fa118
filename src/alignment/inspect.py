"""Look at what an SFT recipe will train on, before paying for it.

    python -m alignment.inspect recipes/tiny/sft/config.yaml --num_examples 3
    python -m alignment.inspect recipes/zephyr-7b-beta/sft/config_full.yaml --json > stats.json

Renders examples with the trained tokens marked (green on a terminal, inside «» otherwise), and reports, per source,
the rows read and dropped by reason (with `skip_invalid_rows`; without it the first invalid row stops inspect as it
stops training), then per split token-length statistics, the turns of each chat and the assistant turns each example
trains, how many examples `max_length` truncates, how many lose every trained token, and the padding fraction a
batch of `per_device_train_batch_size` would carry in random order. Any recipe key can be overridden as in the
scripts (`--max_length 512`). Only the tokenizer is loaded, never the model.

A chat that one sequence cannot hold in every turn's inference context is shown as the examples it becomes
(`history_rewrite`, see `alignment.chat.turns`), each headed with the turn it trains; a chat the template refuses is
shown with the check it failed. Statistics count refused rows by reason instead of stopping at the first.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from functools import partial

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.chat.templates import ChatTemplateError
from alignment.chat.turns import IGNORE_INDEX, encode_chat
from alignment.data.encoding import padding_fraction
from alignment.recipes.arguments import DataArguments
from alignment.runtime.cli import run_cli
from alignment.runtime.lifecycle import load_tokenizer_with_template
from alignment.sft.rows import chat_template_kwargs
from alignment.stages import STAGES

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


def trained_turns(labels: list[int]) -> int:
    """The runs of trained positions in one example's labels: the assistant turns it trains (an untrained prompt
    separates two replies)."""
    return sum(
        1
        for position, label in enumerate(labels)
        if label != IGNORE_INDEX and (position == 0 or labels[position - 1] == IGNORE_INDEX)
    )


def length_stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def inspect_recipe(argv: list[str]) -> tuple[dict, PreTrainedTokenizerBase, Dataset, DataArguments]:
    """The statistics for the recipe in `argv` (recipe path first, then overrides), with the tokenizer, the train
    rows and the data arguments needed to render examples."""
    entry = STAGES["sft"]
    recipe = entry.parse(argv)
    sft = entry.stage
    data_args, training_args = recipe.data, recipe.training
    tokenizer = load_tokenizer_with_template(recipe.model, data_args, training_args)
    raw = sft.load_rows(recipe)
    # Every refusal counted by reason instead of stopping at the first.
    options = {**sft.tokenizer_options(recipe), "skip_invalid_rows": True}
    report: dict = {"max_length": training_args.max_length, "sources": [], "splits": {}}
    for source in raw.report.sources:
        report["sources"].append(
            {"source": source.source, "read": source.read, "dropped": dict(source.invalid.most_common())}
            | {"train": source.train, "test": source.test}
        )
    for split, dataset in raw.items():
        source_of = partial(raw.source_of, split)
        full, _ = sft.tokenize(dataset, tokenizer, split=split, source_of=source_of, **{**options, "max_length": None})
        _, truncation = sft.tokenize(dataset, tokenizer, split=split, source_of=source_of, **options)
        lengths = [len(ids) for ids in full["input_ids"]]
        if not lengths:  # an empty test split, or every row refused (the reasons are logged above)
            report["splits"][split] = {"examples": 0, "rows_refused": truncation.refused_rows}
            continue
        trained = [sum(label != IGNORE_INDEX for label in labels) for labels in full["labels"]]
        capped = [min(n, training_args.max_length or n) for n in lengths]
        random.Random(training_args.seed).shuffle(capped)
        report["splits"][split] = {
            "examples": len(lengths),
            "tokens": length_stats(lengths),
            "trained_tokens": length_stats(trained),
            "trained_fraction": sum(trained) / sum(lengths),
            "turns_per_chat": length_stats([len(messages) for messages in dataset["messages"]]),
            "trained_turns_per_example": length_stats([trained_turns(labels) for labels in full["labels"]]),
            "truncated": truncation.truncated,
            "lost_every_trained_token": truncation.lost_all_trained_tokens,
            "padding_fraction": padding_fraction(capped, training_args.per_device_train_batch_size),
            "rows_expanded": truncation.expanded_rows,
            "rows_last_turn_only": truncation.last_turn_rows,
            "rows_refused": truncation.refused_rows,
        }
    return report, tokenizer, raw["train"], data_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_examples", type=int, default=3, help="examples to render with trained tokens marked")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON only")
    own, recipe_argv = parser.parse_known_args()
    report, tokenizer, rows, data_args = inspect_recipe(recipe_argv)
    if own.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    color = sys.stdout.isatty()
    for index in range(min(own.num_examples, len(rows))):
        try:
            encoding = encode_chat(
                tokenizer,
                rows[index]["messages"],
                history_rewrite=data_args.history_rewrite,
                train_on_prompt=data_args.train_on_prompt,
                template_kwargs=chat_template_kwargs(rows[index]),  # the row's tools, as in training
            )
        except ChatTemplateError as err:
            print(f"--- train row {index}: refused ({err.kind}) ---\n{err}")
            continue
        count = len(encoding.examples)
        for number, example in enumerate(encoding.examples):
            layout = f"; {encoding.layout}: example {number + 1} of {count}" if encoding.layout != "exact" else ""
            print(f"--- train row {index} ({len(example['input_ids'])} tokens{layout}; trained tokens marked) ---")
            print(mark_trained(tokenizer, example["input_ids"], example["labels"], color=color))
    for source in report["sources"]:
        read = ", ".join(f"{split} {count}" for split, count in source["read"].items())
        dropped = ", ".join(f"{kind}: {count}" for kind, count in source["dropped"].items()) or "none"
        print(
            f"\n[{source['source']}] read {read}; dropped {dropped}; -> train {source['train']}, test {source['test']}"
        )
    for split, stats in report["splits"].items():
        if not stats["examples"]:
            print(f"\n[{split}] no examples ({stats['rows_refused']} rows refused)")
            continue
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
        turns, trained_per_example = stats["turns_per_chat"], stats["trained_turns_per_example"]
        print(
            f"  turns per chat: min {turns['min']}, median {turns['median']:.0f}, max {turns['max']}; assistant turns "
            f"trained per example: median {trained_per_example['median']:.0f}, max {trained_per_example['max']}"
        )
        print(f"  padding fraction of a padded batch: {stats['padding_fraction']:.1%}")
        print(
            f"  rows: {stats['rows_expanded']} expanded into one example per turn context, "
            f"{stats['rows_last_turn_only']} trained on their last turn only, {stats['rows_refused']} refused "
            "(reasons logged above)"
        )


if __name__ == "__main__":
    run_cli(main)
