"""From the runs' raw figures to the tables: medians over repeats, ratios to the stage's reference taken pair by pair
(repeat r of a configuration against repeat r of the reference, run back to back), the targets of issue 7, and
`RESULTS.md` with the machine and the command that produced it.

Kept free of torch imports: the parent process of `run.py` uses it without loading the training stack.
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.configs import CONFIGURATIONS, STAGES, Configuration, Settings, reference_of

# The figure each stage's ratio divides (ours over the reference's), its name in the tables, and the same figure by
# CPU time (see `benchmarks/measure.py`).
RATIO_FIGURE = {
    "sft": ("non_pad_tokens_per_s", "non-pad tok/s", "non_pad_tokens_per_cpu_s"),
    "dpo": ("wall_s", "wall time", "cpu_s"),
    "rm": ("non_pad_tokens_per_s", "non-pad tok/s", "non_pad_tokens_per_cpu_s"),
    "value": ("non_pad_tokens_per_s", "non-pad tok/s", "non_pad_tokens_per_cpu_s"),
}
# The memory columns every stage's table ends its speed columns with (`benchmarks/measure.py: MemoryPeaks`).
MEMORY_COLUMNS = (
    ("step_peak_memory_mb", "step peak MiB", "{:,.0f}"),
    ("memory_ratio", "step peak ratio", "{:.2f}x"),
    ("step_time_ratio", "s/step ratio", "{:.2f}x"),
    ("peak_memory_mb", "run peak MiB", "{:,.0f}"),
)
# Columns of each stage's table: (figure, header, format). "ratio" is the pair-by-pair ratio to the reference.
COLUMNS = {
    "sft": [
        ("trained_tokens_per_s", "trained tok/s", "{:,.0f}"),
        ("non_pad_tokens_per_s", "non-pad tok/s", "{:,.0f}"),
        ("ratio", "ratio", "{:.2f}x"),
        ("cpu_ratio", "ratio by CPU time", "{:.2f}x"),
        ("padding_fraction", "padding", "{:.1%}"),
        ("sequences_per_step", "seqs/step", "{:.1f}"),
        ("seconds_per_step", "s/step", "{:.3f}"),
        ("mflop_per_token", "est. MFLOP/token", "{:.1f}"),
        ("attention_share", "attn share", "{:.0%}"),
        *MEMORY_COLUMNS,
        ("held_out_loss", "held-out loss", "{:.4f}"),
    ],
    "dpo": [
        ("wall_s", "wall s", "{:.1f}"),
        ("ratio", "ratio", "{:.2f}x"),
        ("cpu_ratio", "ratio by CPU time", "{:.2f}x"),
        ("setup_s", "setup s", "{:.1f}"),
        ("reference_pass_s", "ref. pass s", "{:.1f}"),
        ("seconds_per_step", "s/step", "{:.3f}"),
        ("non_pad_tokens_per_s", "non-pad tok/s", "{:,.0f}"),
        ("padding_fraction", "padding", "{:.1%}"),
        *MEMORY_COLUMNS,
        ("preference_accuracy", "held-out pref. acc.", "{:.3f}"),
    ],
    "rm": [
        ("non_pad_tokens_per_s", "non-pad tok/s", "{:,.0f}"),
        ("ratio", "ratio", "{:.2f}x"),
        ("cpu_ratio", "ratio by CPU time", "{:.2f}x"),
        ("padding_fraction", "padding", "{:.1%}"),
        ("seconds_per_step", "s/step", "{:.3f}"),
        *MEMORY_COLUMNS,
        ("preference_accuracy", "held-out acc.", "{:.3f}"),
    ],
    "value": [
        ("non_pad_tokens_per_s", "non-pad tok/s", "{:,.0f}"),
        ("ratio", "ratio", "{:.2f}x"),
        ("cpu_ratio", "ratio by CPU time", "{:.2f}x"),
        ("padding_fraction", "padding", "{:.1%}"),
        ("seconds_per_step", "s/step", "{:.3f}"),
        *MEMORY_COLUMNS,
        ("value_auroc", "held-out AUROC", "{:.3f}"),
    ],
}
MFU_COLUMN = ("mfu", "MFU", "{:.1%}")
# Issue 7's targets: (stage, configurations that may meet it, threshold on the ratio, higher ratio is better).
TARGETS = (
    ("sft", ("grouped", "packing", "padding_free"), 1.2, True),
    ("dpo", ("cached_ref", "cached_grouped"), 0.8, False),
    ("rm", ("grouped",), 1.2, True),
)
GPU_SECTION = """## GPU

