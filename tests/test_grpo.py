"""End to end: `scripts/run_grpo.py` optimises the teacher world's policy online against a rule, and refuses bad
rewards and prompts with one message.

The policy is the tiny model SFT'd on a careless teacher's chats (the style flaw on 70% of its answers). GRPO samples
8 replies per prompt and rewards the clean ones (`tiny_world.arithmetic:answer_is_clean`, no pair, no reference):
the held-out greedy answers must become clean. A second rule of weight 0 records every reply the policy generated,
which shows generation stops at the chat template's end of turn.
"""

import json

import pytest
import torch

from alignment.stages import STAGES
from tests.support.greedy import greedy_shares

from .conftest import logged_losses, run
from .test_user_errors import assert_one_message

TINY_GRPO = "recipes/tiny/grpo/config.yaml"
GRPO_STEPS = 20  # at lr 3e-4 without the KL term: the shortest run that removes the flaw (no reference loaded)
CLEAN = {"kind": "rule", "path": "tiny_world.arithmetic:answer_is_clean", "weight": 1.0}
# A rule that writes down every reply it is given and rewards nothing: what the reward functions see.
RECORDING_RULE = """
import json, os

def record(prompt, reply):
    with open(os.environ["REPLIES"], "a") as replies:
        replies.write(json.dumps(reply) + "\\n")
    return 0.0
"""


def grpo(model, prompts, output_dir, *extra: str, rewards=(CLEAN,), env=None):
    overrides = [
        *["--model_name_or_path", str(model), "--dataset_mixer", json.dumps({str(prompts): 0.1})],
        *["--rewards", json.dumps(list(rewards)), "--output_dir", str(output_dir), "--disable_tqdm", "true"],
    ]
    if env is None:
        return run("scripts/run_grpo.py", TINY_GRPO, *overrides, *extra)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return run("scripts/run_grpo.py", TINY_GRPO, *overrides, *extra)


