"""The mistakes at the edges, each through the real script: loading a model or tokenizer, values transformers or peft
would reject later (or quietly replace), `run_eval.py` and `run_search.py` before they generate, output folders,
and misleading messages. Each ends as one `error:` line and exit status 2, without a traceback, before any training.
"""

import json
import shutil

import pytest
import yaml
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from alignment.recipes.parser import RecipeError
from alignment.runtime.lifecycle import resolved_config
from alignment.runtime.reliability import FINISHED_NAME, RESOLVED_CONFIG_NAME
from alignment.stages import STAGES

from .test_user_errors import TINY_SFT, assert_one_message, run_clean, sft

# Rules a careless user might write: one returns its verdict as text, one takes the reply alone.
CARELESS_RULES = """
def returns_text(prompt, answer):
    return "correct"


def takes_the_reply_only(answer):
    return bool(answer)
"""
RULES = "careless_rules"


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The tiny world's model and chats, and folders a careless user points at: a tokenizer without a model, a
    model without a tokenizer, a tokenizer of another vocabulary, a reward model's config."""
    root = tmp_path_factory.mktemp("edges")
    base = tiny_world / "base"
    tokenizer_only = root / "tokenizer_only"
    model_only = root / "model_only"
    tokenizer_only.mkdir()
    model_only.mkdir()
    for path in base.iterdir():
        target = model_only if path.name in ("config.json", "model.safetensors", "generation_config.json") else None
        target = target or (tokenizer_only if path.name.startswith(("tokenizer", "special_tokens")) else None)
        if target is not None:
            shutil.copy(path, target / path.name)
    other = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({f"w{i}": i for i in range(1000)}, unk_token="w0")), pad_token="w0"
    )
    other.save_pretrained(root / "other_vocabulary")
    reward = root / "reward_model"
    reward.mkdir()
    config = json.loads((base / "config.json").read_text())
    (reward / "config.json").write_text(
        json.dumps({**config, "architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}})
    )
    (root / f"{RULES}.py").write_text(CARELESS_RULES)
    return {"root": root, "base": base, "tiny": tiny_world}


def data(world, *, output: str = "out") -> list[str]:
    return [
        *["--model_name_or_path", str(world["base"]), "--max_steps", "1"],
        *[
            "--dataset_mixer",
            json.dumps({str(world["tiny"] / "sft"): 0.05}),
            "--output_dir",
            str(world["root"] / output),
        ],
    ]


# Values refused at parse time, each naming its key (before the model or the data is read).
PARSE_TIME = [
    (["--per_device_train_batch_size", "0"], "`per_device_train_batch_size: 0` must be at least 1."),
    (["--gradient_accumulation_steps", "0"], "`gradient_accumulation_steps: 0` must be at least 1."),
    (["--learning_rate", "-1e-3"], "`learning_rate: -0.001` must be a number >= 0."),
    (["--use_peft", "true", "--lora_r", "0"], "`lora_r: 0` must be at least 1"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "`num_train_epochs: 0.0` trains nothing"),
    (["--eval_steps", "0"], "`eval_steps: 0.0` must be > 0"),
    (["--max_length", "-5"], "`max_length: -5` must be at least 1 token"),
    (["--dtype", "flaot16"], "`dtype: flaot16` is not one of auto, bfloat16, float16, float32."),
]


@pytest.mark.parametrize("overrides, message", PARSE_TIME, ids=[o[0].strip("-") for o, _ in PARSE_TIME])
def test_a_value_the_trainer_would_misread_is_refused_naming_its_key(overrides, message):
    """In process: the script parses with the same parser (the next test runs one case through it)."""
    with pytest.raises(RecipeError) as raised:
        STAGES["sft"].parse([TINY_SFT, *overrides])
    assert message in str(raised.value)


def test_a_value_the_trainer_would_misread_is_one_message_from_the_script():
    overrides, message = PARSE_TIME[0]
    assert_one_message(sft(*overrides), f"error: RecipeError: {message}")


def test_a_missing_local_model_folder_says_so(world):
    result = sft(*data(world), "--model_name_or_path", "data/tiny/nowhere")
    assert_one_message(result, "error: RecipeError: `model_name_or_path: data/tiny/nowhere`: no such folder")
    assert "`make demo` builds data/tiny/" in result.stderr


def test_a_hub_id_while_offline_says_so(world):
    result = sft(*data(world), "--model_name_or_path", "some-org/some-model")
    assert_one_message(
        result, "error: RecipeError: `model_name_or_path: some-org/some-model` is a hub id, and the hub"
    )


def test_a_folder_with_a_tokenizer_but_no_model_says_so(world):
    result = sft(*data(world), "--model_name_or_path", str(world["root"] / "tokenizer_only"))
    assert_one_message(result, f"`model_name_or_path: {world['root'] / 'tokenizer_only'}` holds no model")


def test_a_model_without_a_tokenizer_says_so(world):
    result = sft(*data(world), "--model_name_or_path", str(world["root"] / "model_only"))
    assert_one_message(result, "holds a model but no tokenizer: set `tokenizer_name_or_path`")


def test_flash_attention_without_a_gpu_says_so(world):
    result = sft(*data(world), "--attn_implementation", "flash_attention_2")
    assert_one_message(result, "error: RecipeError: `attn_implementation: flash_attention_2` runs on a CUDA GPU only")


def test_a_tokenizer_of_another_vocabulary_is_refused(world):
    result = sft(
        *data(world, output="other_vocab"), "--tokenizer_name_or_path", str(world["root"] / "other_vocabulary")
    )
    assert_one_message(result, "has a vocabulary of 1000 tokens and the model")
    assert "they are not one vocabulary" in result.stderr


def test_lora_target_modules_the_model_lacks_are_refused(world):
    result = sft(*data(world, output="lora"), "--use_peft", "true", "--lora_target_modules", '["qkv_proj"]')
    assert_one_message(result, "error: RecipeError: `lora_target_modules`: the model has no module named qkv_proj")
    assert "q_proj" in result.stderr


def test_a_max_length_too_small_for_any_example_is_refused(world):
    result = sft(*data(world, output="short"), "--max_length", "3")
    assert_one_message(result, "error: RecipeError: No training example is left once tokenized (`max_length: 3`)")


def test_evaluating_without_a_held_out_split_names_the_keys(world):
    no_test = ["--dataset_splits", '["train"]', "--test_split_size", "0"]
    result = sft(*data(world, output="no_eval"), "--eval_strategy", "steps", *no_test)
    assert_one_message(result, "error: RecipeError: `eval_strategy: steps` evaluates on a held-out split")
    assert "`eval_strategy: no`" in result.stderr and "`test_split_size: 0.05`" in result.stderr


def test_a_key_written_twice_names_both_lines(world, tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("model_name_or_path: x\nlearning_rate: 1.0e-3\noutput_dir: out\nlearning_rate: 3.0e-3\n")
    result = run_clean("scripts/run_sft.py", str(recipe))
    assert_one_message(
        result, f"error: RecipeError: Recipe {recipe}: `learning_rate` is written twice, on lines 2 and 4"
    )


def test_a_recipe_path_that_is_a_folder_says_so():
    result = run_clean("scripts/run_sft.py", "recipes/tiny/sft")
    assert_one_message(result, "error: RecipeError: Recipe recipes/tiny/sft is a folder (it holds config.yaml)")


def test_an_output_dir_that_is_a_file_says_so(world, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = sft(*data(world), "--output_dir", str(tmp_path / "a_file"))
    assert_one_message(result, f"error: OutputDirError: `output_dir: {tmp_path / 'a_file'}` is a file")


def test_resuming_from_a_missing_checkpoint_says_it_does_not_exist(world, tmp_path):
    result = sft(*data(world, output="resume"), "--resume_from_checkpoint", str(tmp_path / "checkpoint-9"))
    assert_one_message(result, "cannot be resumed from: no such folder.")


def test_a_template_with_a_jinja_syntax_error_is_the_templates_fault(world, tmp_path):
    template = tmp_path / "broken.jinja"
    template.write_text("{% for message in messages %}{{ message.content }\n")
    result = sft(*data(world, output="jinja"), "--chat_template", str(template))
    assert_one_message(result, "error: ChatTemplateError: The chat template is not valid Jinja (line 1")
    assert "skip_invalid_rows" not in result.stderr


def test_a_stage_into_another_stages_finished_folder_says_so(world, tmp_path):
    output_dir = tmp_path / "sft_out"
    output_dir.mkdir()
    recipe = STAGES["sft"].parse(["recipes/tiny/sft/config.yaml", "--output_dir", str(output_dir)])
    (output_dir / RESOLVED_CONFIG_NAME).write_text(yaml.safe_dump(resolved_config(*recipe)))
    (output_dir / FINISHED_NAME).write_text(json.dumps({"global_step": 1}))
    dpo = run_clean(
        "scripts/run_dpo.py",
        "recipes/tiny/dpo/config.yaml",
        "--model_name_or_path",
        str(world["base"]),
        "--output_dir",
        str(output_dir),
    )
    assert_one_message(dpo, f"error: OutputDirError: {output_dir} holds a finished model of another stage")
    assert "differs in" not in dpo.stderr


# run_eval.py and run_search.py: everything checked before any model generates.


def evaluate(world, *args: str):
    tiny = world["tiny"]
    return run_clean(
        "scripts/run_eval.py",
        *[
            "--baseline",
            str(world["base"]),
            "--candidate",
            str(world["base"]),
            "--prompts",
            str(tiny / "dpo/test.jsonl"),
        ],
        *["--output", str(world["root"] / "eval.json"), *args],
        env={"PYTHONPATH": str(world["root"])},  # where the careless rules are
    )


def test_eval_of_a_reward_model_as_a_policy_is_refused(world):
    result = evaluate(world, "--baseline", str(world["root"] / "reward_model"))
    assert_one_message(result, "is a LlamaForSequenceClassification, not a causal LM.")


def test_eval_pairs_without_a_judge_are_refused(world):
    result = evaluate(world, "--pairs", str(world["tiny"] / "rm/test.jsonl"))
    assert_one_message(result, "error: RecipeError: `pairs` are the judge's held-out pairs: set `judge`")


@pytest.mark.parametrize(
    "rule, message",
    [
        (f"{RULES}:returns_text", "returned str ('correct'); a rule returns a bool or a number."),
        (f"{RULES}:takes_the_reply_only", "cannot be called as `package.module:function`"),
    ],
)
def test_eval_rules_are_called_once_before_generating(world, rule, message):
    assert_one_message(evaluate(world, "--rule", rule), f"error: RecipeError: `rule: {rule}` {message}")


def test_eval_of_a_missing_candidate_or_into_a_folder_is_refused(world):
    assert_one_message(evaluate(world, "--candidate", "outputs/nowhere/dpo"), "`candidate: outputs/nowhere/dpo`")
    assert_one_message(evaluate(world, "--output", str(world["root"])), "is a folder: give the path of the JSON file")


def test_eval_steps_of_the_wrong_file_are_refused_before_generating(world):
    tiny = world["tiny"]
    result = evaluate(world, "--value_model", str(world["base"]), "--steps", str(tiny / "dpo/test.jsonl"))
    assert_one_message(result, f"`value_model: {world['base']}` has no value head")


def test_search_with_a_rule_that_returns_text_is_refused_before_generating(world, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Add 3, 4 and 5."}) + "\n")
    result = run_clean(
        "scripts/run_search.py",
        *["--policy", str(world["base"]), "--prompts", str(prompts), "--algorithm", "greedy"],
        *["--verifier", f"{RULES}:returns_text", "--output_dir", str(tmp_path / "search")],
        env={"PYTHONPATH": str(world["root"])},
    )
    assert_one_message(result, f"error: RecipeError: `verifier: {RULES}:returns_text` returned str")


def test_eval_pairs_of_the_wrong_file_are_refused_before_generating(world):
    judge = str(world["root"] / "reward_model")
    result = evaluate(world, "--judge", judge, "--pairs", str(world["tiny"] / "sft/test.jsonl"))
    assert_one_message(result, f"error: DataError: `pairs: {world['tiny'] / 'sft/test.jsonl'}` row 0: ")
