"""PNG plots of a run's logged curves, written beside the model (as LLaMA-Factory's `plot_loss` does).

One figure per metric family that the run logged: training and held-out loss always, then the stage's own figures
(`Stage.figures`: DPO `rewards/accuracies` and `rewards/margins`, reward-model `accuracy`, value-model `value_mse`,
...). A metric is plotted when it appears in the trainer's `log_history`; nothing is plotted for metrics a run never
logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)

# Figure name -> the metric keys it shows (train key, eval key); every stage logs these. Keys absent from the log are
# skipped.
LOSS_FIGURE: dict[str, tuple[str, ...]] = {"loss": ("loss", "eval_loss")}


def _series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [step for step, _ in points], [float(value) for _, value in points]


def plot_log_history(
    log_history: list[dict], output_dir: str | Path, figures: dict[str, tuple[str, ...]]
) -> list[Path]:
    """Write `plot_<name>.png` into `output_dir` for the loss and every one of `figures` (name -> metric keys) with
    logged data; return the paths written."""
    written = []
    for name, keys in {**LOSS_FIGURE, **figures}.items():
        curves = {key: _series(log_history, key) for key in keys}
        curves = {key: points for key, points in curves.items() if points[0]}
        if not curves:
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        for key, (steps, values) in curves.items():
            axis.plot(steps, values, marker="o" if len(steps) < 20 else None, label=key)
        if name == "loss" and min(min(values) for _, values in curves.values()) > 0:
            axis.set_yscale("log")  # losses fall by orders of magnitude; a linear axis hides the late progress
        axis.set_xlabel("step")
        axis.set_title(name.replace("_", " "))
        axis.grid(alpha=0.3)
        axis.legend()
        path = Path(output_dir) / f"plot_{name}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    if written:
        logger.info("Plots: %s", ", ".join(str(p) for p in written))
    return written
