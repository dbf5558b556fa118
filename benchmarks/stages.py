"""One benchmark run: build one configuration's trainer exactly as its user would, train, and measure.

Ours are built by the stage units the scripts run (`alignment.stages.STAGES`): the recipe is written to the run
folder as YAML and taken through the stage's own steps (`start`, `load_data`, `load_model`, `build_trainer`), stopping
where `Stage.run` goes on to save, so what is timed is what `python scripts/run_*.py recipe.yaml` trains. The
baselines use TRL as its documentation shows: the trainer given the model path and the raw rows.
Every trainer gets a `StepMeter` (`benchmarks.measure`); the run ends with one quality figure per stage, so that
speed is never bought with worse learning: held-out assistant-token loss (SFT), held-out preference accuracy (DPO,
RM) and held-out value AUROC (value).

`run_configuration` is the entry point of the subprocess `run.py` starts for each run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import datasets
import torch
import trl
import yaml
from transformers import PreTrainedTokenizerBase, Trainer, set_seed

from alignment.data.readers import read_rows
from alignment.stages import STAGES
from benchmarks.configs import CONFIGURATIONS, Configuration, Settings
from benchmarks.measure import StepMeter, Stopwatch, metered, model_flops_utilization, peak_flops
from benchmarks.world import World, build_world
from tiny_world.evaluation import held_out_loss

RESULT_FILE = "result.json"


def attention_implementation(device: str) -> str:
    """flash-attention 2 on a GPU where it is installed (varlen kernels for padding-free batches), else SDPA."""
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def shared_arguments(settings: Settings, stage: str, device: str, output_dir: Path) -> dict[str, Any]:
    """Trainer arguments every configuration of a stage shares: batch, epochs, optimisation, precision."""
    # `batch_size` counts sequences: a preference pair is two (its chosen and rejected rows are one batch).
    batch = settings.batch_size // 2 if stage in ("dpo", "rm") else settings.batch_size
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": batch,
        "num_train_epochs": settings.dpo_epochs if stage == "dpo" else 1,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,  # transformers 5: below 1, a share of the total steps
        "weight_decay": 0.0,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
        # bf16 on GPU; fp32 on CPU, where bf16 autocast is slower (recipes/tiny) and TRL's default would be refused.
        "bf16": device == "cuda",
        "use_cpu": device == "cpu",
    }


def baseline_model_kwargs(device: str) -> dict[str, Any]:
    """`model_init_kwargs` that give TRL's own model loading the precision and attention our recipes ask for."""
    return {
        "dtype": "bfloat16" if device == "cuda" else "float32",
        "attn_implementation": attention_implementation(device),
    }


def handbook_trainer(
    configuration: Configuration,
    settings: Settings,
    world: World,
    device: str,
    run_dir: Path,
    meter: StepMeter,
    **keys: Any,
) -> tuple[Trainer, PreTrainedTokenizerBase, Stopwatch]:
    """The configuration's trainer as its script builds it: its recipe (plus run-specific `keys`) written to
    `run_dir/recipe.yaml`, then the stage's own steps, with `meter` among the callbacks of a metered trainer class.
    Returns the trainer, its tokenizer, and a stopwatch started once the recipe is parsed (before the data)."""
    recipe = {
        "model_name_or_path": world.model_dir,
        "dtype": "bfloat16" if device == "cuda" else "float32",
        "attn_implementation": attention_implementation(device),
        **({"chat_template": world.chat_template} if world.chat_template else {}),
        "dataset_mixer": {str(Path(world.data_dir, configuration.stage)): 1.0},
        "dataset_splits": ["train", "test"],
        "max_length": settings.max_length,
        "do_eval": True,  # the stages pass the test split to the trainer only then; the stage's quality needs it
        **shared_arguments(settings, configuration.stage, device, run_dir / "output"),
        **configuration.recipe,
        **keys,
    }
    if configuration.recipe.get("packing"):
        recipe["per_device_train_batch_size"] = world.packs_per_batch
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    entry = STAGES[configuration.stage]
    parsed = entry.parse([str(path)])
    stage = entry.stage
    tokenizer = stage.start(parsed)
    stopwatch = Stopwatch()
    data = stage.load_data(parsed, tokenizer)
    model = stage.load_model(parsed, tokenizer)
    trainer_class = metered(stage.trainer_class)
    trainer = stage.build_trainer(parsed, tokenizer, data, model, callbacks=[meter], trainer_class=trainer_class)
    return trainer, tokenizer, stopwatch


def raw_split(world: World, stage: str, split: str) -> datasets.Dataset:
    """A stage's raw rows as a TRL user loads them."""
    return datasets.load_dataset("json", data_files=str(Path(world.data_dir, stage, f"{split}.jsonl")), split="train")


def train_sft(
    configuration: Configuration, settings: Settings, world: World, device: str, run_dir: Path, meter: StepMeter
) -> dict[str, Any]:
    """One epoch of SFT; held-out loss per assistant token (`tiny_world.evaluation.held_out_loss`, the same masks for
    every configuration, whatever tokens it trained on)."""
    if configuration.baseline:
        args = trl.SFTConfig(
            **shared_arguments(settings, "sft", device, run_dir / "output"),
            model_init_kwargs=baseline_model_kwargs(device),
        )
        trainer = metered(trl.SFTTrainer)(
            model=world.model_dir, args=args, train_dataset=raw_split(world, "sft", "train"), callbacks=[meter]
        )
        tokenizer = trainer.processing_class
    else:
        trainer, tokenizer, _ = handbook_trainer(configuration, settings, world, device, run_dir, meter)
    trainer.train()
    held_out = read_rows(Path(world.data_dir, "sft", "test.jsonl"))
    return {"held_out_loss": held_out_loss(trainer.model, tokenizer, held_out, batch_size=settings.batch_size)}


