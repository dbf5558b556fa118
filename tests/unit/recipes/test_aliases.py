"""Recipes written for the alignment-handbook and TRL parse with their meaning (`alignment.recipes.aliases`).

The fixtures in tests/fixtures/handbook_recipes are the handbook's own stage recipes, verbatim: each parses for its
stage with the values it meant, or is refused with a message naming the fix. Every former key is read as its new
key with exactly one warning, and `resolved_config.yaml` holds the new name only.
"""

import logging
from pathlib import Path

import pytest
import yaml

from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.runtime.lifecycle import resolved_config
from alignment.stages import STAGES

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "handbook_recipes"
ALIAS_LOGGERS = ("alignment.recipes.aliases", "alignment.recipes.dataset_forms")


def parser_for(stage: str) -> RecipeParser:
    return RecipeParser(STAGES[stage].recipe_dataclasses)


def write(tmp_path: Path, content: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "m", "output_dir": str(tmp_path / "out"), **content}))
    return str(path)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in ALIAS_LOGGERS and r.levelno == logging.WARNING]


def handbook_mixer(recipe: Path) -> list[dict]:
    """The handbook's `dataset_mixture` entries of `recipe` as list-form `dataset_mixer` entries: id -> path,
    config -> name; split, columns and weight unchanged."""
    datasets = yaml.safe_load(recipe.read_text())["dataset_mixture"]["datasets"]
    keys = {"id": "path", "config": "name", "split": "split", "columns": "columns", "weight": "weight"}
    return [{keys[key]: value for key, value in entry.items()} for entry in datasets]


# recipe -> (dtype, warmup_steps, max_length, test_split_size, test entries): what each recipe meant.
PARSED = {
    "constitutional-ai/dpo/config_anthropic.yaml": ("float32", 0.1, 1024, 0.1, 2),
    "constitutional-ai/sft/config_anthropic.yaml": ("bfloat16", 0.1, 2048, 0.1, 1),
    "constitutional-ai/sft/config_grok.yaml": ("bfloat16", 0.1, 2048, 0.1, 1),
    "pref_align_scan/dpo/config_openhermes.yaml": ("float32", 0.1, 1024, 0.1, 1),
    "pref_align_scan/dpo/config_zephyr.yaml": ("float32", 0.1, 1024, 0.1, 1),
    "smollm2/dpo/config.yaml": ("bfloat16", 0.1, 1024, 0.1, 1),
    "smollm2/dpo/config_smol.yaml": ("bfloat16", 0.1, 1024, 0.1, 1),
    "starchat2-15b/dpo/config_v0.1.yaml": ("bfloat16", 0.1, 1024, 0.1, 2),
    "starchat2-15b/sft/config_v0.1.yaml": ("bfloat16", 0.1, 2048, 0.1, 5),
    "zephyr-7b-beta/dpo/config_full.yaml": ("float32", 0.1, 1024, 0.1, 1),
    "zephyr-7b-beta/sft/config_full.yaml": ("bfloat16", 0.1, 2048, 0.1, 1),
    "zephyr-7b-beta/sft/config_qlora.yaml": ("bfloat16", 0.1, 2048, 0.1, 1),
    "zephyr-7b-gemma/dpo/config_full.yaml": ("bfloat16", 0.1, 1024, 0.1, 1),
    "zephyr-7b-gemma/sft/config_full.yaml": ("bfloat16", 0.1, 2048, 0.1, 1),
}

