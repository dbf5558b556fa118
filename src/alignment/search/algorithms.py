"""The searches over steps and their registry (`SEARCHES`): `greedy`, `best_of_n`, `beam` and `mcts` (MCTS*), each
building a tree of the steps it explored and returning the trace it chose with its compute. A new search is a
function of the same signature and one `SearchAlgorithm` entry.

Every search grows one `Node` tree from the prompt (the root): a node is one step, its children the distinct steps
proposed after it (a step proposed twice is one child, as in the ReST-MCTS* code's `children` dict), and a node is
*terminal* when the policy ended its turn in it or it is the `max_steps`-th step. A `SearchResult` holds the tree,
the chosen node (its path from the root is the answer) and the compute: `generated_tokens` (policy tokens, every one
generated, duplicates and blank steps included), `value_calls` (traces the value model scored) and `scored_tokens`
(the tokens of those traces; no cache is shared between calls). `alignment.search.targets` turns the tree into
value targets once the finished traces are verified.

* `greedy`: one greedy step at a time until the trace is terminal; no value model.
* `best_of_n`: `num_samples` traces sampled step by step (all in one batch), the finished trace with the highest
  value chosen; without a value model, the first finished one (plain sampling, e.g. to write the policy's own
  traces as value data).
* `beam`: `num_candidates` sampled next steps for each of the `beam_width` kept traces; of the new steps the
  `beam_width` highest-valued are kept, terminal ones set aside as finished; until none is left to extend. The
  highest-valued finished trace is chosen.
* `mcts`: MCTS* as ReST-MCTS* describes it (and as its `MCTS/mcts.py` does it): each round *selects* a node by going
  down from the root to the child with the highest `V(child) + c * sqrt(2 ln N(parent) / N(child))` while the node is
  expanded, *expands* it with `num_candidates` sampled steps, *evaluates* each new child with the value model (its
  `V`, one visit), and *backs up*: every node on the path gets one more visit and `V` = the visit-weighted mean of
  its children's `V`. Selection skips *exhausted* subtrees, those with nothing left to expand: a finished trace, or a
  node all of whose children are exhausted. Rounds run until `token_budget` policy tokens are spent, the whole tree
  is exhausted or `max_rollouts` rounds are done; the highest-valued terminal node is chosen, and when none was
  reached the highest-valued leaf is completed greedily. Differences from the authors' code, where the paper leaves
  them open: no simulation (their optional greedy roll-out; the brief and the paper use the value model as the leaf
  evaluation), so a new child starts with one visit rather than none; no early stop at a value threshold
  (`end_gate`): the budget is the comparison's; a finished trace is not selected again (their value-sampling mode
  re-selects it and skips the expansion, a round that adds a visit and costs no token). Each node is expanded once,
  so where the policy's samples of a step are mostly duplicates the tree runs out before the budget does (the
  tokens it spent are in `benchmarks/RESULTS.md`); ties in UCT go to the first child,
  not a random one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alignment.search.policy import Prompt, Proposal, StepPolicy, StepScorer

if TYPE_CHECKING:
    from alignment.search.config import SearchConfig


@dataclass(eq=False)
class Node:
    """One step of a search tree (the root holds no step)."""

    step: str | None = None
    parent: Node | None = None
    children: dict[str, Node] = field(default_factory=dict)
    depth: int = 0
    terminal: bool = False  # the policy ended its turn here, or this is the `max_steps`-th step
    value: float | None = None  # the value model's estimate after this step (None: never scored)
    visits: int = 0  # mcts: N
    mean_value: float = 0.0  # mcts: V, the visit-weighted mean of the children's V (the leaf's own value at first)

    @property
    def path(self) -> list[Node]:
        """The nodes from the root's child down to this node (empty at the root)."""
        node, path = self, []
        while node.parent is not None:
            path.append(node)
            node = node.parent
        return path[::-1]

    @property
    def steps(self) -> list[str]:
        """The steps from the root to this node."""
        return [node.step for node in self.path]

    @property
    def exhausted(self) -> bool:
        """mcts: nothing below is left to expand, as each node is expanded once: a finished leaf, or a node every child
        of which is exhausted."""
        children = self.children.values()
        return (self.terminal or bool(children)) and all(child.exhausted for child in children)

    def nodes(self) -> list[Node]:
        """This node and every node below it, parents before children."""
        found, stack = [], [self]
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(reversed(list(node.children.values())))
        return found


