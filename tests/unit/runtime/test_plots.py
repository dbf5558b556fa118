"""Plots are written for exactly the metric families a run logged."""

from alignment.dpo.stage import DPOStage
from alignment.runtime.plots import plot_log_history


def test_plots_only_what_was_logged(tmp_path):
    history = [
        {"step": 10, "loss": 2.0, "rewards/accuracies": 0.5},
        {"step": 20, "loss": 1.0, "rewards/accuracies": 0.75},
        {"step": 20, "eval_loss": 1.2, "eval_rewards/accuracies": 0.7},
        {"train_runtime": 3.0},  # summary entries without a step are ignored
    ]
    written = plot_log_history(history, tmp_path, DPOStage.figures)
    assert sorted(p.name for p in written) == ["plot_loss.png", "plot_rewards_accuracies.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_nothing_logged_nothing_written(tmp_path):
    assert plot_log_history([{"train_runtime": 1.0}], tmp_path, DPOStage.figures) == []
    assert list(tmp_path.iterdir()) == []