SMOLTALK_SPLIT = (
    "the handbook trained on this split, but `dataset_mixer` tells train rows from test rows by the split's name, "
    "which must contain 'train' or 'test'. Save the split with `save_to_disk` and give that folder as the entry's "
    "`id`, with `split: train`."
)
REFUSED_FIXTURES = {
    "smollm/sft/config.yaml": "`dataset_mixture.datasets[5]` (HuggingFaceTB/OpenHermes-2.5-H4, split 'test_sft'): "
    "`weight: 0.001` on a test split: the handbook trained on that share of it (it pooled test splits into its "
    "training rows); here an entry on a test split is the test set, kept whole. Remove the weight to evaluate on the "
    "whole split, or remove the entry.",
    "smollm3/dpo/apo.yaml": "`dataset_mixture.datasets[0]` (HuggingFaceTB/smoltalk2, split "
    f"'llama_3.1_tulu_3_8b_preference_mixture_no_think'): {SMOLTALK_SPLIT}",
    "smollm3/sft/mid.yaml": "`dataset_mixture.datasets[0]` (HuggingFaceTB/smoltalk2, split "
    f"'Llama_Nemotron_Post_Training_Dataset_reasoning_r1'): {SMOLTALK_SPLIT}",
    "smollm3/sft/sft.yaml": "`dataset_mixture.datasets[0]` (HuggingFaceTB/smoltalk2, split "
    f"'smoltalk_smollm3_everyday_conversations_no_think'): {SMOLTALK_SPLIT}",
}


def test_every_handbook_stage_recipe_is_a_fixture():
    recipes = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.yaml")}
    others = {
        "smollm2/sft/config.yaml",
        "smollm2/sft/config_smol.yaml",
        "zephyr-7b-beta/dpo/config_qlora.yaml",
        "zephyr-141b-A35b/orpo/config_full.yaml",
    }
    assert recipes == set(PARSED) | set(REFUSED_FIXTURES) | others
    assert len(recipes) == 22


@pytest.mark.parametrize("name", sorted(PARSED))
def test_handbook_mixture_recipe_parses_with_its_meaning(name: str):
    recipe = FIXTURES / name
    stage = recipe.parent.name
    model, data, training = parser_for(stage).parse([str(recipe)])
    dtype, warmup_steps, max_length, test_split_size, test_entries = PARSED[name]
    assert (model.dtype, training.warmup_steps, training.max_length) == (dtype, warmup_steps, max_length)
    assert data.dataset_mixer == handbook_mixer(recipe)
    assert sum("test" in entry["split"] for entry in data.dataset_mixer) == test_entries
    assert (data.test_split_size, data.seed, training.seed) == (test_split_size, 42, 42)
    resolved = resolved_config(model, data, training)
    assert not {"torch_dtype", "warmup_ratio", "max_seq_length", "dataset_mixture"} & set(resolved)
    assert (resolved["dtype"], resolved["warmup_steps"], resolved["dataset_mixer"]) == (
        dtype,
        warmup_steps,
        handbook_mixer(recipe),
    )


def test_zephyr_sft_recipe_reads_exactly(caplog):
    caplog.set_level(logging.WARNING)
    model, data, training = parser_for("sft").parse([str(FIXTURES / "zephyr-7b-beta/sft/config_full.yaml")])
    assert warnings_of(caplog) == [
        "Recipe key `torch_dtype` is now `dtype`: `torch_dtype: bfloat16` is read as `dtype: bfloat16`.",
        "Recipe key `warmup_ratio` is now `warmup_steps`: `warmup_ratio: 0.1` is read as `warmup_steps: 0.1`.",
        "Recipe key `max_seq_length` is now `max_length`: `max_seq_length: 2048` is read as `max_length: 2048`.",
        "Recipe key `dataset_mixture` (the handbook's form) is now the list form of `dataset_mixer`: its 2 datasets "
        "are read as `{path: id, name: config, split, columns, weight}`; the entries on test splits (test_sft) are "
        "the test set, kept whole (the handbook pooled every entry, test splits included, held out "
        "`test_split_size: 1000` of the pool at random and trained on the rest); its `seed: 0` is not read: the "
        "recipe's one `seed` also samples the mixture.",
    ]
    assert data.dataset_mixer == [
        {"path": "HuggingFaceH4/ultrachat_200k", "name": "default", "split": "train_sft", "columns": ["messages"],
         "weight": 1.0},
        {"path": "HuggingFaceH4/ultrachat_200k", "name": "default", "split": "test_sft", "columns": ["messages"],
         "weight": 1.0},
    ]  # fmt: skip
    assert (model.attn_implementation, training.dataset_num_proc, training.learning_rate) == (
        "flash_attention_2",
        12,
        2e-5,
    )
    assert (training.eval_strategy, training.overwrite_output_dir) == ("epoch", True)
    assert data.chat_template.startswith("{% for message in messages %}")