@dataclass
class SearchResult:
    """A search: the tree, the chosen node (set when the search ends) and the compute it took."""

    root: Node
    chosen: Node | None = None
    generated_tokens: int = 0
    value_calls: int = 0
    scored_tokens: int = 0

    def terminal_nodes(self) -> list[Node]:
        """Every terminal node of the tree (the finished traces it explored), in tree order."""
        return [node for node in self.root.nodes() if node.terminal]


class _Search:
    """The shared state of one search: prompt, models, config, tree and compute counters."""

    def __init__(self, prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig):
        self.prompt, self.policy, self.scorer, self.config = prompt, policy, scorer, config
        self.result = SearchResult(root=Node())

    def propose(self, nodes: Sequence[Node], num_samples: int, *, sample: bool = True) -> list[list[Proposal]]:
        proposals = self.policy.propose(self.prompt, [node.steps for node in nodes], num_samples, sample=sample)
        self.result.generated_tokens += sum(p.tokens for row in proposals for p in row)
        return proposals

    def grow(self, node: Node, proposal: Proposal) -> Node | None:
        """The child of `node` that `proposal` writes (an existing one when the step is a duplicate), or None for a
        blank step, which ends the trace at `node` (a blank first step is dropped: a trace needs a step)."""
        if not proposal.text:
            if node.parent is not None:
                node.terminal = True
            return None
        child = node.children.get(proposal.text)
        if child is None:
            child = node.children[proposal.text] = Node(proposal.text, parent=node, depth=node.depth + 1)
        child.terminal = child.terminal or proposal.ended or child.depth >= self.config.max_steps
        return child

    def evaluate(self, nodes: Sequence[Node]) -> None:
        """Score every node that has no value yet, in batches of one call."""
        todo = [node for node in dict.fromkeys(nodes) if node.value is None]
        if not todo:
            return
        if self.scorer is None:
            raise ValueError(f"`algorithm: {self.config.algorithm}` needs a value model (`value_model`).")
        values, tokens = self.scorer.score(self.prompt, [node.steps for node in todo])
        for node, value in zip(todo, values, strict=True):
            node.value = node.mean_value = value
        self.result.value_calls += len(todo)
        self.result.scored_tokens += tokens

    def complete_greedily(self, node: Node) -> Node:
        """Extend `node` one greedy step at a time until it is terminal (or a blank step ends it)."""
        while not node.terminal:
            proposal = self.propose([node], 1, sample=False)[0][0]
            child = self.grow(node, proposal)
            if child is None:
                break
            node = child
        return node

    def finish(self, chosen: Node) -> SearchResult:
        self.result.chosen = chosen
        return self.result


def greedy(prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig) -> SearchResult:
    """One greedy step at a time: the baseline."""
    search = _Search(prompt, policy, scorer, config)
    return search.finish(search.complete_greedily(search.result.root))


def best_of_n(prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig) -> SearchResult:
    """`num_samples` sampled traces, advanced together one step at a time; the highest-valued finished one chosen
    (the first finished one without a value model)."""
    search = _Search(prompt, policy, scorer, config)
    root = search.result.root
    ends: list[Node] = []
    active = [root] * config.num_samples
    while active:
        proposals = search.propose(active, 1)
        following = []
        for node, (proposal,) in zip(active, proposals, strict=True):
            child = search.grow(node, proposal)
            if child is None:  # a blank step: the trace ends at `node` (or is dropped, at the root)
                if node is not root:
                    ends.append(node)
            elif child.terminal:
                ends.append(child)
            else:
                following.append(child)
        active = following
    if not ends:  # every sample wrote a blank first step
        return search.finish(root)
    if scorer is None:
        return search.finish(ends[0])
    search.evaluate(ends)
    return search.finish(max(dict.fromkeys(ends), key=lambda node: node.value))