Not measured: no GPU was lent to the session that produced this file. `python benchmarks/run.py --device cuda`
runs the same configurations with bf16 weights and mixed precision, flash-attention 2 when `flash_attn` is installed
(SDPA otherwise), CUDA-synchronised step timing, `torch.cuda.max_memory_allocated` as peak memory, and MFU for every
configuration (`6 N x non-pad tokens/s` over the GPU's dense bf16 peak, `benchmarks/measure.py: PEAK_BF16_FLOPS`:
H100 SXM/H200 989, H100 NVL 835, H100 PCIe 756, A100 312 TFLOP/s). With flash-attention, attention pairs are counted
per sequence (its varlen kernel), which is where packing and padding-free batches are expected to win on a GPU."""


@dataclass
class Summary:
    configuration: Configuration
    medians: dict[str, float]
    ratio: float | None  # median over repeats of this repeat's figure / the reference's, None for the reference
    cpu_ratio: float | None  # the same by CPU time
    memory_ratio: float | None  # the same of the step's peak memory above its start
    step_time_ratio: float | None  # the same of seconds per step
    repeats: int
    failures: int


def median_figures(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median of every number over the runs that have it (lists, such as per-step times, stay in results.json)."""
    names = {name for run in runs for name, value in run.items() if isinstance(value, (int, float))}
    return {
        name: statistics.median(run[name] for run in runs if run.get(name) is not None)
        for name in names
        if any(run.get(name) is not None for run in runs)
    }


def paired_ratio(runs: list[dict | None], reference_runs: list[dict | None], figure: str) -> float | None:
    """Median over repeats of run[figure] / reference[figure], each pair from the same repeat; None if no pair."""
    ratios = [
        run[figure] / reference[figure]
        for run, reference in zip(runs, reference_runs, strict=True)
        if run is not None and reference is not None and figure in run and reference.get(figure)
    ]
    return statistics.median(ratios) if ratios else None


def flops_per_token(medians: dict[str, float], settings: Settings, num_parameters: int) -> tuple[float, float]:
    """Estimated training FLOPs per non-pad token: (matmuls with the weights, attention).

    Weights: 6 N per computed position (forward 2N, backward 4N; N counts the tied embedding once, as the LM head's
    matmul), times positions per real token. Attention: per query-key pair and layer, QK^T and AV cost 2 x hidden
    multiply-adds, 4 x hidden FLOPs forward and 3x that with the backward, times the pairs the kernel computes.
    """
    weights = 6 * num_parameters * medians["positions_per_token"]
    attention = 12 * settings.hidden_size * settings.num_layers * medians["attention_pairs_per_token"]
    return weights, attention


def summarize(results: dict[str, list[dict | None]], settings: Settings, num_parameters: int) -> list[Summary]:
    """`results[key][repeat]` (None for a failed run) to one `Summary` per configuration that ran, SFT rows with
    their estimated FLOPs per token (`flops_per_token`)."""
    summaries = []
    for configuration in CONFIGURATIONS:
        runs = results.get(configuration.key)
        if runs is None:
            continue
        reference = reference_of(configuration.stage)
        ratio = cpu_ratio = memory_ratio = step_time_ratio = None
        if reference.key != configuration.key and reference.key in results:
            figure, _, cpu_figure = RATIO_FIGURE[configuration.stage]
            ratio = paired_ratio(runs, results[reference.key], figure)
            cpu_ratio = paired_ratio(runs, results[reference.key], cpu_figure)
            memory_ratio = paired_ratio(runs, results[reference.key], "step_peak_memory_mb")
            step_time_ratio = paired_ratio(runs, results[reference.key], "seconds_per_step")
        ok = [run for run in runs if run is not None]
        medians = median_figures(ok)
        if configuration.stage == "sft" and ok:
            weights, attention = flops_per_token(medians, settings, num_parameters)
            medians["mflop_per_token"] = (weights + attention) / 1e6
            medians["attention_share"] = attention / (weights + attention)
        failures = len(runs) - len(ok)
        summaries.append(
            Summary(
                configuration,
                medians,
                ratio,
                cpu_ratio,
                memory_ratio,
                step_time_ratio,
                repeats=len(runs),
                failures=failures,
            )
        )
    return summaries