def test_zephyr_qlora_dpo_recipe_keeps_its_zephyr_form_mixer():
    model, data, training = parser_for("dpo").parse([str(FIXTURES / "zephyr-7b-beta/dpo/config_qlora.yaml")])
    assert (data.dataset_mixer, data.dataset_splits) == (
        {"HuggingFaceH4/ultrafeedback_binarized": 1.0},
        ["train_prefs", "test_prefs"],
    )
    assert (model.dtype, model.load_in_4bit, model.use_peft, model.lora_r) == ("bfloat16", True, True, 128)
    assert (training.warmup_steps, training.max_prompt_length, training.beta) == (0.1, 512, 0.01)


@pytest.mark.parametrize(
    ("name", "dataset", "name_of_config"),
    [
        ("smollm2/sft/config.yaml", "HuggingFaceTB/smoltalk", "all"),
        ("smollm2/sft/config_smol.yaml", "HuggingFaceTB/smol-smoltalk", None),
    ],
)
def test_trl_dataset_name_recipes_read_as_one_source(name: str, dataset: str, name_of_config: str | None):
    model, data, training = parser_for("sft").parse([str(FIXTURES / name)])
    source = {"path": dataset, **({"name": name_of_config} if name_of_config else {})}
    # `eval_strategy: epoch`: the handbook evaluates on `dataset_test_split`.
    assert data.dataset_mixer == [{**source, "split": "train"}, {**source, "split": "test"}]
    assert (data.dataset_config, model.dtype, training.max_length, training.warmup_steps) == (
        None,
        "bfloat16",
        8192,
        0.1,
    )


def test_orpo_recipe_runs_as_the_dpo_stage_with_loss_type_orpo():
    # ORPO's `beta` is the paper's λ in TRL's ORPOConfig and in our `orpo` loss; the recipe names no loss, so the
    # DPO script is told `--loss_type orpo`.
    recipe = FIXTURES / "zephyr-141b-A35b/orpo/config_full.yaml"
    model, data, training = parser_for("dpo").parse([str(recipe), "--loss_type", "orpo"])
    assert (training.loss_type, training.beta, training.max_length, training.max_prompt_length) == (
        ["orpo"],
        0.05,
        2048,
        1792,
    )
    assert (training.warmup_steps, training.lr_scheduler_type.value, model.dtype) == (100, "inverse_sqrt", "bfloat16")
    # No `eval_strategy`: the handbook trained on the whole train split and read no test split.
    assert data.dataset_mixer == [{"path": "argilla/distilabel-capybara-dpo-7k-binarized", "split": "train"}]
    assert data.test_split_size == 0


@pytest.mark.parametrize("name", sorted(REFUSED_FIXTURES))
def test_handbook_recipe_whose_data_cannot_keep_its_meaning_is_refused(name: str):
    recipe = FIXTURES / name
    with pytest.raises(RecipeError) as error:
        parser_for(recipe.parent.name).parse([str(recipe)])
    assert str(error.value) == REFUSED_FIXTURES[name]


