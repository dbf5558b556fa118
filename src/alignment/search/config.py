"""`SearchConfig`, how one search decodes (algorithm, widths, budget, sampling), and `SearchArguments`, what
`scripts/run_search.py` searches with and where it writes. Every field is a recipe key, documented and checked here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from alignment.runtime.rules import load_rule
from alignment.search.algorithms import SEARCHES, STEP_VALUED_ALGORITHMS

# `algorithm`'s type: one of the registered searches (the parser checks it and `--help` lists them).
SearchName = Literal[tuple(SEARCHES)]


def _algorithm_help() -> str:
    """`algorithm`'s help, from the registry."""
    return "; ".join(f"`{name}` ({algorithm.help})" for name, algorithm in SEARCHES.items()) + "."


def _step_valued() -> str:
    """The searches that value every step, for help texts: "`beam` and `mcts`"."""
    names = [f"`{name}`" for name in STEP_VALUED_ALGORITHMS]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


@dataclass
class SearchConfig:
    """How a search decodes: the algorithm and its widths, the step and token limits, and the sampling of steps."""

    algorithm: SearchName = field(default="mcts", metadata={"help": _algorithm_help()})
    num_samples: int = field(default=8, metadata={"help": "best_of_n: complete traces sampled per prompt (N)."})
    beam_width: int = field(default=2, metadata={"help": "beam: partial traces kept after each step (b)."})
    num_candidates: int = field(
        default=4,
        metadata={
            "help": "beam: next steps sampled per kept trace (k); mcts: steps sampled when a node is expanded "
            "(duplicates are merged into one child, as in the ReST-MCTS* code)."
        },
    )
    token_budget: int = field(
        default=400,
        metadata={
            "help": "mcts: policy tokens per prompt; the search stops expanding once it has generated this many (a "
            "trace still unfinished then is completed greedily, those tokens counted too). Compare searches at "
            "equal `generated_tokens`, reported by every search."
        },
    )
    max_rollouts: int = field(
        default=1000,
        metadata={
            "help": "mcts: at most this many select-expand-backup rounds per prompt. Every round expands a node "
            "(a finished trace is never selected again), so `token_budget`, or a tree with nothing left to expand, "
            "normally ends the search first."
        },
    )
    exploration: float = field(
        default=0.5,
        metadata={
            "help": "mcts: UCT constant c in `V(child) + c * sqrt(2 ln N(parent) / N(child))` (ReST-MCTS*'s "
            "`exploration_constant`); 0 is pure exploitation of the value estimates."
        },
    )
    max_steps: int = field(
        default=8,
        metadata={"help": "A trace that reaches this many steps without the policy ending its turn is terminal."},
    )
    max_step_tokens: int = field(
        default=24,
        metadata={"help": "Tokens generated for one step at most (a step ends at its newline or the end of turn)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the sampled steps (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the sampled steps, in (0, 1]."})
    value_batch_size: int = field(default=64, metadata={"help": "Traces per forward pass of the value model."})
    seed: int = field(
        default=0,
        metadata={
            "help": "Sampling seed: prompt i is searched with seed + i, so a resumed run writes what an "
            "uninterrupted one does."
        },
    )

    def __post_init__(self):
        if self.algorithm not in SEARCHES:
            raise ValueError(f"`algorithm: {self.algorithm}`: must be one of {list(SEARCHES)}.")
        counts = ("num_samples", "beam_width", "num_candidates", "token_budget", "max_rollouts", "max_steps")
        for name in (*counts, "max_step_tokens", "value_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}: {getattr(self, name)}`: must be at least 1.")
        if not (math.isfinite(self.exploration) and self.exploration >= 0):
            raise ValueError(f"`exploration: {self.exploration}`: must be a number >= 0 (0.5 is a usual choice).")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(
                f"`temperature: {self.temperature}`: must be > 0 (sampled steps); greedy decoding is "
                "`algorithm: greedy`."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p: {self.top_p}`: must be in (0, 1] (1 samples from the whole distribution).")


@dataclass
class SearchArguments:
    """What `scripts/run_search.py` searches with, over which prompts, and where it writes."""

    policy: str = field(metadata={"help": "The causal LM that proposes steps (a folder with its tokenizer)."})
    prompts: str = field(
        metadata={
            "help": "Prompts to search over (.jsonl): rows with `prompt` (a string or messages) or `messages` (the "
            "final assistant turn is dropped)."
        }
    )
    verifier: str = field(
        metadata={
            "help": "The rule that decides a finished trace's final answer is right: `package.module:function`, "
            "called `(prompt_messages, reply)` with the steps joined by newlines (the tiny world's: "
            "`tiny_world.chains:final_answer_is_correct`)."
        }
    )
    output_dir: str = field(metadata={"help": "Where traces.jsonl, sft.jsonl and summary.json are written."})
    value_model: str | None = field(
        default=None,
        metadata={
            "help": f"The value model (`scripts/run_value.py` output); {_step_valued()} need it or a `value_rule`, "
            "and `best_of_n` ranks its samples by it (without either it keeps its first finished sample: plain "
            "sampling)."
        },
    )
    value_rule: str | None = field(
        default=None,
        metadata={
            "help": "A step rule used as the value instead of a value model, `package.module:function` called "
            "`(prompt_messages, steps)` and returning one bool per step: the value of a trace is +1 while the rule "
            "holds at its last step, -1 otherwise (a perfect process verifier where steps can be checked, e.g. "
            "`tiny_world.chains:step_correctness`; `benchmarks/search.py` uses it for the ceiling of each search). "
            "Exclusive with `value_model`."
        },
    )
    step_rule: str | None = field(
        default=None,
        metadata={
            "help": "A rule that judges every step, `package.module:function` called `(prompt_messages, steps)` "
            "and returning one bool per step (the tiny world's: `tiny_world.chains:step_correctness`). When set, "
            "traces.jsonl holds every finished trace with Q = +1 while the rule holds and -1 from the first step it "
            "fails (the policy's own traces labelled as the initial value data is), instead of the tree's "
            "ReST-MCTS* targets; sft.jsonl and the accuracy still use `verifier`."
        },
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Search only the first N prompts."})
    sft_traces: Literal["correct", "chosen"] = field(
        default="correct",
        metadata={
            "help": "Which verified traces become SFT rows: `correct`, every distinct finished trace of the tree "
            "that is verified (ReST-MCTS*), or `chosen`, the search's answer when it is verified."
        },
    )
    verify_steps: bool = field(
        default=False,
        metadata={
            "help": "A finished trace is verified when the verifier accepts its final answer and, with this set, "
            "the value model (or `value_rule`) also valued every one of its steps above 0 (where the value data's Q "
            "turns from a wrong step, -1, to a right one, +1). A right answer reached through a wrong step, which a "
            "final-answer verifier cannot see, then neither becomes an SFT row nor credits its steps in the tree's "
            "value targets (ReST-MCTS*'s process reward used to select the traces). "
            f"{_step_valued()} only: they value every step. The accuracy in summary.json is the verifier's alone."
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a finished or partial search in `output_dir`."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})

    def __post_init__(self):
        load_rule(self.verifier, key="verifier")  # a bad path stops the run here, before any model is loaded
        for key in ("value_rule", "step_rule"):
            if getattr(self, key) is not None:
                load_rule(getattr(self, key), key=key)
        if self.value_rule is not None and self.value_model is not None:
            raise ValueError(
                f"`value_rule: {self.value_rule}` and `value_model: {self.value_model}`: set one, the value of a "
                "search comes from one of them."
            )
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"`max_prompts: {self.max_prompts}`: must be at least 1, or null for every prompt.")
