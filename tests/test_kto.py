"""The KTO stage: the KTO paper's weights rule, the unpaired formats (pairs split only on request), the exact mask of
a completion after its inference prompt, and, end to end, KTO from unpaired feedback at 1:4 removing the careless
teacher's flaw from the dSFT model."""

import json

import pytest
import yaml
from datasets import Dataset
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from alignment.chat.turns import end_of_turn_token_ids
from alignment.data.conversion import convert_source, target_for
from alignment.data.rows import DataError
from alignment.kto.config import balance_ratio, balanced_weights
from alignment.kto.rows import to_unpaired, tokenize_unpaired
from alignment.kto.trainer import with_kl_completions
from alignment.pipeline import PipelineConfig
from alignment.recipes.parser import RecipeParser
from alignment.stages import STAGES
from tests.support.greedy import greedy_shares
from tests.support.invariant import expected_turn
from tiny_world import unpaired_rows

from .conftest import REPO, run, write_jsonl

KTO = target_for(STAGES["kto"].stage.required_columns)


def test_unset_weights_balance_the_labels_by_the_kto_papers_rule():
    assert balanced_weights(200, 800) == (4.0, 1.0)  # 1:4 -> desirable_weight 4, the weighted ratio 1
    assert balance_ratio(200, 800, *balanced_weights(200, 800)) == 1.0
    assert balanced_weights(200, 800, undesirable_weight=0.5) == (2.0, 0.5)
    assert balanced_weights(200, 800, desirable_weight=3.0) == (3.0, 0.75)
    assert balanced_weights(200, 800, 1.0, 1.0) == (1.0, 1.0)  # both set: kept (a warning names the ratio)
    assert balanced_weights(0, 800) == (1.0, 1.0)  # one label only: nothing to balance


def test_pairs_are_split_only_when_the_source_asks():
    pairs = Dataset.from_list(
        [
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "1+1?", "chosen": "2", "rejected": "2"},  # refused: nothing to prefer
        ]
    )
    with pytest.raises(DataError, match="Set `format: unpaired_preference` in its entry"):
        convert_source("pairs", {"train": pairs}, KTO)
    rows = convert_source("pairs", {"train": pairs}, KTO, "unpaired_preference")["train"].to_list()
    assert [(row["completion"], row["label"]) for row in rows[:2]] == [
        ([{"role": "assistant", "content": "4"}], True),
        ([{"role": "assistant", "content": "5"}], False),
    ]
    assert rows[0]["prompt"] == rows[1]["prompt"] == [{"role": "user", "content": "2+2?"}]
    # A refused pair is one row, and its message names the pair's own row in the source.
    assert len(rows) == 3 and rows[2]["format_problem"]["message"].startswith("source row 1: chosen and rejected")


def test_llama_factory_kto_tag_rows_label_their_last_reply():
    sharegpt = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "kto_tag": False}
    alpaca = {"instruction": "Add", "input": "2 and 3", "output": "5", "kto_tag": True}
    for row, expected in (
        (sharegpt, ([{"role": "user", "content": "hi"}], "yo", False)),
        (alpaca, ([{"role": "user", "content": "Add\n2 and 3"}], "5", True)),
    ):
        (converted,) = convert_source("src", {"train": Dataset.from_list([row])}, KTO)["train"].to_list()
        assert (converted["prompt"], converted["completion"][0]["content"], converted["label"]) == expected
    (bad,) = convert_source("src", {"train": Dataset.from_list([{**alpaca, "kto_tag": "yes"}])}, KTO)["train"]
    assert bad["format_problem"]["kind"] == "malformed label"
    # A tools column is never dropped without a word: the row is refused, naming it.
    tools = json.dumps([{"name": "add", "parameters": {"type": "object"}}])
    (refused,) = convert_source("src", {"train": Dataset.from_list([{**sharegpt, "tools": tools}])}, KTO)["train"]
    assert refused["format_problem"]["kind"] == "unsupported tools"
    assert to_unpaired({"prompt": "2+2?", "completion": "4", "label": 1}).kind == "malformed label"