# (stage, old key, value written, new key, value read, the one warning)
ALIASES = [
    ("sft", "torch_dtype", "bfloat16", "dtype", "bfloat16",
     "Recipe key `torch_dtype` is now `dtype`: `torch_dtype: bfloat16` is read as `dtype: bfloat16`."),
    # transformers 4 loaded a null dtype in float32; transformers 5 would load the checkpoint's dtype.
    ("sft", "torch_dtype", None, "dtype", "float32",
     "Recipe key `torch_dtype` is now `dtype`: `torch_dtype: null` is read as `dtype: float32`."),
    ("sft", "warmup_ratio", 0.1, "warmup_steps", 0.1,
     "Recipe key `warmup_ratio` is now `warmup_steps`: `warmup_ratio: 0.1` is read as `warmup_steps: 0.1`."),
    ("sft", "max_seq_length", 512, "max_length", 512,
     "Recipe key `max_seq_length` is now `max_length`: `max_seq_length: 512` is read as `max_length: 512`."),
    ("dpo", "evaluation_strategy", "steps", "eval_strategy", "steps",
     "Recipe key `evaluation_strategy` is now `eval_strategy`: `evaluation_strategy: steps` is read as "
     "`eval_strategy: steps`."),
    ("sft", "use_flash_attention_2", True, "attn_implementation", "flash_attention_2",
     "Recipe key `use_flash_attention_2` is now `attn_implementation`: `use_flash_attention_2: true` is read as "
     "`attn_implementation: flash_attention_2`."),
    ("sft", "use_flash_attention_2", False, "attn_implementation", None,
     "Recipe key `use_flash_attention_2` is now `attn_implementation`: `use_flash_attention_2: false` is read as "
     "nothing (the default)."),
    ("rm", "preprocessing_num_workers", 4, "dataset_num_proc", 4,
     "Recipe key `preprocessing_num_workers` is now `dataset_num_proc`: `preprocessing_num_workers: 4` is read as "
     "`dataset_num_proc: 4`."),
    ("dpo", "hub_model_revision", "v1.0", "hub_revision", "v1.0",
     "Recipe key `hub_model_revision` is now `hub_revision`: `hub_model_revision: v1.0` is read as "
     "`hub_revision: v1.0`."),
    ("dpo", "rpo_alpha", 0.5, "pref_ftx", 0.5,
     "Recipe key `rpo_alpha` is now `pref_ftx`: `rpo_alpha: 0.5` is read as `pref_ftx: 0.5`."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "old", "written", "new", "read", "warning"), ALIASES, ids=[f"{a[1]}={a[2]}" for a in ALIASES]
)
def test_alias_is_read_as_its_new_key_with_one_warning(tmp_path, caplog, stage, old, written, new, read, warning):
    caplog.set_level(logging.WARNING)
    configs = parser_for(stage).parse([write(tmp_path, {old: written})])
    assert [getattr(config, new) for config in configs if hasattr(config, new)][0] == read
    assert warnings_of(caplog) == [warning]
    resolved = resolved_config(*configs)
    assert old not in resolved
    assert resolved[new] == read


