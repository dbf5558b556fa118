"""The runs of `benchmarks/evidence.py` for one seed: the tiny world, each stage run as a user runs it, and the
figures each part reports, cached next to the run so that nothing is trained or judged twice."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alignment.data.readers import read_rows
from alignment.evaluation import generate_replies, prompts_from_rows, reward_model_accuracy, value_step_metrics
from alignment.pipeline import PipelineConfig, run_pipeline
from tiny_world import answer_is_correct, build_tiny_world, sum_is_correct

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES = REPO_ROOT / "recipes" / "tiny"
FIGURES_FILE = "benchmark_figures.json"

# Every preference loss the issue compares, as `run_dpo.py` overrides of the demo's DPO recipe (which is
# `sigmoid+pref_ftx`). Each loss keeps the recipe's steps, batch and learning rate; `beta` is each loss's own scale
# (SimPO's reward is beta times a length-averaged log-prob, ORPO's beta weights its odds-ratio term), and `robust`
# needs the label noise it is robust to.
LOSSES: dict[str, list[str]] = {
    "sigmoid": ["--pref_ftx", "0"],
    "sigmoid+pref_ftx": [],
    "ipo": ["--loss_type", "ipo", "--pref_ftx", "0"],
    "hinge": ["--loss_type", "hinge", "--pref_ftx", "0"],
    "kto_pair": ["--loss_type", "kto_pair", "--pref_ftx", "0"],
    "orpo": ["--loss_type", "orpo", "--beta", "1.0", "--pref_ftx", "0"],
    "simpo": ["--loss_type", "simpo", "--beta", "2.0", "--pref_ftx", "0"],
    "simpo+pref_ftx": ["--loss_type", "simpo", "--beta", "2.0"],
    "robust": ["--loss_type", "robust", "--label_smoothing", "0.1", "--pref_ftx", "0"],
    "apo_zero": ["--loss_type", "apo_zero", "--pref_ftx", "0"],
}
# Losses of unpaired feedback, as `run_kto.py` overrides of the tiny KTO recipe: the world's `kto` rows are the same
# prompts as the DPO pairs, one reply each, the clean one desirable on 20% of rows, the flawed one undesirable on the
# rest (`tiny_world.unpaired_rows`); the KTO paper's rule weighs them 4:1.
UNPAIRED_LOSSES: dict[str, list[str]] = {"kto": []}


# GRPO's rule rewards (`run_grpo.py --rewards`); the demo's reward model is the other reward, added per seed.
GRPO_REWARDS = {"rule": {"kind": "rule", "path": "tiny_world.arithmetic:answer_is_correct"}}


@dataclass
class Runs:
    """The world and runs of one seed under `root`: `root/world` (built by `build_tiny_world(seed=seed)`) and one
    folder per run, named by what it is."""

    root: Path
    seed: int
    held_out: list = field(init=False)
    # Runs this process already started, by stage and overrides: the dSFT run feeds a dozen others, and each check
    # through the pipeline is a fresh interpreter importing the training stack only to say "nothing to do".
    started: dict[tuple[str, ...], Path] = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.world / "base" / "config.json").is_file():
            build_tiny_world(self.world, seed=self.seed)
        self.held_out = prompts_from_rows(read_rows(self.world / "dpo" / "test.jsonl"))

    @property
    def world(self) -> Path:
        return self.root / "world"

    def train(self, name: str, stage: str, model: str | Path, data: str, *overrides: str) -> Path:
        """Run `recipes/tiny/<stage>/config.yaml` as `root/<name>` from `model` on the world's `data` folder, with
        the seed and `overrides`; a run already finished with the same recipe is reused (`alignment.pipeline`)."""
        output_dir = self.root / name
        arguments = ["--model_name_or_path", str(model), "--dataset_mixer", json.dumps({str(self.world / data): 1.0})]
        arguments += ["--output_dir", str(output_dir), "--seed", str(self.seed), "--disable_tqdm", "true"]
        recipe = RECIPES / stage / "config.yaml"
        key = (stage, *arguments, *overrides)
        if key not in self.started:
            run_pipeline(PipelineConfig(stages=[{"recipe": str(recipe), "overrides": [*arguments, *overrides]}]))
            self.started[key] = output_dir
        return self.started[key]

    def cached(self, run: Path, measure) -> dict:
        """`measure(run)`, stored in the run's folder the first time."""
        path = run / FIGURES_FILE
        if not path.is_file():
            path.write_text(json.dumps(measure(run), indent=2))
        return json.loads(path.read_text())

    def policy_figures(self, run: Path) -> dict:
        """Greedy replies to the held-out prompts, judged by both rules, and the run's training time."""

        def measure(run: Path) -> dict:
            replies = generate_replies(str(run), self.held_out)
            pairs = list(zip(self.held_out, replies, strict=True))
            figures = {
                "rule_correct": sum(answer_is_correct(p, r) for p, r in pairs) / len(pairs),
                "sum_correct": sum(sum_is_correct(p, r) for p, r in pairs) / len(pairs),
                "examples": [r for _, r in pairs[:3]],
            }
            train_results = run / "train_results.json"
            if train_results.is_file():
                figures["train_seconds"] = json.loads(train_results.read_text())["train_runtime"]
            return figures

        return self.cached(run, measure)

    def sft(self) -> Path:
        """dSFT: the demo's SFT recipe on the careless teacher's chats."""
        return self.train("sft", "sft", self.world / "base", "sft_teacher")

    def dpo(self, name: str = "dpo", model: Path | None = None, *overrides: str) -> Path:
        """dDPO: the demo's DPO recipe, from the dSFT model unless `model` is given."""
        return self.train(name, "dpo", model or self.sft(), "dpo", *overrides)

    def preference_figures(self, run: Path) -> dict:
        """`policy_figures` plus the DPO stage's own held-out figures at its end."""
        figures = dict(self.policy_figures(run))
        final = json.loads((run / "eval_results.json").read_text())
        figures["reward_accuracy"] = final["eval_rewards/accuracies"]
        figures["reward_margin"] = final["eval_rewards/margins"]
        figures["logp_margin"] = final["eval_logps/chosen"] - final["eval_logps/rejected"]
        return figures

    def demo(self) -> dict:
        """The tiny pipeline of `make demo`: dSFT, dDPO, the reward model and the value model."""
        rm = self.train("rm", "rm", self.world / "base", "rm")
        value = self.train("value", "value", self.world / "base", "value")
        return {
            "sft": self.policy_figures(self.sft()),
            "dpo": self.preference_figures(self.dpo()),
            "rm": self.cached(rm, lambda run: {"accuracy": reward_model_accuracy(str(run), self.pairs())}),
            "value": self.cached(value, lambda run: value_step_metrics(str(run), self.steps())),
        }

    def pairs(self) -> list[dict]:
        return read_rows(self.world / "rm" / "test.jsonl")

    def steps(self) -> list[dict]:
        return read_rows(self.world / "value" / "test.jsonl")

    def ablation(self) -> dict:
        """Zephyr's Table 3 set-ups: dDPO from the base model, dSFT, dSFT then one SFT epoch on the chosen replies,
        dSFT then dDPO."""
        sft = self.sft()
        recipe = yaml.safe_load((RECIPES / "dpo" / "config.yaml").read_text())
        epoch = -(-len(read_rows(self.world / "sft_chosen" / "train.jsonl")) // recipe["per_device_train_batch_size"])
        sft_on_chosen = self.train(
            "sft_chosen", "sft", sft, "sft_chosen", "--max_steps", str(epoch), "--warmup_steps", "0",
            "--learning_rate", str(recipe["learning_rate"]), "--lr_scheduler_type", recipe["lr_scheduler_type"],
            "--per_device_train_batch_size", str(recipe["per_device_train_batch_size"]),
            "--eval_steps", str(epoch), "--save_steps", str(epoch),
        )  # fmt: skip
        return {
            "ddpo_only": self.policy_figures(self.dpo("dpo_from_base", self.world / "base")),
            "dsft": self.policy_figures(sft),
            "dsft_then_sft_on_chosen": self.policy_figures(sft_on_chosen),
            "dsft_then_ddpo": self.policy_figures(self.dpo()),
        }

    def grpo(self) -> dict:
        """Online RL from the dSFT model on the teacher's chat prompts (`recipes/tiny/grpo`), rewarded by the rule and,
        separately, by the demo's reward model: no preference pair is read."""
        rm = self.train("rm", "rm", self.world / "base", "rm")
        rewards = {**GRPO_REWARDS, "reward_model": {"kind": "reward_model", "path": str(rm)}}
        figures = {"dsft": self.policy_figures(self.sft())}
        for name, reward in rewards.items():
            run = self.train(f"grpo_{name}", "grpo", self.sft(), "sft_teacher", "--rewards", json.dumps([reward]))
            figures[name] = self.policy_figures(run)
        return figures

    def preference_loss(self, loss: str) -> dict:
        """The demo's DPO run with `loss` (`LOSSES`), from the dSFT model; `sigmoid+pref_ftx` is the demo's run. A
        loss of `UNPAIRED_LOSSES` is the tiny KTO recipe's run on the world's unpaired rows."""
        if loss in UNPAIRED_LOSSES:
            return self.unpaired_figures(self.train(loss, "kto", self.sft(), "kto", *UNPAIRED_LOSSES[loss]))
        name = "dpo" if not LOSSES[loss] else f"dpo_{loss.replace('+', '_')}"
        return self.preference_figures(self.dpo(name, None, *LOSSES[loss]))

    def unpaired_figures(self, run: Path) -> dict:
        """`policy_figures` plus the KTO stage's held-out margins at its end. Its rows are unpaired, so it has no
        reward accuracy; its margins are between the mean desirable and the mean undesirable row."""
        figures = dict(self.policy_figures(run))
        final = json.loads((run / "eval_results.json").read_text())
        figures["reward_accuracy"] = None
        figures["reward_margin"] = final["eval_rewards/margins"]
        figures["logp_margin"] = final["eval_logps/chosen"] - final["eval_logps/rejected"]
        return figures
