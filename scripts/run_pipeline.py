"""Run a pipeline of stages, e.g. the tiny Zephyr pipeline: dSFT -> dDPO -> reward model -> value model.

    python scripts/run_pipeline.py recipes/tiny/pipeline.yaml
    python scripts/run_pipeline.py recipes/tiny/pipeline.yaml --launcher "accelerate launch --num_processes 2"

Each stage runs as its own process with its own recipe; a stage already complete with the same recipe says so and
exits at once, and an interrupted one resumes from its last complete checkpoint, so re-running after a failure
continues where it stopped. The SFT output is
the DPO policy and reference because the DPO recipe's `model_name_or_path` names it.
"""

import json
import logging
from pathlib import Path

from alignment.pipeline import PipelineConfig, run_pipeline
from alignment.recipes.parser import RecipeParser
from alignment.runtime.cli import run_cli

RECIPE_DATACLASSES = (PipelineConfig,)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    (config,) = RecipeParser(RECIPE_DATACLASSES).parse()
    records = run_pipeline(config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    Path(config.output_dir, "stages.json").write_text(json.dumps(records, indent=2))
    print(f"\n{'stage':<8}{'status':<10}{'seconds':>9}  output")
    for record in records:
        print(f"{record['stage']:<8}{record['status']:<10}{record['seconds']:>9.0f}  {record['output_dir']}")
    for record in records:
        for plot in sorted(Path(record["output_dir"]).glob("plot_*.png")):
            print(f"plot: {plot}")


if __name__ == "__main__":
    run_cli(main)