def test_alias_on_the_command_line_overrides_the_recipe(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    recipe = write(tmp_path, {"dtype": "float32", "warmup_steps": 10})
    model, _, training = parser_for("sft").parse([recipe, "--torch_dtype", "bfloat16", "--use_flash_attention_2"])
    assert (model.dtype, model.attn_implementation, training.warmup_steps) == ("bfloat16", "flash_attention_2", 10)
    assert len(warnings_of(caplog)) == 2


def test_renamed_value_and_dropped_settings(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    recipe = write(
        tmp_path,
        {
            "packing": True,
            "packing_strategy": "ffd",
            "dataset_kwargs": {"add_special_tokens": False, "append_concat_token": False},
        },
    )
    _, _, training = parser_for("sft").parse([recipe])
    assert (training.packing_strategy, training.dataset_kwargs) == ("bfd", None)
    assert warnings_of(caplog) == [
        "`packing_strategy: ffd` is now `packing_strategy: bfd` (TRL renamed it: the algorithm was always best-fit "
        "decreasing).",
        "`dataset_kwargs.add_special_tokens: false` is dropped: TRL does not read it any more, and every stage "
        "tokenizes the rendered chat template without adding special tokens, as it asks.",
        "`dataset_kwargs.append_concat_token: false` is dropped: TRL does not read it any more, and packing "
        "(`packing: true`) joins examples without a separator token, as it asks.",
    ]


def test_dataset_mixture_reads_as_the_list_form(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    mixture = {
        "datasets": [
            {"id": "org/chats", "config": "default", "split": "train_sft", "columns": ["messages"], "weight": 0.5},
            {"id": "data/more.jsonl", "weight": None},
        ],
        "seed": 0,
        "test_split_size": 0.05,
    }
    _, data, _ = parser_for("sft").parse([write(tmp_path, {"dataset_mixture": mixture})])
    assert data.dataset_mixer == [
        {"path": "org/chats", "name": "default", "split": "train_sft", "columns": ["messages"], "weight": 0.5},
        {"path": "data/more.jsonl", "split": "train"},
    ]
    assert (data.test_split_size, data.seed) == (0.05, 42)
    assert warnings_of(caplog) == [
        "Recipe key `dataset_mixture` (the handbook's form) is now the list form of `dataset_mixer`: its 2 datasets "
        "are read as `{path: id, name: config, split, columns, weight}`; `test_split_size: 0.05` of each source's "
        "train rows is held out as the test set; its `seed: 0` is not read: the recipe's one `seed` also samples the "
        "mixture."
    ]


def test_dataset_mixture_without_test_split_size_has_no_test_set(tmp_path):
    mixture = {"datasets": [{"id": "org/chats", "split": "train"}]}
    _, data, _ = parser_for("sft").parse([write(tmp_path, {"dataset_mixture": mixture})])
    assert (data.dataset_mixer, data.test_split_size) == ([{"path": "org/chats", "split": "train"}], 0)


def test_trl_dataset_name_without_evaluation_reads_the_train_split_whole(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    recipe = write(tmp_path, {"dataset_name": "org/pairs", "dataset_test_split": "test_prefs"})
    _, data, _ = parser_for("dpo").parse([recipe])
    assert (data.dataset_mixer, data.test_split_size) == ([{"path": "org/pairs", "split": "train"}], 0)
    assert warnings_of(caplog) == [
        "Recipe keys `dataset_name`, `dataset_test_split` (TRL's form) are now one `dataset_mixer` source: read as "
        "`dataset_mixer: [{path: org/pairs, split: train}]`, `test_split_size: 0.0`."
    ]


@pytest.mark.parametrize(
    ("stage", "recipe", "message"),
    [
        ("sft", {"torch_dtype": "bfloat16", "dtype": "float16"},
         "`torch_dtype` and `dtype` are one key (`torch_dtype` is its former name): keep `dtype`."),
        ("sft", {"warmup_ratio": 0.1, "warmup_steps": 10},
         "`warmup_ratio` and `warmup_steps` are one key (`warmup_ratio` is its former name): keep `warmup_steps`."),
        ("sft", {"warmup_ratio": 1.0},
         "`warmup_ratio: 1.0` cannot be read as `warmup_steps`: transformers 5 reads a `warmup_steps` below 1 as a "
         "share of the total steps and 1 or more as a number of steps, so a ratio must be in [0, 1). Write "
         "`warmup_steps: <number of steps>` instead."),
        ("dpo", {"max_completion_length": 512},
         "`max_completion_length` was dropped by TRL 1.x: a reply keeps the tokens `max_length` leaves after its "
         "prompt, and `max_prompt_length` caps the prompt. Remove it and set `max_length` to `max_prompt_length` + "
         "`max_completion_length`."),
        ("sft", {"dataset_mixer": {"org/chats": 1.0}, "dataset_configs": ["default"]},
         "`dataset_configs` (the former handbook's config name per `dataset_mixer` source) is not read: give each "
         "source its own `name` in the list form of `dataset_mixer` (`- {path: ..., name: ..., split: ...}`)."),
        ("sft", {"dataset_kwargs": {"add_special_tokens": True}},
         "`dataset_kwargs.add_special_tokens: true` is not read by TRL any more, and every stage tokenizes the "
         "rendered chat template without adding special tokens: write BOS/EOS into the chat template and remove the "
         "setting."),
        ("sft", {"dataset_mixture": {"datasets": [{"id": "org/chats"}], "test_split_size": 2000}},
         "`dataset_mixture.test_split_size: 2000`: the handbook drew that many rows of the pooled mixture as its test "
         "set; here `test_split_size` is the share of each source's train rows held out, a number in [0, 1). Write it "
         "as a share (e.g. `test_split_size: 0.05`), or add an entry on a test split."),
        ("sft", {"dataset_mixture": {"datasets": [{"id": "org/chats", "wieght": 0.5}]}},
         "`dataset_mixture.datasets[0]`: unknown key `wieght` (did you mean `weight`? valid keys: id, config, split, "
         "columns, weight)."),
        ("sft", {"dataset_mixture": {"dataset": [{"id": "org/chats"}]}},
         "`dataset_mixture`: unknown key `dataset` (did you mean `datasets`? valid keys: datasets, seed, "
         "test_split_size)."),
        ("sft", {"dataset_mixture": {"datasets": [{"config": "default"}]}},
         "`dataset_mixture.datasets[0]`: `id` (a hub id or a local path) is required."),
        ("sft", {"dataset_mixture": {"datasets": [{"id": "a"}]}, "dataset_mixer": {"b": 1.0}},
         "`dataset_mixture` and `dataset_mixer` both name the data: keep one."),
        ("sft", {"dataset_mixture": {"datasets": [{"id": "a"}], "test_split_size": 0.1}, "test_split_size": 0.2},
         "`dataset_mixture.test_split_size` and `test_split_size` are one key: keep one."),
        ("sft", {"dataset_name": "a", "dataset_mixer": {"b": 1.0}},
         "`dataset_name` and `dataset_mixer` both name the data: keep one."),
        ("sft", {"dataset_mixer": {"b": 1.0}, "dataset_train_split": "train"},
         "`dataset_train_split` goes with `dataset_name` (TRL's one-dataset form); with `dataset_mixer` give each "
         "entry its own `split`."),
    ],
)  # fmt: skip
def test_keys_whose_meaning_changed_are_refused_verbatim(tmp_path, stage, recipe, message):
    with pytest.raises(RecipeError) as error:
        parser_for(stage).parse([write(tmp_path, recipe)])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("learning_rat", "Unknown recipe key `learning_rat`. Did you mean `learning_rate`?"),
        ("torch_dtyp", "Unknown recipe key `torch_dtyp`. Did you mean `dtype` (formerly `torch_dtype`)?"),
        ("warmup_rato", "Unknown recipe key `warmup_rato`. Did you mean `warmup_steps` (formerly `warmup_ratio`)?"),
        ("use_flash_attention", "Unknown recipe key `use_flash_attention`. Did you mean `attn_implementation: "
         "flash_attention_2` (formerly `use_flash_attention_2: true`)?"),
        ("preprocessing_num_worker", "Unknown recipe key `preprocessing_num_worker`. Did you mean `dataset_num_proc` "
         "(formerly `preprocessing_num_workers`)?"),
        ("dataset_mixtures", "Unknown recipe key `dataset_mixtures`. Did you mean `dataset_mixer` (the handbook's "
         "`dataset_mixture: {datasets: [{id, config, split, columns, weight}], seed, test_split_size}` is read as its "
         "list form `[{path, name, split, columns, weight}]`)?"),
    ],
)  # fmt: skip
def test_typos_are_still_refused_with_the_closest_key(tmp_path, key, message):
    with pytest.raises(RecipeError) as error:
        parser_for("sft").parse([write(tmp_path, {key: 1})])
    assert str(error.value) == message
    with pytest.raises(RecipeError) as error:
        parser_for("sft").parse([write(tmp_path, {}), f"--{key}", "1"])
    assert str(error.value) == message


def test_alias_applies_only_where_its_new_key_is_a_field(tmp_path):
    # The reward model has no `pref_ftx`, so DPO's former `rpo_alpha` is an unknown key there.
    with pytest.raises(RecipeError, match=r"^Unknown recipe key `rpo_alpha`\."):
        parser_for("rm").parse([write(tmp_path, {"rpo_alpha": 0.5})])


def test_help_lists_the_former_keys():
    help_text = parser_for("dpo").format_help()
    assert "  torch_dtype -> dtype: " in help_text
    assert "  rpo_alpha -> pref_ftx: " in help_text
    assert "  dataset_mixture -> dataset_mixer: the handbook's form" in help_text
    assert "packing_strategy: ffd" not in parser_for("dpo").format_help()  # an SFT field only
