"""Per-step value targets from a search tree, as ReST-MCTS* infers them (Zhang et al., 2024, "process reward
inference"), and the Q that `scripts/run_value.py` trains on.

In the paper's notation, a partial solution `p_k = [s_1, ..., s_k]` has the quality value `v_k` in [0, 1]:

    v_0 = 0
    w_{s_k} = (1 - v_{k-1}) / (m_k + 1) * (1 - 2 r_{s_k})
    v_k = max(v_{k-1} + w_{s_k}, 0)

where `m_k`, the reasoning distance, is the fewest steps the policy still needed after `s_k` to reach a
verified-correct final answer, and `r_{s_k}` the step's process reward, with `1 - 2 r_{s_k}` = +1 for a step on the
way to a correct answer and -1 for one that is not. On a correct K-step trace (`m_k = K - k`) the value grows
linearly, `v_k = k / K`, so the verified-correct final step has `v_K = 1`; a step that leads nowhere lowers the value,
never below 0.

What the tree decides, as the authors' code does it (`MCTS/base.py`, `treeNode.get_full_value_samples_vm` and
`get_all_value_samples_vm`, `V = max(0, V_parent + (1 - V_parent) * r / m)` there, with the code's `m` the paper's
`m_k + 1`, counting the step itself, and the code's `r` in {+1, -1} the paper's `1 - 2 r_{s_k}`):

* A finished trace (a terminal node) is *correct* when the verifier accepts its final answer (with
  `verify_steps`, and the value model valued each of its steps above 0: `alignment.search.run.prompt_outputs`).
* A node *reaches* a correct answer when a correct terminal node is at or below it; then its factor is +1 and
  `m_k + 1` is the number of steps from it down to the nearest such node, itself included (1 for the correct final
  step, so `v = 1` there).
* A node on the way to a finished trace that reaches no correct answer gets factor -1 and the distance of its
  nearest ancestor that does reach one (the code's `min_steps_to_correct` of that ancestor, copied down the branch).
* No target: a node whose subtree holds no finished trace (an unfinished beam or MCTS frontier: unexplored, not
  wrong), and every node of a tree with no correct finished trace (no distance is defined; the code writes no value
  samples for such a question).

Where the paper's text and the code differ: the paper writes `m_k = K - k` for the steps of one solution of K steps;
the code, and this module, take the fewest steps to any verified-correct answer in the tree, and define the branch
without one by its ancestor's distance, which the paper leaves open. We follow the code throughout.

Q. Our value data holds Q in [-1, 1] and the value head is a tanh: the tree's `v` is written as `Q = 2 v - 1`
(`q_of_value`), the affine map of [0, 1] onto [-1, 1]. It keeps the meaning of both ends of the initial data (+1: a
verified-correct finished answer, -1: no chance left), so a value model trained on +1/-1 traces continues on tree
targets without a change of scale, and a trace whose final Q is 1 is exactly a verified-correct one (the positive,
SFT-trained traces of `alignment.value`). The released ReST-MCTS* rows (`{prompt_answer, label}`) are read with
`Q = label` instead (`alignment.value.formats`); the two scales agree at 1 only.
"""

from __future__ import annotations

from collections.abc import Callable

from alignment.search.algorithms import Node


def q_of_value(value: float) -> float:
    """The Q written to the value data for a ReST-MCTS* value `v` in [0, 1]: `2 v - 1`, in [-1, 1]."""
    return 2.0 * value - 1.0


def reasoning_distances(root: Node, is_correct: Callable[[Node], bool]) -> dict[Node, int]:
    """`m_k + 1` of every node that reaches a verified-correct terminal node: the number of steps from the node down
    to the nearest one, the node itself included (1 at a correct terminal node). Nodes that reach none are absent."""
    distances: dict[Node, int] = {}
    for node in reversed(root.nodes()):  # children before parents
        below = [distances[child] + 1 for child in node.children.values() if child in distances]
        if node is not root and node.terminal and is_correct(node):
            below.append(1)
        if below:
            distances[node] = min(below)
    return distances


def value_targets(root: Node, is_correct: Callable[[Node], bool]) -> dict[Node, float]:
    """ReST-MCTS*'s `v_k` (in [0, 1]) of every node that gets a target (see the module doc); the root is not one.

    `is_correct(node)` is asked of terminal nodes only: whether the verifier accepts that finished trace.
    """
    distances = reasoning_distances(root, is_correct)
    if root not in distances:
        return {}
    finishes = {node for node in root.nodes() if node.terminal}
    on_finished_path: set[Node] = set()
    for node in finishes:
        while node is not None and node not in on_finished_path:
            on_finished_path.add(node)
            node = node.parent
    targets: dict[Node, float] = {}
    values, inherited = {root: 0.0}, {root: distances[root]}
    for node in root.nodes()[1:]:  # parents before children
        parent = node.parent
        if parent not in values or node not in on_finished_path:
            continue
        if node in distances:
            factor, distance = 1.0, distances[node]
        else:
            factor, distance = -1.0, inherited[parent]
        inherited[node] = distance
        v_parent = values[parent]
        values[node] = targets[node] = max(v_parent + (1.0 - v_parent) / distance * factor, 0.0)
    return targets
