"""`check_rule`: a rule is called once on a prompt and a dummy reply; what it must accept and return."""

import numpy as np
import pytest
import torch

from alignment.runtime.rules import check_rule

PROMPT = [{"role": "user", "content": "Can you compute 2+3?"}]


@pytest.mark.parametrize(
    "rule", [lambda p, a: True, lambda p, a: 0.5, lambda p, a: np.bool_(False), lambda p, a: torch.tensor(1.0)]
)
def test_a_rule_returning_a_bool_or_a_number_passes(rule):
    check_rule(rule, "m:f", "rule", PROMPT)


@pytest.mark.parametrize(
    "rule, message",
    [
        (lambda prompt: True, "cannot be called as `package.module:function`, a callable `(prompt_messages, answer)"),
        (lambda p, a: "yes", "returned str ('yes'); a rule returns a bool or a number."),
        (lambda p, a: [True], "returned list"),
        (lambda p, a: int(a), "raised ValueError on the first prompt and a dummy reply"),
    ],
)
def test_a_rule_of_another_shape_is_refused_naming_its_key(rule, message):
    with pytest.raises(ValueError, match="^`extra_rules: m:f` ") as raised:
        check_rule(rule, "m:f", "extra_rules", PROMPT)
    assert message in str(raised.value)
