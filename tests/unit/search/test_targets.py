"""ReST-MCTS*'s per-step value targets (`alignment.search.targets`) against values computed by hand from
`v_k = max(v_{k-1} + (1 - v_{k-1}) / (m_k + 1) * (1 - 2 r_k), 0)`, and the Q they are written as."""

import pytest

from alignment.search.algorithms import Node
from alignment.search.targets import q_of_value, reasoning_distances, value_targets


def child(parent: Node, step: str, *, terminal: bool = False) -> Node:
    node = parent.children[step] = Node(step, parent=parent, depth=parent.depth + 1, terminal=terminal)
    return node


@pytest.fixture
def tree():
    """root -> a -> a1 (correct, finished)          a: reaches a correct answer 1 step after itself
          -> a2 (wrong, finished)           a2: a branch with no correct leaf under a correct parent
    -> b -> b1 (wrong, finished)            b: a branch with no correct leaf under the root
    -> c (unfinished frontier)              c: unexplored, no target
    -> d -> d1 -> d2 (correct, finished)    d: a longer correct path"""
    root = Node()
    a = child(root, "a")
    nodes = {"root": root, "a": a, "a1": child(a, "a1", terminal=True), "a2": child(a, "a2", terminal=True)}
    nodes["b"] = child(root, "b")
    nodes["b1"] = child(nodes["b"], "b1", terminal=True)
    nodes["c"] = child(root, "c")
    nodes["d"] = child(root, "d")
    nodes["d1"] = child(nodes["d"], "d1")
    nodes["d2"] = child(nodes["d1"], "d2", terminal=True)
    return nodes


CORRECT = {"a1", "d2"}


def is_correct(node: Node) -> bool:
    assert node.terminal, "the verifier is asked of finished traces only"
    return node.step in CORRECT


def test_reasoning_distance_counts_the_steps_to_the_nearest_correct_answer(tree):
    distances = {node.step or "root": d for node, d in reasoning_distances(tree["root"], is_correct).items()}
    # m_k + 1: a correct finished step is 1; the root is 1 + min(a: 2, d: 3).
    assert distances == {"a1": 1, "a": 2, "d2": 1, "d1": 2, "d": 3, "root": 3}


def test_value_targets_match_the_hand_computed_update(tree):
    targets = {node.step: v for node, v in value_targets(tree["root"], is_correct).items()}
    expected = {
        "a": 0 + (1 - 0) / 2,  # r = correct-bound (+1), m_k + 1 = 2: 0.5
        "a1": 0.5 + (1 - 0.5) / 1,  # the verified-correct final step: 1
        "a2": max(0.5 - (1 - 0.5) / 2, 0),  # no correct leaf below: -1, a's distance 2: 0.25
        "b": max(0 - 1 / 3, 0),  # no correct leaf below: -1, the root's distance 3: clipped to 0
        "b1": max(0 - 1 / 3, 0),  # inherits the same distance 3: 0
        "d": 1 / 3,  # a correct 3-step path grows linearly: k / K
        "d1": 1 / 3 + (1 - 1 / 3) / 2,
        "d2": 1.0,
    }
    assert targets.keys() == expected.keys()  # the unfinished frontier c gets no target
    for step, value in expected.items():
        assert targets[step] == pytest.approx(value), step
    assert targets["d1"] == pytest.approx(2 / 3)


def test_a_tree_without_a_correct_finished_trace_has_no_targets(tree):
    assert value_targets(tree["root"], lambda node: False) == {}


def test_a_correct_step_that_also_has_children_is_still_a_correct_answer():
    root = Node()
    a = child(root, "a", terminal=True)  # the policy ended its turn here once, and went on once
    child(a, "a-more", terminal=True)
    targets = {node.step: v for node, v in value_targets(root, lambda node: node.step == "a").items()}
    # a-more reaches no correct answer (-1) with a's distance 1, but (1 - v_parent) = 0: the update leaves it at 1.
    assert targets == {"a": 1.0, "a-more": 1.0}


def test_q_is_the_affine_map_of_v_onto_minus_one_to_one():
    assert [q_of_value(v) for v in (0.0, 0.25, 0.5, 1.0)] == [-1.0, -0.5, 0.0, 1.0]