def stage_table(stage: str, summaries: list[Summary], with_mfu: bool) -> str:
    """One markdown table: a row per configuration, medians over repeats."""
    columns = COLUMNS[stage] + ([MFU_COLUMN] if with_mfu else [])
    header = ["configuration", *[title for _, title, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        if summary.configuration.stage != stage:
            continue
        failed = f" ({summary.failures}/{summary.repeats} failed)" if summary.failures else ""
        cells = [f"`{summary.configuration.name}`{failed}"]
        ratios = {
            "ratio": summary.ratio,
            "cpu_ratio": summary.cpu_ratio,
            "memory_ratio": summary.memory_ratio,
            "step_time_ratio": summary.step_time_ratio,
        }
        for figure, _, fmt in columns:
            value = ratios[figure] if figure in ratios else summary.medians.get(figure)
            if figure in ratios and value is None:
                cells.append("ref." if summary.configuration == reference_of(stage) else "n/a")
            else:
                cells.append("n/a" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(summaries: list[Summary], with_mfu: bool) -> str:
    """Every stage's table under a heading that says what its ratio divides by what."""
    blocks = []
    for stage in STAGES:
        if not any(s.configuration.stage == stage for s in summaries):
            continue
        reference = reference_of(stage)
        blocks.append(
            f"### {stage.upper()}: ratio = {RATIO_FIGURE[stage][1]} / `{reference.name}`'s, pair by pair\n\n"
            f"{stage_table(stage, summaries, with_mfu)}"
        )
    return "\n\n".join(blocks)


def meets_target(summary: Summary, baseline: Summary, threshold: float, higher: bool) -> bool:
    """The ratio on the right side of `threshold` and, for SFT, a held-out loss no worse than the baseline's."""
    fast = summary.ratio >= threshold if higher else summary.ratio <= threshold
    if summary.configuration.stage != "sft":
        return fast
    return fast and summary.medians["held_out_loss"] <= baseline.medians["held_out_loss"]


def target_lines(summaries: list[Summary]) -> list[str]:
    """Each target of the issue met or missed: by the best eligible configuration that meets it, else by the best
    eligible one."""
    by_key = {s.configuration.key: s for s in summaries}
    lines = []
    for stage, names, threshold, higher in TARGETS:
        eligible = [by_key[key] for key in (f"{stage}/{n}" for n in names) if key in by_key and by_key[key].ratio]
        if not eligible:
            continue
        baseline = by_key[reference_of(stage).key]
        meeting = [s for s in eligible if meets_target(s, baseline, threshold, higher)]
        best = (max if higher else min)(meeting or eligible, key=lambda s: s.ratio)
        line = (
            f"- {stage.upper()} {RATIO_FIGURE[stage][1]} {'>=' if higher else '<='} {threshold}x the plain-TRL "
            f"baseline: `{best.configuration.name}` {best.ratio:.2f}x (by CPU time {best.cpu_ratio:.2f}x)"
        )
        if stage == "sft":
            line += (
                f", held-out loss {best.medians['held_out_loss']:.4f} vs the baseline's "
                f"{baseline.medians['held_out_loss']:.4f}"
            )
        lines.append(f"{line}: **{'met' if meeting else 'not met'}**")
    return lines


def sft_findings(by_key: dict[str, Summary]) -> list[str]:
    """Why each SFT configuration is as fast as it is, in estimated FLOPs per real token."""
    trl, grouped, lines = by_key.get("sft/trl"), by_key.get("sft/grouped"), []
    if not trl:
        return lines
    if grouped:
        lines.append(
            f"- SFT, length grouping: padding {trl.medians['padding_fraction']:.0%} -> "
            f"{grouped.medians['padding_fraction']:.0%}, est. {trl.medians['mflop_per_token']:.1f} -> "
            f"{grouped.medians['mflop_per_token']:.1f} MFLOP per real token: {grouped.ratio:.2f}x non-pad tokens/s. "
            "transformers sorts lengths within mega-batches of min(rows / (4 x batch), 50) batches, so it groups "
            "tighter on a real data set than on this small one."
        )
    for name in ("packing", "padding_free"):
        summary = by_key.get(f"sft/{name}")
        if summary:
            medians = summary.medians
            lines.append(
                f"- SFT, `{name}`: no padding, but a step is one row of ~{medians['attention_pairs_per_token']:.0f} "
                "tokens and SDPA on this CPU computes attention over every pair of the row (the mask only zeroes "
                f"cross-sequence pairs): attention is {medians['attention_share']:.0%} of est. FLOPs "
                f"({medians['mflop_per_token']:.1f} MFLOP per real token; the padded baseline "
                f"{trl.medians['mflop_per_token']:.1f}, {trl.medians['attention_share']:.0%} attention), and "
                f"attention kernels run below matmul speed: {summary.ratio:.2f}x. A varlen kernel (flash attention on "
                "a GPU) computes only each sequence's own pairs."
            )
    lines.append(
        "- SFT, trained tokens: our scripts train on the assistant turns only (masks from the chat template), TRL's "
        "default on every token, hence ours' lower `trained tok/s` at the same non-pad speed."
    )
    return lines


def dpo_findings(by_key: dict[str, Summary], epochs: int) -> list[str]:
    """Where the DPO step's time goes: the reference forward (removed by the cache) and padding (cut by grouping)."""
    trl, grouped = by_key.get("dpo/trl"), by_key.get("dpo/cached_grouped")
    if not (trl and grouped):
        return []
    cached = by_key.get("dpo/cached_ref")
    cache_only = f" the cache alone {cached.ratio:.2f}x;" if cached else ""
    return [
        f"- DPO over {epochs} epochs: cached reference plus pairs grouped by length {grouped.ratio:.2f}x the "
        f"baseline's wall time ({grouped.cpu_ratio:.2f}x by CPU time);{cache_only} padding "
        f"{trl.medians['padding_fraction']:.0%} -> {grouped.medians['padding_fraction']:.0%}; one reference pass "
        f"over the train split took {grouped.medians['reference_pass_s']:.1f} s. Held-out preference accuracy "
        f"{trl.medians['preference_accuracy']:.3f} -> {grouped.medians['preference_accuracy']:.3f}."
    ]


def grouping_findings(by_key: dict[str, Summary], stage: str, quality: str, figure: str) -> list[str]:
    """Padding and held-out quality with and without length grouping (RM, value models)."""
    reference, grouped = by_key.get(reference_of(stage).key), by_key.get(f"{stage}/grouped")
    if not (reference and grouped):
        return []
    line = (
        f"- {stage.upper()}, length grouping: padding {reference.medians['padding_fraction']:.0%} -> "
        f"{grouped.medians['padding_fraction']:.0%}: {grouped.ratio:.2f}x non-pad tokens/s; held-out {quality} "
        f"{reference.medians[figure]:.3f} -> {grouped.medians[figure]:.3f}."
    )
    if stage == "rm":
        line += (
            " Part of the padding left is within pairs: a pair's chosen and rejected rows share a batch and "
            "their lengths are independent."
        )
    else:
        line += (
            " After one short epoch from random weights, on few held-out traces, neither AUROC is a trained value "
            "model's yet: the figure catches a broken run, it does not rank the two."
        )
    return [line]


def findings(summaries: list[Summary], settings: Settings) -> list[str]:
    """What dominates each stage's step, from the measured figures."""
    by_key = {s.configuration.key: s for s in summaries if s.medians}
    return [
        *sft_findings(by_key),
        *dpo_findings(by_key, settings.dpo_epochs),
        *grouping_findings(by_key, "rm", "accuracy", "preference_accuracy"),
        *grouping_findings(by_key, "value", "AUROC", "value_auroc"),
    ]


def machine_lines(device: str, device_name: str | None, threads: int | None) -> list[str]:
    """CPU model, cores, library versions and device, one markdown bullet each."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores visible; torch threads per run: "
        + (f"{threads} (`--threads`, see `--help`)" if threads else "one per core (the default)"),
        f"- device: {device}" + (f" ({device_name})" if device_name else ""),
        f"- torch {version('torch')}, transformers {version('transformers')}, trl {version('trl')}, "
        f"Python {platform.python_version()}",
    ]


def method_lines(summaries: list[Summary], settings: Settings, world: dict[str, Any]) -> list[str]:
    """What was trained on what, and how it was measured."""
    return [
        f"- Model: Llama {settings.hidden_size}-d x {settings.num_layers} layers, {world['num_parameters']:,} "
        f"parameters, random init, over `tiny_world`'s tokenizer; max_length {settings.max_length}.",
        f"- Data (`benchmarks/data.py`): log-normal message lengths, nothing longer than max_length; "
        f"{settings.sft_rows} SFT chats of 1-3 exchanges (mean {world['mean_chat_tokens']:.0f} tokens), "
        f"{settings.dpo_rows} DPO pairs, {settings.rm_rows} RM pairs, {settings.value_rows} value traces, "
        f"{settings.held_out_rows} held-out rows each.",
        f"- Every configuration of a stage: the same rows, model, seed and {settings.batch_size} sequences per "
        f"optimizer step (a pair counts two), one epoch ({settings.dpo_epochs} for DPO), fp32 on CPU; each run in "
        "its own process.",
        f"- Throughput over the steps after the first {settings.warmup_steps}, tokens counted from the batches "
        "trained; medians of "
        f"{settings.repeats} repeats; each ratio is the median of per-repeat ratios, the two runs of a pair back to "
        "back. `est. MFLOP/token`: 6 N per computed position plus attention's 12 x hidden x layers per query-key pair "
        "the kernel computes, per real token.",
        "- Configurations:",
        *(f"  - `{s.configuration.key}`: {s.configuration.description}" for s in summaries),
    ]


def results_markdown(
    summaries: list[Summary],
    settings: Settings,
    world: dict[str, Any],
    device: str,
    device_name: str | None,
    threads: int | None,
    command: str,
    wall_s: float,
) -> str:
    """The whole RESULTS.md: how it was produced, the tables, the targets and what dominates the steps."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "# Benchmarks: the handbook's configurations against plain TRL",
            "",
            f"Produced by `{command}` on {date}, in {wall_s / 60:.1f} minutes (raw figures: `results.json`).",
            "",
            *machine_lines(device, device_name, threads),
            "",
            "## Method",
            "",
            *method_lines(summaries, settings, world),
            "",
            "## Results",
            "",
            tables(summaries, with_mfu=device == "cuda"),
            "",
            "## Targets (ratios measured side by side in this run)",
            "",
            *target_lines(summaries),
            "",
            "## What dominates",
            "",
            *findings(summaries, settings),
            "",
            *([GPU_SECTION, ""] if device == "cpu" else []),
        ]
    )


REAL_VOCABULARY_TITLE = "## Real vocabulary: Qwen3's 151,669 tokens against plain TRL (issue #38)"
# Issue #38's goals on real vocabularies: (stage, our configuration, step peak ratio at most, s/step ratio at most),
# each against the stage's plain-TRL baseline.
REAL_VOCABULARY_GOALS = (("sft", "padded", 0.4, 1.0), ("dpo", "defaults", 0.4, 1.0), ("dpo", "cached_ref", 0.4, 1.0))


def real_vocabulary_goal_lines(summaries: list[Summary]) -> list[str]:
    """One bullet per goal: the two ratios, each met or missed."""
    by_key = {s.configuration.key: s for s in summaries}
    lines = []
    for stage, name, memory_goal, time_goal in REAL_VOCABULARY_GOALS:
        summary = by_key.get(f"{stage}/{name}")
        if summary is None or summary.memory_ratio is None or summary.step_time_ratio is None:
            continue
        verdicts = [
            f"step peak {summary.memory_ratio:.2f}x (goal <= {memory_goal}x: "
            f"{'met' if summary.memory_ratio <= memory_goal else 'missed'})",
            f"s/step {summary.step_time_ratio:.2f}x (goal <= {time_goal}x: "
            f"{'met' if summary.step_time_ratio <= time_goal else 'missed'})",
        ]
        lines.append(f"- {stage.upper()} `{name}` against `{reference_of(stage).name}`: " + "; ".join(verdicts))
    return lines


def real_vocabulary_markdown(
    summaries: list[Summary],
    settings: Settings,
    world: dict[str, Any],
    device: str,
    device_name: str | None,
    threads: int | None,
    command: str,
    wall_s: float,
) -> str:
    """The real-vocabulary section of RESULTS.md: how it was produced, the tables and issue #38's goals."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            REAL_VOCABULARY_TITLE,
            "",
            f"Produced by `{command}` on {date}, in {wall_s / 60:.1f} minutes (raw figures: "
            "`results_real_vocabulary.json`).",
            "",
            *machine_lines(device, device_name, threads),
            f"- Model: Qwen3-shaped, hidden {settings.hidden_size}, {settings.num_layers} layers, "
            f"{world['num_parameters']:,} parameters (embeddings tied, as Qwen3-0.6B's), random init, over Qwen3's "
            "tokenizer and TRL's qwen3 template; fp32.",
            f"- Data (`benchmarks/real_data.py`): ShareGPT V3 conversations of {settings.max_length // 2}-"
            f"{settings.max_length} tokens once rendered ({settings.sft_rows} SFT chats), pairs of a chat's last "
            f"reply against another conversation's ({settings.dpo_rows} DPO, {settings.rm_rows} RM); "
            f"{settings.value_rows} synthetic value traces; {settings.held_out_rows} held-out rows each.",
            f"- {settings.batch_size} sequences per optimizer step (a pair counts two), one epoch; figures over the "
            f"steps after the first {settings.warmup_steps}, medians of {settings.repeats} repeats, ratios pair by "
            "pair against the stage's reference, each run in its own process. `step peak`: the step's peak memory "
            "above the memory at its start (resident on CPU, allocated on a GPU: `benchmarks/measure.py`); "
            "`run peak` also holds loading and the held-out evaluation.",
            "- Configurations:",
            *(f"  - `{s.configuration.key}`: {s.configuration.description}" for s in summaries),
            "",
            tables(summaries, with_mfu=device == "cuda"),
            "",
            "Goals of issue #38 (ratios measured side by side in this run):",
            "",
            *real_vocabulary_goal_lines(summaries),
            "",
        ]
    )


def keeping_other_sections(new: str, old: str | None) -> str:
    """The `new` RESULTS.md text followed by every `## ` section of the `old` one that `results_markdown` does not
    write (another benchmark's, such as the ShareGPT corpus section of `benchmarks/sharegpt.py`), so that a rerun of
    `run.py` replaces its own tables and loses nothing else."""
    own = {line for line in new.splitlines() if line.startswith("## ")}
    kept, keeping = [], False
    for line in (old or "").splitlines():
        if line.startswith("## "):
            keeping = line not in own
        if keeping:
            kept.append(line)
    return new.rstrip("\n") + "\n" + ("\n" + "\n".join(kept).rstrip("\n") + "\n" if kept else "")


def with_sections_replaced(old: str | None, sections: list[str]) -> str:
    """`old` RESULTS.md text with each of `sections` (markdown starting with its `## ` title) in place of the section
    of the same title, or appended when it has none: another benchmark's sections, and the title above them, stay."""
    blocks: list[list[str]] = [[]]  # the text before the first `## `, then one block per section
    for line in (old or "").splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    texts = ["\n".join(block).strip("\n") for block in blocks]
    for section in sections:
        title = section.splitlines()[0]
        at = next((i for i, text in enumerate(texts) if i and text.splitlines()[0] == title), None)
        if at is None:
            texts.append(section.strip("\n"))
        else:
            texts[at] = section.strip("\n")
    return "\n\n".join(text for text in texts if text) + "\n"


def write_section(text: str, output: str | Path) -> None:
    """`text` in place of its own section of `output` (RESULTS.md), the other sections kept; printed."""
    path = Path(output)
    path.write_text(with_sections_replaced(path.read_text() if path.is_file() else None, [text]))
    print(text)
