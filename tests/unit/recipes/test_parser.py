"""The strict recipe parser: unknown keys, wrong types, precedence, help, and the resolved config round trip."""

import dataclasses

import pytest
import yaml

from alignment.recipes.arguments import DataArguments, ModelArguments
from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.runtime.lifecycle import resolved_config
from alignment.sft.config import SFTConfig


@dataclasses.dataclass
class Toy:
    beta: float = 0.1
    steps: int = 10
    name: str = "run"
    flag: bool = False
    modules: list[str] | None = None
    mixer: dict[str, float] | list[dict] | None = None

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"`beta` must be positive, got {self.beta}")


@dataclasses.dataclass
class Other:
    steps: int = 10
    lr: float = 1e-3


def write(tmp_path, content: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_defaults_then_yaml_then_cli(tmp_path):
    recipe = write(tmp_path, {"beta": 0.5, "steps": 20, "name": "yaml"})
    toy, other = RecipeParser((Toy, Other)).parse([recipe, "--name", "cli", "--lr=0.01"])
    assert (toy.beta, toy.steps, toy.name, toy.flag) == (0.5, 20, "cli", False)
    # `steps` is a field of both dataclasses: one value governs both.
    assert (other.steps, other.lr) == (20, 0.01)


def test_unknown_yaml_key_names_it_and_the_closest_valid_key(tmp_path):
    recipe = write(tmp_path, {"betaa": 0.5})
    with pytest.raises(RecipeError, match=r"Unknown recipe key `betaa`\. Did you mean `beta`\?"):
        RecipeParser((Toy, Other)).parse([recipe])


def test_cli_typo_is_refused_with_suggestion(tmp_path):
    with pytest.raises(RecipeError, match=r"`stpes`.*Did you mean `steps`"):
        RecipeParser((Toy,)).parse([write(tmp_path, {}), "--stpes", "3"])


def test_unknown_key_without_close_match_points_to_help():
    with pytest.raises(RecipeError, match="--help"):
        RecipeParser((Toy,)).parse_dict({"zzzzzz": 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("steps", 1.5, "`steps`: expected an integer, got 1.5"),
        ("steps", "ten", "`steps`: expected an integer, got 'ten'"),
        ("beta", "high", "`beta`: expected a number, got 'high'"),
        ("flag", "maybe", "`flag`: expected true or false, got 'maybe'"),
        ("name", ["a"], "`name`: expected a string"),
        ("mixer", 3, "`mixer`: 3 matches none of"),
    ],
)
def test_wrong_types_name_the_field(key, value, message):
    with pytest.raises(RecipeError) as error:
        RecipeParser((Toy,)).parse_dict({key: value})
    assert message in str(error.value)


def test_string_numbers_from_yaml_and_cli_are_converted():
    # PyYAML reads `5e-7` as a string; the original handbook's recipes rely on it becoming a float.
    assert yaml.safe_load("lr: 5e-7")["lr"] == "5e-7"
    (toy,) = RecipeParser((Toy,)).parse_dict({"beta": "5e-7", "steps": "3", "flag": "true"})
    assert (toy.beta, toy.steps, toy.flag) == (5e-7, 3, True)


def test_cli_lists_bare_flags_and_mappings(tmp_path):
    (toy,) = RecipeParser((Toy,)).parse(
        [write(tmp_path, {"modules": ["q_proj"]}), "--modules", "k_proj", "v_proj", "--flag", "--mixer", "{a: 0.5}"]
    )
    assert toy.modules == ["k_proj", "v_proj"]
    assert toy.flag is True
    assert toy.mixer == {"a": 0.5}


def test_post_init_checks_still_run():
    with pytest.raises(ValueError, match="`beta` must be positive, got -1.0"):
        RecipeParser((Toy,)).parse_dict({"beta": -1})


def test_help_lists_every_key_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        RecipeParser((ModelArguments, DataArguments, SFTConfig)).parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("--model_name_or_path", "--dataset_mixer", "--chat_template", "--learning_rate", "--max_length"):
        assert key in out


def test_bad_recipe_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match="does not exist"):
        RecipeParser((Toy,)).parse([str(missing)])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        RecipeParser((Toy,)).parse([str(listing)])


def test_handbook_fields_that_trl_also_has_are_not_doubled(tmp_path):
    parser = RecipeParser((ModelArguments, DataArguments, SFTConfig))
    base = {"model_name_or_path": "m", "output_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="`chat_template_path.*set `chat_template`"):
        parser.parse_dict({**base, "chat_template_path": "x.jinja"})
    with pytest.raises(ValueError, match="`assistant_only_loss` is not used"):
        parser.parse_dict({**base, "assistant_only_loss": True})
    with pytest.raises(ValueError, match="`load_in_4bit`.*`use_peft: true`"):
        parser.parse_dict({**base, "load_in_4bit": True})


def test_resolved_config_parses_back_to_the_same_run(tmp_path):
    parser = RecipeParser((ModelArguments, DataArguments, SFTConfig))
    configs = parser.parse_dict(
        {"model_name_or_path": "m", "output_dir": str(tmp_path), "learning_rate": "2e-5", "dataset_mixer": {"d": 0.5}}
    )
    resolved = resolved_config(*configs)
    again = parser.parse_dict(yaml.safe_load(yaml.safe_dump(resolved)))
    assert resolved_config(*again) == resolved
    assert resolved["learning_rate"] == 2e-5 and resolved["dataset_mixer"] == {"d": 0.5}


def test_a_key_written_twice_is_refused_at_any_depth_naming_both_lines(tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("output_dir: out\ndataset_mixer:\n  a.jsonl: 0.5\n  b.jsonl: 1.0\n  a.jsonl: 1.0\n")
    with pytest.raises(RecipeError, match=r"`a.jsonl` is written twice, on lines 3 and 5: keep one"):
        RecipeParser.read_recipe(recipe)
    recipe.write_text("output_dir: out\nlist: [1, 1]\nnested: {a: 1, b: 1}\n")  # equal values are not keys
    assert RecipeParser.read_recipe(recipe)["list"] == [1, 1]


@pytest.mark.parametrize("value", ["true", "false"])
def test_resume_from_checkpoint_true_means_the_newest_checkpoint_not_a_folder(tmp_path, value):
    recipe = tmp_path / "resume.yaml"
    recipe.write_text(f"model_name_or_path: x\noutput_dir: out\nresume_from_checkpoint: {value}\n")
    for argv in ([str(recipe)], [str(recipe), "--resume_from_checkpoint", value]):
        *_, training = RecipeParser((ModelArguments, DataArguments, SFTConfig)).parse(argv)
        assert training.resume_from_checkpoint is None