def train_dpo(
    configuration: Configuration, settings: Settings, world: World, device: str, run_dir: Path, meter: StepMeter
) -> dict[str, Any]:
    """DPO over `dpo_epochs` epochs, timed from the raw rows in memory to the trained model: tokenization, loading
    (the baseline's reference copy), our one reference pass over the train split (cached on disk), and the epochs.
    Our reference pass over the test split, which `PreferenceTrainer` makes before training, is left out: the
    baseline makes its test-split reference forwards while evaluating, which is not timed either. Held-out preference
    accuracy (implicit rewards)."""
    if configuration.baseline:
        args = trl.DPOConfig(
            **shared_arguments(settings, "dpo", device, run_dir / "output"),
            model_init_kwargs=baseline_model_kwargs(device),
        )
        train, test = raw_split(world, "dpo", "train"), raw_split(world, "dpo", "test")
        stopwatch = Stopwatch()
        trainer = metered(trl.DPOTrainer)(
            model=world.model_dir, args=args, train_dataset=train, eval_dataset=test, callbacks=[meter]
        )
    else:
        # A cache of the run's own: every run pays for its one reference pass, as a first run does.
        trainer, _, stopwatch = handbook_trainer(
            configuration, settings, world, device, run_dir, meter, ref_logps_cache_dir=str(run_dir / "ref_logps")
        )
    eval_wall, eval_cpu = meter.reference_pass_seconds.get("eval", (0.0, 0.0))
    setup = stopwatch.elapsed()[0] - eval_wall
    trainer.train()
    wall, cpu = stopwatch.elapsed()
    figures = {
        "setup_s": setup,
        "reference_pass_s": meter.reference_pass_seconds.get("train", (0.0, 0.0))[0],
        "eval_reference_pass_s": eval_wall,
        "wall_s": wall - eval_wall,
        "cpu_s": cpu - eval_cpu,
        "preference_accuracy": trainer.evaluate()["eval_rewards/accuracies"],
    }
    return figures


def train_rm(
    configuration: Configuration, settings: Settings, world: World, device: str, run_dir: Path, meter: StepMeter
) -> dict[str, Any]:
    """One epoch of pairwise reward modelling; held-out pair accuracy."""
    if configuration.baseline:
        args = trl.RewardConfig(
            **shared_arguments(settings, "rm", device, run_dir / "output"),
            model_init_kwargs=baseline_model_kwargs(device),
        )
        trainer = metered(trl.RewardTrainer)(
            model=world.model_dir,
            args=args,
            train_dataset=raw_split(world, "rm", "train"),
            eval_dataset=raw_split(world, "rm", "test"),
            callbacks=[meter],
        )
    else:
        trainer, _, _ = handbook_trainer(configuration, settings, world, device, run_dir, meter)
    trainer.train()
    return {"preference_accuracy": trainer.evaluate()["eval_accuracy"]}


def train_value(
    configuration: Configuration, settings: Settings, world: World, device: str, run_dir: Path, meter: StepMeter
) -> dict[str, Any]:
    """One epoch of value training (SFT + per-step Q, ours only: TRL has no value trainer); held-out value AUROC."""
    trainer, _, _ = handbook_trainer(configuration, settings, world, device, run_dir, meter)
    trainer.train()
    return {"value_auroc": trainer.evaluate()["eval_auroc"]}


TRAINERS = {"sft": train_sft, "dpo": train_dpo, "rm": train_rm, "value": train_value}


def run_configuration(key: str, settings: dict, device: str, threads: int | None, work_dir: str, run_dir: str) -> None:
    """Subprocess entry: run configuration `key` ("stage/name") once and write its figures to `run_dir/result.json`.
    `threads` sets torch's CPU threads (None: torch's default, one per core).

    Everything the run prints goes to `run_dir/run.log`. The `datasets` cache is the run's own, so no run reuses the
    tokenization or reference log-probs another one cached (TRL caches those too, next to the data).
    """
    run_path = Path(run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    configuration = next(c for c in CONFIGURATIONS if c.key == key)
    settings = Settings(**settings)
    world = World.load(work_dir)
    datasets.config.HF_DATASETS_CACHE = run_path / "datasets_cache"
    log_to(run_path / "run.log")
    if threads:
        torch.set_num_threads(threads)
    set_seed(0)
    meter = StepMeter(
        synchronize_cuda=device == "cuda", varlen_attention=attention_implementation(device) == "flash_attention_2"
    )
    quality = TRAINERS[configuration.stage](configuration, settings, world, device, run_path, meter)
    figures = {**meter.steady_state(settings.warmup_steps), **quality}
    if device == "cuda":
        figures["device_name"] = torch.cuda.get_device_name()
        peak = peak_flops(figures["device_name"])
        figures["mfu"] = model_flops_utilization(world.num_parameters, figures["non_pad_tokens_per_s"], peak)
    (run_path / RESULT_FILE).write_text(json.dumps(figures, indent=2))


def build(settings: dict, work_dir: str) -> None:
    """Subprocess entry: build the world (`benchmarks.world.build_world`), its log in `work_dir/world.log`."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    log_to(Path(work_dir, "world.log"))
    build_world(work_dir, Settings(**settings))


def log_to(path: Path) -> None:
    """Send this process's stdout and stderr, Python's and C libraries' alike, to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
