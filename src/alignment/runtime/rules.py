"""Rules: a user's own judge of a reply, named in a recipe or on the command line as `package.module:function`.

`run_eval.py --rule`, `run_search.py`'s `rule` and `value_rule` and GRPO's `rewards` import them through `load_rule`,
so every tool reads the same form and refuses a bad path with the same message. Under GRPO a rule may also read
columns of its prompt's row by naming them as parameters after the first two (a reference answer):

    def answer_matches(prompt_messages, reply, answer): ...   # the row {"prompt": "...", "answer": "42"}
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable

from alignment.recipes.parser import RecipeError

# A rule judges one reply to a prompt: True when it is right.
Rule = Callable[[list[dict[str, str]], str], bool]
RULE_FORM = "`package.module:function`, a callable `(prompt_messages, answer) -> bool`"


def load_rule(path: str, key: str = "rule") -> Rule:
    """The rule that `path` names as `package.module:function`, imported.

    A path of another form, a module that does not exist or a name it lacks is a `ValueError` naming the recipe
    `key`, what was not found and the expected form. An error raised while the module itself imports is a bug in it
    and propagates.
    """
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"`{key}: {path}` is not an import path; expected {RULE_FORM}.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(f"{err.name}.")):
            raise  # the module exists; something it imports does not
        raise ValueError(f"`{key}: {path}`: no module `{module_name}` can be imported; expected {RULE_FORM}.") from err
    rule = getattr(module, function_name, None)
    if rule is None:
        raise ValueError(f"`{key}: {path}`: module `{module_name}` has no `{function_name}`; expected {RULE_FORM}.")
    if not callable(rule):
        raise ValueError(f"`{key}: {path}`: `{function_name}` is not callable; expected {RULE_FORM}.")
    return rule


def row_columns_read(rule: Rule) -> list[str]:
    """The names of the parameters after `(prompt_messages, reply)`: the columns of a prompt's row the rule reads."""
    try:
        parameters = list(inspect.signature(rule).parameters.values())
    except ValueError:  # a builtin without a signature
        return []
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [parameter.name for parameter in parameters[2:] if parameter.kind in named]


def check_rule(rule: Rule, path: str, key: str, prompt: list[dict[str, str]], row: dict | None = None) -> None:
    """Call `rule` once, on `prompt` (with the columns it reads of its `row`) and a dummy reply, before any model
    generates: a rule of the wrong signature, one that raises, or one that returns something other than a bool or a
    number is a `RecipeError` naming `key`, instead of an error after minutes of generation."""
    read = row_columns_read(rule)
    columns = {name: value for name, value in (row or {}).items() if name in read}
    try:
        inspect.signature(rule).bind(prompt, "", **columns)
    except TypeError as err:
        has = f" (the prompt rows have: {', '.join(row)})" if row else ""
        raise RecipeError(f"`{key}: {path}` cannot be called as {RULE_FORM}{has}: {err}.") from err
    except ValueError:  # a builtin without a signature: the call below checks it
        pass
    try:
        verdict = rule(prompt, "a dummy reply", **columns)
    except Exception as err:
        raise RecipeError(
            f"`{key}: {path}` raised {type(err).__name__} on the first prompt and a dummy reply ({err}); a rule "
            "returns False for a reply it does not accept."
        ) from err
    if not (isinstance(verdict, numbers.Real) or getattr(verdict, "shape", None) == ()):  # a numpy or torch scalar
        raise RecipeError(
            f"`{key}: {path}` returned {type(verdict).__name__} ({verdict!r:.80}); a rule returns a bool or a number."
        )