def beam(prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig) -> SearchResult:
    """Step-level beam search on value: `num_candidates` samples per kept trace, the `beam_width` best kept."""
    search = _Search(prompt, policy, scorer, config)
    root = search.result.root
    finished: list[Node] = []
    beams = [root]
    while beams:
        candidates = []
        for node, row in zip(beams, search.propose(beams, config.num_candidates), strict=True):
            for proposal in row:
                child = search.grow(node, proposal)
                if child is None and node is not root:  # a blank step: the trace ends at `node`
                    child = node
                if child is not None:
                    candidates.append(child)
        candidates = list(dict.fromkeys(candidates))
        search.evaluate(candidates)
        kept = sorted(candidates, key=lambda node: node.value, reverse=True)[: config.beam_width]
        finished.extend(node for node in kept if node.terminal)
        beams = [node for node in kept if not node.terminal]
    if not finished:
        return search.finish(root)
    return search.finish(max(dict.fromkeys(finished), key=lambda node: node.value))


def uct_child(node: Node, exploration: float) -> Node:
    """Of the children not exhausted, the one with the highest `V + c * sqrt(2 ln N(node) / N(child))` (the first
    one on ties)."""
    log_visits = math.log(max(node.visits, 1))
    return max(
        (child for child in node.children.values() if not child.exhausted),
        key=lambda child: child.mean_value + exploration * math.sqrt(2 * log_visits / child.visits),
    )


def backup(node: Node) -> None:
    """From `node` up to the root: one more visit each, and `V` = the visit-weighted mean of the children's `V`."""
    while node is not None:
        node.visits += 1
        visited = [child for child in node.children.values() if child.visits]
        if visited:
            total = sum(child.visits for child in visited)
            node.mean_value = sum(child.mean_value * child.visits for child in visited) / total
        node = node.parent


def mcts(prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig) -> SearchResult:
    """MCTS* (see the module doc): select by UCT, expand by sampling, evaluate with the value model, back up."""
    search = _Search(prompt, policy, scorer, config)
    root = search.result.root
    for _ in range(config.max_rollouts):
        if search.result.generated_tokens >= config.token_budget or root.exhausted:
            break
        node = root
        while node.children:  # down to a leaf that is not finished (exhausted subtrees are skipped)
            node = uct_child(node, config.exploration)
        (row,) = search.propose([node], config.num_candidates)
        children = [child for child in (search.grow(node, p) for p in row) if child is not None]
        new = [child for child in dict.fromkeys(children) if child.visits == 0]
        search.evaluate(new)
        for child in new:
            child.visits = 1
        backup(node)
    ends = [node for node in root.nodes() if node.terminal]
    if ends:
        search.evaluate(ends)
        return search.finish(max(ends, key=lambda node: node.value))
    leaves = [node for node in root.nodes() if not node.children and node is not root]
    if not leaves:
        return search.finish(search.complete_greedily(root))
    return search.finish(search.complete_greedily(max(leaves, key=lambda node: node.value)))


SearchFunction = Callable[[Prompt, StepPolicy, "StepScorer | None", "SearchConfig"], SearchResult]


@dataclass(frozen=True)
class SearchAlgorithm:
    """One search: the `algorithm` name that selects it, its function, what `--help` says of it, and whether it
    values every step it creates (then it needs a value model or `value_rule`, and its finished traces carry a value
    at each step for `verify_steps`)."""

    name: str
    run: SearchFunction
    help: str
    values_every_step: bool = False


# The registry: `algorithm`'s choices, its help, and the checks on value models and `verify_steps` derive from it.
SEARCHES: dict[str, SearchAlgorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        SearchAlgorithm("greedy", greedy, "one greedy step at a time, no value model"),
        SearchAlgorithm("best_of_n", best_of_n, "`num_samples` sampled traces, the highest-valued kept"),
        SearchAlgorithm(
            "beam",
            beam,
            "`num_candidates` sampled next steps per beam, the `beam_width` best partial traces by value kept",
            values_every_step=True,
        ),
        SearchAlgorithm(
            "mcts",
            mcts,
            "MCTS*: UCT on value estimates, expansion by `num_candidates` sampled steps, the value model as leaf "
            "evaluation, until `token_budget`",
            values_every_step=True,
        ),
    )
}
STEP_VALUED_ALGORITHMS = tuple(name for name, algorithm in SEARCHES.items() if algorithm.values_every_step)


def search(prompt: Prompt, policy: StepPolicy, scorer: StepScorer | None, config: SearchConfig) -> SearchResult:
    """The search `config.algorithm` names, over `prompt` (messages ending with a user turn)."""
    return SEARCHES[config.algorithm].run(prompt, policy, scorer, config)
