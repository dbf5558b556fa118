"""Value-guided search over reasoning steps, and the data one ReST-MCTS* self-training iteration trains on.

A value model (`alignment.value`) scores partial solutions; here it guides a search over the steps a policy proposes
(`policy`: a causal LM generating one line at a time), with four algorithms (`algorithms`: `greedy`, `best_of_n`,
`beam`, `mcts`), each returning the trace it chose, the tree of every step it explored and its compute in policy
tokens and value-model calls, so that searches are compared at equal compute. From a tree whose finished traces are
verified, `targets` infers ReST-MCTS*'s per-step value targets (the `w_k` / `v_k` update) and `run` writes the two
things self-training needs (`scripts/run_search.py`): the traces in the value-data form `run_value.py` trains on, and
the verified-correct traces as SFT rows for `run_sft.py`. `config` holds the recipe keys (`SearchConfig`,
`SearchArguments`).
"""

from alignment.search.algorithms import (
    SEARCHES,
    Node,
    SearchResult,
    backup,
    beam,
    best_of_n,
    greedy,
    mcts,
    search,
    uct_child,
)
from alignment.search.config import ALGORITHMS, SearchArguments, SearchConfig
from alignment.search.policy import (
    LMPolicy,
    Proposal,
    RuleScorer,
    StepPolicy,
    StepRule,
    StepScorer,
    ValueScorer,
    newline_token_ids,
)
from alignment.search.run import RECIPE_DATACLASSES, SearchOutput, prompt_outputs, run_search, summarize
from alignment.search.targets import q_of_value, reasoning_distances, value_targets

__all__ = [
    "ALGORITHMS",
    "LMPolicy",
    "Node",
    "Proposal",
    "RECIPE_DATACLASSES",
    "RuleScorer",
    "SEARCHES",
    "SearchArguments",
    "SearchConfig",
    "SearchOutput",
    "SearchResult",
    "StepPolicy",
    "StepRule",
    "StepScorer",
    "ValueScorer",
    "backup",
    "beam",
    "best_of_n",
    "greedy",
    "mcts",
    "newline_token_ids",
    "prompt_outputs",
    "q_of_value",
    "reasoning_distances",
    "run_search",
    "search",
    "summarize",
    "uct_child",
    "value_targets",
]
