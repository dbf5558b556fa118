"""Value-guided search over reasoning steps (ReST-MCTS*): a policy proposes steps, a value model ranks them.

Searches every prompt with `greedy`, `best_of_n`, `beam` or `mcts` (MCTS*), verifies the finished traces with a rule,
and writes what one self-training iteration trains on: the traces with ReST-MCTS*'s per-step value targets, for
`scripts/run_value.py`, and the verified-correct traces as SFT chats, for `scripts/run_sft.py`.

    python scripts/run_search.py recipes/tiny/rest_mcts/search/config_train.yaml
    python scripts/run_search.py recipes/tiny/rest_mcts/search/config_test.yaml --algorithm beam --beam_width 4

Outputs in `output_dir`: `traces.jsonl` (`{"prompt", "response": [{"step", "Q"}]}`), `sft.jsonl` (`{"messages"}`),
`progress.jsonl` (one record per prompt: correct or not, generated tokens, value calls), `summary.json` (accuracy of
the chosen traces and compute per prompt), `resolved_config.yaml`, `run_finished.json`. Finished prompts are
appended as they finish; a restart resumes after the last one and writes what an uninterrupted run writes; a
finished run with the same recipe reports complete and exits 0 (`alignment.search.run`).
Errors, each printed as one message with exit status 2 (`alignment.runtime.cli`): `RecipeError` for unknown keys, bad
values, a missing model or prompt file, `OutputDirError` for an `output_dir` that holds another recipe's search.
"""

from alignment.runtime.cli import run_cli
from alignment.search.run import RECIPE_DATACLASSES, run_search

__all__ = ["RECIPE_DATACLASSES"]

if __name__ == "__main__":
    run_cli(run_search)  # parse -> output_dir -> models -> search each prompt (resuming) -> summary
