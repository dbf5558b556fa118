"""GRPO's rewards: the recipe entries checked, step values aggregated against hand-computed values, and each kind
built as TRL calls it (conversational prompts and completions in, one float per completion out)."""

import pytest

from alignment.grpo import reward_functions
from alignment.grpo.config import GRPOConfig
from alignment.grpo.rewards import REWARD_KINDS, STEP_AGGREGATES, RewardSpec, aggregate_step_values, reward_specs

PROMPT = [{"role": "user", "content": "Can you compute 38+47?"}]


def completion(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("aggregate, expected", [("min", -0.25), ("last", 0.75), ("mean", (0.5 - 0.25 + 0.75) / 3)])
def test_step_values_become_one_reward_as_computed_by_hand(aggregate, expected):
    assert aggregate_step_values([0.5, -0.25, 0.75], aggregate) == pytest.approx(expected)
    assert aggregate_step_values([], aggregate) == -1.0  # no step: the lowest value
    assert set(STEP_AGGREGATES) == {"min", "last", "mean"}


def test_entries_are_checked_naming_the_entry_and_what_is_valid():
    specs = reward_specs([{"kind": "rule", "path": "m:f"}, {"kind": "value_model", "path": "out/value", "weight": 2}])
    assert specs == [RewardSpec("rule", "m:f", 1.0, None), RewardSpec("value_model", "out/value", 2.0, "min")]
    assert [spec.name for spec in specs] == ["rule_f", "value_model_value_min"]
    for entries, message in [
        ([], "must list at least one"),
        ([{"kind": "judge", "path": "x"}], "rewards[0]: `kind: judge` is none of the reward kinds: `reward_model`"),
        ([{"kind": "rule"}], "rewards[0]: `path` is required"),
        ([{"kind": "rule", "path": "m:f", "weight": "high"}], "`weight: 'high'` must be a finite number"),
        ([{"kind": "rule", "path": "m:f", "aggregate": "min"}], "`aggregate` applies to step values only"),
        ([{"kind": "value_model", "path": "v", "aggregate": "max"}], "`aggregate: max` is none of min, last, mean"),
        ([{"kind": "rule", "path": "m:f", "scale": 2}], "unknown keys ['scale']"),
        ([{"kind": "rule", "path": "m:f"}] * 2, "lists one reward twice"),
    ]:
        with pytest.raises(ValueError, match=None) as raised:
            reward_specs(entries)
        assert message in str(raised.value)
    assert set(REWARD_KINDS) == {"reward_model", "rule", "value_model"}


def test_the_weights_are_trls_reward_weights_and_one_knob():
    rewards = [{"kind": "rule", "path": "tiny_world.arithmetic:answer_is_correct", "weight": 0.5}]
    config = GRPOConfig(output_dir="out", rewards=rewards, per_device_train_batch_size=8, num_generations=4)
    assert config.reward_weights == [0.5]
    with pytest.raises(ValueError, match="give the weights in `rewards` only"):
        GRPOConfig(output_dir="out", rewards=rewards, reward_weights=[1.0], per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="`num_generations: 0` must be at least 2"):
        GRPOConfig(output_dir="out", rewards=rewards, num_generations=0, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="`use_vllm: true` generates with vLLM on a CUDA GPU"):
        GRPOConfig(output_dir="out", rewards=rewards, use_vllm=True, per_device_train_batch_size=8)


def test_a_rule_reward_reads_each_reply():
    reward = reward_functions.rule_reward(RewardSpec("rule", "tiny_world.arithmetic:answer_is_correct"), None)
    replies = [completion("38+47=85"), completion("38+47=85 lol!!"), completion("38+47=84")]
    assert reward([PROMPT] * 3, replies) == [1.0, 0.0, 0.0]
    assert reward.__name__ == "rule_answer_is_correct"


def test_the_value_model_process_reward_of_known_traces(monkeypatch):
    """Each completion is split into its lines as the value data delimits steps; each step's value aggregated."""
    step_values = {"38+40=78": 0.9, "78+7=85": 0.8, "78+7=84": -0.6}
    scored = []

    def fake_score_traces(model, tokenizer, traces):
        scored.extend(traces)
        return [[step_values[step] for step in steps] for _, steps in traces]

    monkeypatch.setattr(reward_functions, "_checked_model", lambda spec, kind: None)
    monkeypatch.setattr(reward_functions, "has_value_head", lambda path: True)
    monkeypatch.setattr(reward_functions, "load_value_model", lambda path: None)
    monkeypatch.setattr(reward_functions.AutoTokenizer, "from_pretrained", lambda path: None)
    monkeypatch.setattr(reward_functions, "score_traces", fake_score_traces)
    replies = [completion("38+40=78\n78+7=85"), completion("38+40=78\n\n78+7=84\n"), completion("  \n")]
    for aggregate, expected in [("min", [0.8, -0.6, -1.0]), ("last", [0.8, -0.6, -1.0]), ("mean", [0.85, 0.15, -1.0])]:
        reward = reward_functions.value_model_reward(RewardSpec("value_model", "out/value", 1.0, aggregate), None)
        assert reward([PROMPT] * 3, replies) == pytest.approx(expected)
    assert scored[:2] == [(PROMPT, ["38+40=78", "78+7=85"]), (PROMPT, ["38+40=78", "78+7=84"])]  # no empty trace


def test_a_reward_model_scores_the_prompt_and_the_reply_as_one_conversation(monkeypatch):
    seen = []
    monkeypatch.setattr(reward_functions, "_checked_model", lambda spec, kind: None)
    monkeypatch.setattr(reward_functions, "load_reward_model", lambda path: ("model", "its own tokenizer"))
    monkeypatch.setattr(
        reward_functions, "score_with", lambda model, tokenizer, chats: seen.append((tokenizer, chats)) or [0.5]
    )
    reward = reward_functions.reward_model_reward(RewardSpec("reward_model", "out/rm"), "the policy's tokenizer")
    assert reward([PROMPT], [completion("38+47=85")]) == [0.5]
    assert seen == [("its own tokenizer", [[*PROMPT, {"role": "assistant", "content": "38+47=85"}]])]
