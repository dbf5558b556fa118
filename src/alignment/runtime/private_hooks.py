"""Every private name of TRL and transformers that the handbook overrides, calls, reads or patches, in one list.

Our trainers subclass TRL's and transformers' trainers and override some of their private methods
(`_prepare_dataset`, `_save_checkpoint`, ...). Private methods are renamed or re-signed between releases without a
deprecation, and a renamed hook fails silently: our override is simply never called, the library's own code runs in
its place, and nothing says so. A renamed attribute we read or a module function we patch fails the same way or
loudly, depending on the code path. `PRIVATE_HOOKS` names each such hook in the versions `setup.py` pins (TRL 1.16,
transformers 5.23), and `hook_problems` resolves every entry in the installed versions and says which are missing or
now take other parameters; `tests/unit/runtime/test_private_hooks.py` asserts that there are none, and that every
private override in our trainer classes and mixins has its entry. After an upgrade, that test names each hook to
re-read.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PrivateHook:
    """One private name of a library that our code depends on.

    `owner` is the library class that defines `name` (by its public path, `"trl.DPOTrainer"`) or, for a module
    attribute, the module (`"trl.trainer.dpo_trainer"`). `parameters` are the names of its parameters, `self` left
    out, as `inspect.signature` gives them; None for a data attribute (class attribute, or instance attribute that
    the owner's code assigns). `used_by` names our classes (or, for a patch, functions) that touch it, by their
    public paths.
    """

    owner: str
    name: str
    parameters: tuple[str, ...] | None
    use: Literal["overrides", "calls", "reads", "patches"]
    used_by: tuple[str, ...]
    why: str

    @property
    def path(self) -> str:
        """`owner.name`, as messages spell it."""
        return f"{self.owner}.{self.name}"


_SAVE_CHECKPOINT_WHY = (
    "Writes the checkpoint's completeness manifest after every process has saved, and rotates old checkpoints only "
    "then; renamed, checkpoints would have no manifest and `last_complete_checkpoint` would resume from none."
)

PRIVATE_HOOKS: tuple[PrivateHook, ...] = (
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_prepare_dataset",
        parameters=("dataset", "processing_class", "args", "dataset_name"),
        use="overrides",
        used_by=("alignment.dpo.trainer.PreferenceTrainer",),
        why="Rows arrive tokenized and truncated by `tokenize_preferences`; TRL's own tokenization is skipped.",
    ),
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_precompute_ref_logps",
        parameters=("dataset", "name", "batch_size"),
        use="overrides",
        used_by=("alignment.runtime.reference.CachedReferenceLogpsMixin", "benchmarks.measure.MeteredTrainerMixin"),
        why=(
            "CachedReferenceLogpsMixin puts TRL's one-pass precomputation behind the on-disk reference log-prob "
            "cache; the benchmarks time it per split. Renamed, every run recomputes the reference pass, and the "
            "benchmarks report no reference-pass time."
        ),
    ),
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_compute_loss",
        parameters=("model", "inputs", "return_outputs"),
        use="overrides",
        used_by=("alignment.dpo.trainer.PreferenceTrainer",),
        why=(
            "Computes `orpo`, `simpo`, `kto_pair` and conservative DPO (`alignment.dpo` losses) and `pref_ftx`; "
            "renamed, TRL's loss would train in their place."
        ),
    ),
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_metrics",
        parameters=None,
        use="reads",
        used_by=("alignment.dpo.trainer.PreferenceTrainer",),
        why=(
            "TRL's per-mode metric lists, which its `log` averages: our own losses append their metrics there, and "
            "the `rewards/*` metrics of an evaluation before the first step are dropped from it."
        ),
    ),
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_tokenizer",
        parameters=None,
        use="reads",
        used_by=("alignment.dpo.trainer.PreferenceTrainer",),
        why="Its chat template is hashed into the key of the reference log-prob cache (`ref_logps_cache_key`).",
    ),
    PrivateHook(
        owner="trl.DPOTrainer",
        name="_precompute_model_hash",
        parameters=None,
        use="reads",
        used_by=("alignment.dpo.trainer.PreferenceTrainer",),
        why="TRL's hash of the reference weights, part of the key of the reference log-prob cache.",
    ),
    PrivateHook(
        owner="trl.trainer.dpo_trainer",
        name="create_model_from_path",
        parameters=("model_id", "architecture", "kwargs"),
        use="patches",
        used_by=("alignment.dpo.reference.no_reference_model_loaded",),
        why=(
            "Patched to return None while `PreferenceTrainer` runs `DPOTrainer.__init__` for a reference-free "
            "loss, so that no unused reference copy is loaded. If `DPOTrainer` stopped looking it up "
            "in this module the patch would do nothing: `test_reference_free_losses_load_no_reference_model` "
            "(tests/test_dpo.py) catches that."
        ),
    ),
    PrivateHook(
        owner="trl.trainer.utils",
        name="_use_triton",
        parameters=("device",),
        use="patches",
        used_by=("alignment.runtime.lm_head.compact_tiles",),
        why=(
            "`add_fused_lm_head`'s forward reads it, from this module, only to decide whether to project just the "
            "trained positions (`compact`); patched to say yes on CPU. If the forward stopped reading it here, the "
            "CPU head would project every position again: `test_the_cpu_head_projects_only_trained_positions` "
            "(tests/unit/runtime/test_lm_head.py) catches that."
        ),
    ),
    PrivateHook(
        owner="trl.trainer.utils",
        name="_CHUNKED_LOGPROB_CHUNK_SIZE",
        parameters=None,
        use="patches",
        used_by=("alignment.runtime.lm_head.compact_tiles",),
        why=(
            "The vocabulary width of the fused head's tiles, read by its forward at each call; patched on CPU to "
            "`CPU_VOCAB_TILE` so that each fp32 copy of a tile is 16 MiB, not 512. Renamed, the patch would add an "
            "unread name and the tiles would be TRL's again: the same test catches that."
        ),
    ),
    PrivateHook(
        owner="trl.RewardTrainer",
        name="_metrics",
        parameters=None,
        use="reads",
        used_by=("alignment.reward.trainer.PairwiseRewardTrainer",),
        why="TRL's per-batch-mean `accuracy` and `margin` are removed from it, replaced by exact reward statistics.",
    ),
    PrivateHook(
        owner="trl.RewardTrainer",
        name="_tag_names",
        parameters=None,
        use="overrides",
        used_by=("alignment.reward.trainer.PairwiseRewardTrainer",),
        why="The model tags TRL adds to the model and its card; ours adds `alignment-handbook` to TRL's.",
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_get_train_sampler",
        parameters=("train_dataset",),
        use="overrides",
        used_by=(
            "alignment.runtime.samplers.PairGroupedSamplerMixin",
            "alignment.reward.trainer.PairwiseRewardTrainer",
        ),
        why=(
            "`group_by_length` groups preference pairs by width (transformers' grouping reads an `input_ids` column "
            "that pairs lack); the reward trainer also logs the padding saved. Renamed, pairs train in random order."
        ),
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_get_eval_sampler",
        parameters=("eval_dataset",),
        use="overrides",
        used_by=("alignment.runtime.samplers.PairGroupedSamplerMixin",),
        why="`group_by_length` groups evaluation pairs by width, as in training.",
    ),
    PrivateHook(
        owner="trl.GRPOTrainer",
        name="_generate",
        parameters=("prompts",),
        use="overrides",
        used_by=("alignment.grpo.trainer.GRPOTrainer",),
        why=(
            "Times generation and counts the completion tokens it returns (its second output) for the log's "
            "`generation/share_of_time` and `generation/completion_tokens_per_s`; renamed, both vanish from the log."
        ),
    ),
    PrivateHook(
        owner="trl.KTOTrainer",
        name="_prepare_dataset",
        parameters=("dataset", "processing_class", "args", "dataset_name"),
        use="overrides",
        used_by=("alignment.kto.trainer.UnpairedPreferenceTrainer",),
        why=(
            "Rows arrive tokenized and truncated by `tokenize_unpaired`; TRL's own tokenization is skipped and only "
            "the KL completions are added (per global micro-batch)."
        ),
    ),
    PrivateHook(
        owner="trl.KTOTrainer",
        name="_precompute_ref_logps",
        parameters=("dataset", "name", "batch_size"),
        use="overrides",
        used_by=("alignment.runtime.reference.CachedReferenceLogpsMixin", "benchmarks.measure.MeteredTrainerMixin"),
        why="As DPOTrainer's: the one-pass precomputation behind the on-disk reference log-prob cache.",
    ),
    PrivateHook(
        owner="trl.KTOTrainer",
        name="_tokenizer",
        parameters=None,
        use="reads",
        used_by=("alignment.kto.trainer.UnpairedPreferenceTrainer",),
        why="Its chat template is hashed into the key of the reference log-prob cache (`ref_logps_cache_key`).",
    ),
    PrivateHook(
        owner="trl.KTOTrainer",
        name="_precompute_model_hash",
        parameters=None,
        use="reads",
        used_by=("alignment.kto.trainer.UnpairedPreferenceTrainer",),
        why="TRL's hash of the reference weights, part of the key of the reference log-prob cache.",
    ),
    # Each of these trainers defines its own `_save_checkpoint`; ValueTrainer subclasses `Trainer` directly.
    *(
        PrivateHook(
            owner=owner,
            name="_save_checkpoint",
            parameters=("model", "trial"),
            use="overrides",
            used_by=("alignment.runtime.reliability.CrashSafeTrainerMixin",),
            why=_SAVE_CHECKPOINT_WHY,
        )
        for owner in (
            "trl.SFTTrainer",
            "trl.DPOTrainer",
            "trl.KTOTrainer",
            "trl.RewardTrainer",
            "trl.GRPOTrainer",
            "transformers.Trainer",
        )
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_get_output_dir",
        parameters=("trial",),
        use="calls",
        used_by=("alignment.runtime.reliability.CrashSafeTrainerMixin",),
        why="The run folder that holds the new checkpoint, to write its manifest and rotate the old ones.",
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_save",
        parameters=("output_dir", "state_dict"),
        use="overrides",
        used_by=("alignment.value.trainer.ValueTrainer",),
        why=(
            "Writes body and value head from the state dict `save_model` gathered (ZeRO-3 safe); renamed, saved "
            "models and checkpoints would lack `value_head.safetensors`."
        ),
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_load_from_checkpoint",
        parameters=("resume_from_checkpoint", "model"),
        use="overrides",
        used_by=("alignment.value.trainer.ValueTrainer",),
        why="Resume loads the body through transformers, then the value head; renamed, the head would restart fresh.",
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_issue_warnings_after_load",
        parameters=("load_result",),
        use="overrides",
        used_by=("alignment.value.trainer.ValueTrainer",),
        why="Leaves out tied weights (`lm_head.weight`) from the missing-keys warning when the body is reloaded.",
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_load_best_model",
        parameters=(),
        use="overrides",
        used_by=("alignment.value.trainer.ValueTrainer",),
        why="`load_best_model_at_end` reloads the value head too (outside DeepSpeed through `_load_from_checkpoint`).",
    ),
    PrivateHook(
        owner="transformers.Trainer",
        name="_prepare_inputs",
        parameters=("inputs",),
        use="calls",
        used_by=("alignment.value.trainer.ValueTrainer",),
        why="Moves an evaluation batch to the device in `prediction_step`, as the Trainer's own one does.",
    ),
)


def resolve(path: str) -> object:
    """The module at dotted `path`, else the attribute `path`'s last part names in the module before it
    (`"trl.DPOTrainer"`, `"alignment.dpo.trainer.PreferenceTrainer"`). Raises ImportError or AttributeError."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name != path or "." not in path:  # a module that exists failed to import, or no module at all
            raise
    module, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def defines(cls: type, name: str) -> bool:
    """Whether class `cls` itself defines `name`: in its own namespace (a method or class attribute), or as an
    instance attribute that its code assigns (`self.name = ...`)."""
    if name in vars(cls):
        return True
    assignment = rf"\bself\.{re.escape(name)}\s*(?::|=(?!=))"
    return re.search(assignment, inspect.getsource(cls)) is not None


def parameter_names(function) -> tuple[str, ...]:
    """The names of `function`'s parameters, `self` left out."""
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


def _installed(path: str) -> str:
    package = path.split(".")[0]
    return f"{package} {importlib.metadata.version(package)}"


def hook_problems(hooks: Sequence[PrivateHook] = PRIVATE_HOOKS) -> list[str]:
    """One message per entry of `hooks` that the installed libraries no longer match: an owner that does not
    import, a name it lacks, or a function whose parameter names differ from `parameters`. Empty when all match."""
    problems = []
    for hook in hooks:
        try:
            owner = resolve(hook.owner)
        except (ImportError, AttributeError) as err:
            problems.append(f"{hook.owner} does not import in {_installed(hook.owner)}: {err}")
            continue
        users = ", ".join(hook.used_by)
        if hook.parameters is None:
            found = hasattr(owner, hook.name) or (isinstance(owner, type) and defines(owner, hook.name))
        else:
            found = callable(getattr(owner, hook.name, None))
        if not found:
            kind = "attribute" if hook.parameters is None else "function"
            problems.append(
                f"{hook.path}: no such {kind} in {_installed(hook.owner)} ({users} {hook.use} it: {hook.why})"
            )
            continue
        if hook.parameters is None:
            continue
        actual = parameter_names(getattr(owner, hook.name))
        if actual != hook.parameters:
            problems.append(
                f"{hook.path} takes ({', '.join(actual)}) in {_installed(hook.owner)}, not "
                f"({', '.join(hook.parameters)}) ({users} {hook.use} it)"
            )
    return problems


__all__ = ["PRIVATE_HOOKS", "PrivateHook", "defines", "hook_problems", "parameter_names", "resolve"]
