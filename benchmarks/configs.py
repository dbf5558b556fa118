"""What the benchmark compares: the sizes of a run (`Settings`, quick or full) and the configurations of each stage.

A configuration is either the plain-TRL baseline (TRL's trainer as its docs show it: raw rows, default padding and
sampling, reference log-probs recomputed at every step) or one of ours, written as the recipe keys a user would put
in the YAML of `scripts/run_*.py` on top of the settings every configuration shares (`stages.shared_arguments`).
Kept free of torch imports: the parent process of `run.py` reads it without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment.stages import STAGES as STAGES_BY_NAME


@dataclass(frozen=True)
class Settings:
    """Model, data and repetition sizes of one benchmark run. Every configuration of a stage trains one epoch (three
    for DPO) over the same rows, `batch_size` sequences per optimizer step (chats, traces; a preference pair counts
    two). Length grouping sorts transformers' mega-batches of min(rows / (4 x batch), 50) batches: the more rows, the
    better it groups, so a stage needs enough rows for grouping to show what it does on a real data set."""

    hidden_size: int
    num_layers: int
    max_length: int
    batch_size: int
    repeats: int
    warmup_steps: int  # steps left out of throughput: the first steps pay for allocation and lazy initialisation
    sft_rows: int
    dpo_rows: int
    rm_rows: int
    value_rows: int
    held_out_rows: int  # SFT chats for the final held-out loss, DPO and RM pairs for the final accuracy
    dpo_epochs: int = 3
    learning_rate: float = 1e-3  # a randomly initialised model this small wants a large rate
    # "tiny": `tiny_world`'s 400-token tokenizer, a random Llama and synthetic rows (`benchmarks.data`); "qwen3":
    # Qwen3's real 151,669-token vocabulary and template, a random Qwen3-shaped model and ShareGPT chats
    # (`benchmarks.real_data`), where the output layer dominates the step.
    vocabulary: str = "tiny"


QUICK = Settings(
    hidden_size=256,
    num_layers=4,
    max_length=256,
    batch_size=8,
    repeats=3,
    warmup_steps=1,
    sft_rows=120,
    dpo_rows=48,
    rm_rows=96,
    value_rows=128,
    held_out_rows=16,
)
FULL = Settings(
    hidden_size=384,
    num_layers=6,
    max_length=512,
    batch_size=8,
    repeats=5,
    warmup_steps=2,
    sft_rows=400,
    dpo_rows=64,
    rm_rows=320,
    value_rows=400,
    held_out_rows=64,
)


# Issue #38's rows: 8 sequences of up to 512 tokens (about 4,096 positions) per step, 5 steps per run (1 warm-up),
# hidden 256 and 2 layers, so that the 151,669 x 256 output layer is most of the model.
REAL_VOCABULARY = Settings(
    hidden_size=256,
    num_layers=2,
    max_length=512,
    batch_size=8,
    repeats=2,
    warmup_steps=1,
    sft_rows=40,
    dpo_rows=20,
    rm_rows=40,
    value_rows=40,
    held_out_rows=8,
    dpo_epochs=1,
    vocabulary="qwen3",
)


@dataclass(frozen=True)
class Configuration:
    stage: str  # a registered stage (`alignment.stages.STAGES`)
    name: str
    description: str
    baseline: bool = False  # plain TRL; otherwise our script's wiring with `recipe` on top of the shared settings
    recipe: dict[str, Any] = field(default_factory=dict)
    in_quick: bool = True  # also run by `--quick` (which leaves out what only separates two effects)
    in_real_vocabulary: bool = False  # also run by `--real_vocabulary` (the plain-TRL baseline and our default)

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


CONFIGURATIONS = (
    Configuration(
        "sft",
        "trl",
        "trl.SFTTrainer on `messages`, defaults (padded, random order)",
        baseline=True,
        in_real_vocabulary=True,
    ),
    Configuration("sft", "padded", "run_sft.py defaults: our masks, padded, random order", in_real_vocabulary=True),
    Configuration(
        "sft",
        "grouped",
        "run_sft.py + `train_sampling_strategy: group_by_length`",
        recipe={"train_sampling_strategy": "group_by_length"},
    ),
    # The batch is counted in packs of up to max_length tokens; `stages` sets it so that a step holds as many
    # sequences on average as the other configurations' batches (see `World.packs_per_batch`).
    Configuration("sft", "packing", "run_sft.py + `packing: true` (best-fit, padding-free)", recipe={"packing": True}),
    Configuration("sft", "padding_free", "run_sft.py + `padding_free: true`", recipe={"padding_free": True}),
    Configuration(
        "dpo",
        "trl",
        "trl.DPOTrainer, defaults (reference forward at every step)",
        baseline=True,
        in_real_vocabulary=True,
    ),
    # Separates the reference cache from the rest of our wiring (on real vocabularies, the CPU head).
    Configuration(
        "dpo",
        "defaults",
        "run_dpo.py defaults (reference forward at every step)",
        in_quick=False,
        in_real_vocabulary=True,
    ),
    Configuration(
        "dpo",
        "cached_ref",
        "run_dpo.py + `precompute_ref_log_probs: true` (one reference pass, cached on disk)",
        recipe={"precompute_ref_log_probs": True},
        in_real_vocabulary=True,
    ),
    Configuration(
        "dpo",
        "cached_grouped",
        "run_dpo.py + `precompute_ref_log_probs: true` + `train_sampling_strategy: group_by_length`",
        recipe={"precompute_ref_log_probs": True, "train_sampling_strategy": "group_by_length"},
    ),
    Configuration(
        "rm", "trl", "trl.RewardTrainer, defaults (random pair order)", baseline=True, in_real_vocabulary=True
    ),
    # Separates our wiring from the grouping: the trainer of `grouped` with pairs in random order.
    Configuration(
        "rm",
        "random",
        "run_rm.py + `train_sampling_strategy: random`",
        recipe={"train_sampling_strategy": "random"},
        in_quick=False,
    ),
    Configuration(
        "rm",
        "grouped",
        "run_rm.py + `train_sampling_strategy: group_by_length`",
        recipe={"train_sampling_strategy": "group_by_length"},
        in_real_vocabulary=True,
    ),
    Configuration("value", "random", "run_value.py defaults (random order)", in_real_vocabulary=True),
    Configuration(
        "value",
        "grouped",
        "run_value.py + `train_sampling_strategy: group_by_length`",
        recipe={"train_sampling_strategy": "group_by_length"},
    ),
)
# The stages benchmarked: those with configurations, in the order of the registry (tests/unit/test_layout.py).
STAGES = tuple(name for name in STAGES_BY_NAME if any(c.stage == name for c in CONFIGURATIONS))


def reference_of(stage: str) -> Configuration:
    """The configuration a stage's ratios are taken against: the plain-TRL baseline, or our default where TRL has no
    trainer for the stage (value models)."""
    stage_configurations = [c for c in CONFIGURATIONS if c.stage == stage]
    return next((c for c in stage_configurations if c.baseline), stage_configurations[0])
