"""Safe loading by default: no remote code unless the recipe allows it, no pickle weights unless it allows them, and
no `torch.load` without `weights_only=True` anywhere in the package."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignment.dpo.config import DPOConfig
from alignment.recipes.arguments import ModelArguments
from alignment.reward.config import RewardConfig
from alignment.runtime.loading import load_model
from alignment.sft.config import SFTConfig
from alignment.value.config import ValueConfig
from alignment.value.modeling import PICKLED_VALUE_HEAD_NAME, ValueHead, load_value_head

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def pickled_model(tiny_world, tmp_path):
    """The tiny base model with its weights as `pytorch_model.bin` only (transformers 5 no longer writes pickles)."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_world / "base", folder)
    (folder / "model.safetensors").unlink()
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_world / "base").state_dict(), folder / "pytorch_model.bin")
    return folder


def test_a_pickle_only_model_is_refused_unless_allowed(pickled_model, tiny_world):
    with pytest.raises(ValueError, match=r"only as pickle files \(pytorch_model.bin\).*`allow_pickle_weights: true`"):
        load_model(ModelArguments(model_name_or_path=str(pickled_model)))
    model = load_model(ModelArguments(model_name_or_path=str(pickled_model), allow_pickle_weights=True))
    reference = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    for (name, tensor), (_, expected) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(tensor, expected), name


def test_a_pickled_value_head_is_refused_unless_allowed(tmp_path):
    head = ValueHead(8, seed=3)
    torch.save(head.state_dict(), tmp_path / PICKLED_VALUE_HEAD_NAME)
    with pytest.raises(ValueError, match=r"value_head.pth is a pickle.*`allow_pickle_weights: true`"):
        load_value_head(tmp_path, 8)
    loaded = load_value_head(tmp_path, 8, allow_pickle_weights=True)
    assert torch.equal(loaded.weight, head.weight) and torch.equal(loaded.bias, head.bias)


@pytest.mark.parametrize("config_class", [SFTConfig, DPOConfig, RewardConfig, ValueConfig])
def test_remote_code_is_off_unless_the_recipe_turns_it_on(config_class, tmp_path):
    assert config_class(output_dir=str(tmp_path)).trust_remote_code is False


def test_a_model_that_needs_remote_code_names_the_recipe_key(tiny_world, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_world / "base", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my_custom_llama"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text("raise SystemExit('the remote code ran')\n")
    with pytest.raises(ValueError, match=r"needs code from its repository.*Set `trust_remote_code: true`"):
        load_model(ModelArguments(model_name_or_path=str(folder)))


def test_no_torch_load_without_weights_only_in_the_package():
    calls = []
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.index(")", match.end()) + 1]
            calls.append((path.name, call))
            assert "weights_only=True" in call, f"{path}: {call}"
    assert calls, "the scan found no torch.load at all: check the pattern"