def test_the_completion_and_its_end_of_turn_are_trained_exactly(tiny_world, tiny_tokenizer):
    """Token by token: the prompt is what inference feeds the model (generation prompt included) and is not trained;
    the trained tokens are exactly the reply's ids, ending with the template's end-of-turn token."""
    rows = [json.loads(line) for line in (tiny_world / "kto" / "train.jsonl").read_text().splitlines()[:8]]
    data, report = tokenize_unpaired(Dataset.from_list(rows), tiny_tokenizer, max_length=128)
    assert report.rows == 8 and report.desirable + report.undesirable == 8
    end_of_turn = set(end_of_turn_token_ids(tiny_tokenizer))
    batch = DataCollatorForUnpairedPreference(pad_token_id=tiny_tokenizer.pad_token_id)(
        [{key: example[key] for key in ("prompt_ids", "completion_ids", "label")} for example in data]
    )
    for index, row in enumerate(rows):
        prompt_ids, reply_ids = expected_turn(tiny_tokenizer, [*row["prompt"], *row["completion"]], len(row["prompt"]))
        length = len(prompt_ids) + len(reply_ids)
        assert batch["input_ids"][index][:length].tolist() == prompt_ids + reply_ids
        assert batch["completion_mask"][index].tolist() == [0] * len(prompt_ids) + [1] * len(reply_ids) + [0] * (
            batch["input_ids"].shape[1] - length
        )
        assert reply_ids[-1] in end_of_turn and batch["label"][index].item() == row["label"]


def test_kl_completions_pair_within_the_global_micro_batch():
    rows = Dataset.from_dict({"completion_ids": [[i] for i in range(8)]})
    assert with_kl_completions(rows, 4)["KL_completion_ids"] == [[3], [0], [1], [2], [7], [4], [5], [6]]


def test_the_pipeline_chains_sft_then_kto(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "output_dir": "outputs/tiny",
                "stages": [{"recipe": f"recipes/tiny/{s}/config.yaml"} for s in ("sft", "kto")],
            }
        )
    )
    (config,) = RecipeParser((PipelineConfig,)).parse([str(pipeline)])
    assert [stage["script"] for stage in config.stages] == ["scripts/run_sft.py", "scripts/run_kto.py"]
    sft, kto = (yaml.safe_load(open(stage["recipe"])) for stage in config.stages)
    assert kto["model_name_or_path"] == sft["output_dir"]  # the SFT output is the KTO policy and reference


# 1:4 desirable:undesirable from the demo's pairs, the KTO paper's weights (desirable_weight 4), 30 steps of 32 rows
# at beta 1.0 and lr 3e-4 (a quarter of the tiny recipe's 120 steps, which keep the demo's sums:
# benchmarks/RESULTS.md).
# Measured on this fixture (200 held-out prompts), before -> after:
#   clean greedy share 0.000 -> 0.995; rule-correct share 0.000 -> 0.010 (the 300-step SFT model seldom adds right:
#   DPO's sigmoid reaches 0.015 on it, tests/test_dpo.py; the demo's 2,000-step model: benchmarks/RESULTS.md).
MIN_CLEAN_SHARE = 0.8


@pytest.mark.slow
def test_kto_from_unbalanced_feedback_unlearns_the_teachers_flaw(sft_model, dpo_data, sft_greedy_shares, tmp_path):
    data = tmp_path / "kto"
    for split in ("train", "test"):
        pairs = [json.loads(line) for line in (dpo_data / f"{split}.jsonl").read_text().splitlines()]
        write_jsonl(data / f"{split}.jsonl", unpaired_rows(pairs, 0.2, seed=0))
    result = run(
        "scripts/run_kto.py",
        str(REPO / "recipes/tiny/kto/config.yaml"),
        *["--model_name_or_path", str(sft_model), "--dataset_mixer", json.dumps({str(data): 1.0})],
        *["--output_dir", str(tmp_path / "out"), "--save_strategy", "no", "--disable_tqdm", "true"],
        *["--max_steps", "30", "--eval_steps", "30", "--beta", "1.0", "--learning_rate", "3e-4"],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "KTO weights: desirable_weight 4, undesirable_weight 1" in result.stdout + result.stderr
    clean_before, correct_before = sft_greedy_shares
    clean_after, correct_after = greedy_shares(tmp_path / "out", dpo_data)
    print(
        f"kto: clean greedy share {clean_before:.3f} -> {clean_after:.3f}; rule-correct {correct_before:.3f} -> "
        f"{correct_after:.3f}"
    )
    assert clean_before < MIN_CLEAN_SHARE <= clean_after
    assert correct_after >= correct_before