@pytest.mark.slow
def test_grpo_with_a_rule_removes_the_teachers_flaw(sft_model, teacher_world, dpo_data, sft_greedy_shares, tmp_path):
    (tmp_path / "recording_rules.py").write_text(RECORDING_RULE)
    replies = tmp_path / "replies.jsonl"
    recording = {"kind": "rule", "path": "recording_rules:record", "weight": 0.0}
    result = grpo(
        sft_model,
        teacher_world / "sft_teacher",
        tmp_path / "out",
        *["--max_steps", str(GRPO_STEPS), "--save_strategy", "no", "--learning_rate", "3e-4", "--beta", "0"],
        rewards=(CLEAN, recording),
        env={"PYTHONPATH": str(tmp_path), "REPLIES": str(replies)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    clean_before, _ = sft_greedy_shares
    clean_after, _ = greedy_shares(tmp_path / "out", dpo_data)
    assert clean_before <= 0.5, clean_before  # the control: the starting policy keeps the flaw
    assert clean_after >= 0.9, (clean_before, clean_after)

    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert {"rewards/rule_answer_is_clean/mean", "rewards/rule_answer_is_clean/std"} <= history[0].keys()
    assert 0 < history[0]["generation/share_of_time"] < 1 and history[0]["generation/completion_tokens_per_s"] > 0
    assert len(logged_losses(tmp_path / "out")) == GRPO_STEPS // 5  # logging_steps: 5
    recorded = [json.loads(line) for line in replies.read_text().splitlines()]
    assert len(recorded) >= GRPO_STEPS * 32  # 32 completions a step, the check call and any evaluation aside
    assert not [reply for reply in recorded if "<|user|>" in reply or "</s>" in reply]  # stopped at its end of turn


def test_a_reward_model_that_is_not_a_classifier_is_one_message(teacher_world, tmp_path):
    base = teacher_world / "base"
    rewards = [{"kind": "reward_model", "path": str(base)}]
    result = grpo(base, teacher_world / "sft_teacher", tmp_path / "out", "--max_steps", "1", rewards=rewards)
    assert_one_message(
        result, f"error: RecipeError: `rewards.reward_model: {base}` is a LlamaForCausalLM, not a reward"
    )


def test_a_rule_that_does_not_import_or_returns_text_is_one_message(teacher_world, tmp_path):
    base, prompts = teacher_world / "base", teacher_world / "sft_teacher"
    missing = [{"kind": "rule", "path": "tiny_world.arithmetic:no_such_rule"}]
    result = grpo(base, prompts, tmp_path / "a", rewards=missing)
    assert_one_message(result, "error: RecipeError: `rewards[0].path: tiny_world.arithmetic:no_such_rule`: module")
    (tmp_path / "text_rules.py").write_text("def verdict(prompt, reply):\n    return 'good'\n")
    text = [{"kind": "rule", "path": "text_rules:verdict"}]
    result = grpo(base, prompts, tmp_path / "b", rewards=text, env={"PYTHONPATH": str(tmp_path)})
    assert_one_message(result, "error: RecipeError: `rewards.rule: text_rules:verdict` returned str ('good')")


def test_num_generations_that_do_not_divide_the_batch_is_one_message(teacher_world, tmp_path):
    base = teacher_world / "base"
    result = grpo(base, teacher_world / "sft_teacher", tmp_path / "out", "--per_device_train_batch_size", "30")
    assert_one_message(result, "error: RecipeError: generation_batch_size (30) must be divisible by num_generations")


def test_a_prompt_source_without_prompt_turns_is_one_message(teacher_world, tmp_path):
    rows = tmp_path / "replies_only.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "assistant", "content": "38+47=85"}]}) + "\n")
    result = grpo(teacher_world / "base", rows, tmp_path / "out")
    assert_one_message(result, "error: InvalidRowError: ")
    assert "row 0" in result.stderr


def stage_trainer(model, teacher_world, tmp_path, *extra: str):
    """The recipe, tokenizer, data and trainer the GRPO stage builds in this process, on 1% of the teacher's chats."""
    recipe = STAGES["grpo"].parse(
        [
            TINY_GRPO,
            *["--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out")],
            *["--dataset_mixer", json.dumps({str(teacher_world / "sft_teacher"): 0.01}), *extra],
        ]
    )
    stage = STAGES["grpo"].stage
    tokenizer = stage.start(recipe)
    data = stage.load_data(recipe, tokenizer)
    return recipe, tokenizer, data, stage.build_trainer(recipe, tokenizer, data, stage.load_model(recipe, tokenizer))


RECORDED: list[str] = []


def recording_rule(prompt, reply) -> float:
    """A rule that keeps every reply it is given (in this process) and rewards its length."""
    RECORDED.append(reply)
    return float(len(reply))


def test_completion_masks_and_rewards_see_exactly_the_generated_ids(sft_model, teacher_world, tmp_path):
    """One generation batch of the stage's own trainer: each completion's mask covers exactly its generated ids up to
    and including the template's end of turn (what the policy's log-probs are taken over), and the reward is given
    the text of exactly those ids."""
    rule = {"kind": "rule", "path": f"{__name__}:recording_rule"}
    recipe, tokenizer, data, trainer = stage_trainer(
        sft_model, teacher_world, tmp_path, "--rewards", json.dumps([rule])
    )
    trainer.model.train()
    RECORDED.clear()
    rows = [data.splits["train"][index] for index in range(4) for _ in range(8)]  # 4 prompts x 8, as TRL samples
    batch = trainer._generate_and_score_completions(rows)
    end_of_turn = tokenizer.convert_tokens_to_ids("</s>")
    ids, mask = batch["completion_ids"], batch["completion_mask"]
    assert len(RECORDED) == len(rows) == len(ids)
    ended = 0
    for row_ids, row_mask, reply in zip(ids.tolist(), mask.tolist(), RECORDED, strict=True):
        length = sum(row_mask)
        assert row_mask == [1] * length + [0] * (len(row_mask) - length)  # a prefix: the ids generated
        generated = row_ids[:length]
        if end_of_turn in generated:  # stopped at its end of turn, which is trained; nothing after it
            assert generated.index(end_of_turn) == length - 1
            ended += 1
        else:  # cut at max_completion_length
            assert length == recipe.training.max_completion_length
        assert reply == tokenizer.decode(generated, skip_special_tokens=True)
    assert ended >= len(rows) // 2  # the dSFT policy ends most replies itself
    # Each completion's advantage: its reward (here its reply's length) against its group's, by hand.
    rewards = torch.tensor([float(len(reply)) for reply in RECORDED]).view(4, 8)
    expected = (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + 1e-4)
    assert torch.allclose(batch["advantages"].view(4, 8), expected, atol=1e-5)


@pytest.mark.parametrize(
    "extra, reference",
    [
        (["--beta", "0"], "none"),  # no KL term: no reference is loaded
        (["--beta", "0.1"], "copy"),  # full fine-tuning: a copy of the starting policy, never stepped
        (["--beta", "0.1", "--use_peft", "true", "--lora_target_modules", "all-linear"], "adapter_disabled"),
    ],
)
def test_the_reference_is_what_beta_and_lora_ask_for(teacher_world, tmp_path, extra, reference):
    """As in DPO: with LoRA the reference is the base with the adapter disabled (no second model), with `beta: 0`
    none is loaded, else a copy of the starting weights."""
    *_, trainer = stage_trainer(teacher_world / "base", teacher_world, tmp_path, *extra)
    is_peft = hasattr(trainer.model, "disable_adapter")
    if reference == "copy":
        assert trainer.ref_model is not None and not is_peft
        start = trainer.model.state_dict()
        assert all(torch.equal(v, start[k]) for k, v in trainer.ref_model.state_dict().items())
    else:
        assert trainer.ref_model is None
        assert is_peft == (reference == "adapter_disabled")
