"""The private TRL / transformers names we depend on (`alignment.runtime.private_hooks`): each resolves with the
parameters we expect in the installed versions; every private name our trainers and mixins override, call or read on a
library class is listed, and no listed use is stale; a renamed or re-signed hook is reported."""

import dataclasses
import inspect
import re

import pytest
import transformers

from alignment.runtime.lm_head import CompactLMHeadMixin
from alignment.runtime.private_hooks import PRIVATE_HOOKS, defines, hook_problems, parameter_names, resolve
from alignment.runtime.reference import CachedReferenceLogpsMixin
from alignment.runtime.reliability import CrashSafeTrainerMixin
from alignment.runtime.samplers import PairGroupedSamplerMixin
from alignment.stages import STAGES
from benchmarks.measure import MeteredTrainerMixin, metered

TRAINERS = tuple(entry.stage.trainer_class for entry in STAGES.values())  # every stage's trainer
MIXINS = (
    CrashSafeTrainerMixin,
    CompactLMHeadMixin,
    CachedReferenceLogpsMixin,
    PairGroupedSamplerMixin,
    MeteredTrainerMixin,
)
# A mixin has no library base of its own: it is checked in every class it is mixed into, here each trainer, and
# each trainer with the benchmarks' meter in front.
METERED = tuple(metered(trainer) for trainer in TRAINERS)
HOSTS = TRAINERS + METERED
# `self._name` or `super()._name`, dunders left out.
PRIVATE_USE = re.compile(r"\b(?:self|super\(\))\.(_[A-Za-z]\w*)")


def is_library(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("trl", "transformers")


def is_ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("alignment", "benchmarks")


# Our classes in the hosts' MROs (the classes `metered` makes have no body of their own).
OURS = {cls for host in HOSTS for cls in host.__mro__ if is_ours(cls) and cls not in METERED}


def private_uses(hosts, ours) -> set[tuple[type, str, type]]:
    """(library class, name, our class) for each private name that a class in `ours` defines in its own namespace
    or uses as `self._name` / `super()._name`, and that a library class after it in a host's MRO defines (the
    nearest such class: the one whose code ours replaces or reaches)."""
    uses = set()
    for host in hosts:
        mro = host.__mro__
        for position, cls in enumerate(mro):
            if cls not in ours:
                continue
            names = {name for name in vars(cls) if name.startswith("_") and not name.startswith("__")}
            names |= set(PRIVATE_USE.findall(inspect.getsource(cls)))
            for name in names:
                owner = next((c for c in mro[position + 1 :] if is_library(c) and defines(c, name)), None)
                if owner is not None:
                    uses.add((owner, name, cls))
    return uses


def listed_uses() -> set[tuple[type, str, type]]:
    """The same triples, from `PRIVATE_HOOKS` (module attributes we patch are not class hooks)."""
    return {
        (resolve(hook.owner), hook.name, resolve(user))
        for hook in PRIVATE_HOOKS
        if hook.use != "patches"
        for user in hook.used_by
    }


def describe(uses: set[tuple[type, str, type]]) -> list[str]:
    return sorted(f"{owner.__module__}.{owner.__qualname__}.{name} by {cls.__qualname__}" for owner, name, cls in uses)


def hook(owner: str, name: str):
    return next(h for h in PRIVATE_HOOKS if (h.owner, h.name) == (owner, name))


def test_every_hook_exists_with_its_parameters_in_the_installed_versions():
    assert hook_problems() == []


def test_every_class_of_ours_is_checked():
    assert set(TRAINERS + MIXINS) <= OURS


def test_every_private_override_and_use_is_listed():
    missing = private_uses(HOSTS, OURS) - listed_uses()
    assert describe(missing) == [], "add an entry to alignment.runtime.private_hooks.PRIVATE_HOOKS for each"


def test_no_listed_use_is_stale():
    stale = listed_uses() - private_uses(HOSTS, OURS)
    assert describe(stale) == [], "our code no longer touches these: remove their entries"


def test_every_user_resolves():
    for entry in PRIVATE_HOOKS:
        for user in entry.used_by:
            assert resolve(user) is not None, (entry.path, user)


def test_each_patch_is_still_made_by_its_user():
    for entry in PRIVATE_HOOKS:
        if entry.use == "patches":
            for user in entry.used_by:
                assert entry.name in inspect.getsource(resolve(user)), (entry.path, user)


@pytest.mark.parametrize("entry", [h for h in PRIVATE_HOOKS if h.use == "overrides" and h.parameters is not None])
def test_each_override_takes_the_library_parameters(entry):
    for user in entry.used_by:
        override = vars(resolve(user))[entry.name]
        assert parameter_names(override) == entry.parameters, user


@pytest.mark.parametrize(
    ("entry", "change"),
    [
        (hook("trl.DPOTrainer", "_prepare_dataset"), {"name": "_prepare_datasets"}),
        (hook("trl.DPOTrainer", "_prepare_dataset"), {"parameters": ("dataset", "processing_class", "args")}),
        (hook("trl.DPOTrainer", "_metrics"), {"name": "_metric_lists"}),
        (hook("trl.RewardTrainer", "_tag_names"), {"name": "_tags"}),
        (hook("trl.trainer.dpo_trainer", "create_model_from_path"), {"name": "create_model"}),
        (hook("transformers.Trainer", "_save"), {"owner": "transformers.NoSuchTrainer"}),
    ],
)
def test_a_renamed_or_resigned_hook_is_reported(entry, change):
    changed = dataclasses.replace(entry, **change)
    problems = hook_problems([changed])
    assert len(problems) == 1
    assert changed.owner in problems[0] and (changed.name in problems[0] or "does not import" in problems[0])


def test_an_unlisted_override_is_found():
    class Unlisted(STAGES["value"].stage.trainer_class):
        def _prepare_inputs(self, inputs):
            return inputs

    assert private_uses((Unlisted,), {Unlisted}) - listed_uses() == {
        (transformers.Trainer, "_prepare_inputs", Unlisted)
    }
