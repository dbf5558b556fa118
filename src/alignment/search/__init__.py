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
