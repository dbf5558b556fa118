"""Reward-model pieces: the pair sampler, the loss and metrics against hand-computed values, the reward position."""

import math
import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput
from trl.trainer.reward_trainer import DataCollatorForPreference

from alignment.recipes.arguments import ModelArguments
from alignment.reward.config import RewardConfig, reward_peft_config
from alignment.reward.pairs import pair_padding_fraction, reward_row_problem, tokenize_pairs
from alignment.reward.scoring import score_with
from alignment.reward.trainer import PairwiseRewardTrainer, reward_statistics
from alignment.runtime.samplers import PairLengthGroupedSampler


def mixed_lengths(n: int = 512, seed: int = 0) -> tuple[list[int], list[int]]:
    """Chosen and rejected token counts of chit-chat of very different sizes (a one-liner to a long answer)."""
    rng = random.Random(seed)
    chosen = [rng.choice([rng.randint(8, 30), rng.randint(30, 120), rng.randint(120, 400)]) for _ in range(n)]
    rejected = [max(4, c + rng.randint(-20, 20)) for c in chosen]
    return chosen, rejected


def test_sampler_yields_every_pair_once_seeded_per_epoch():
    chosen, rejected = mixed_lengths()
    lengths = [max(c, r) for c, r in zip(chosen, rejected, strict=True)]
    sampler = PairLengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    assert list(PairLengthGroupedSampler(lengths, batch_size=8, seed=3)) == first  # same seed, same order
    assert list(PairLengthGroupedSampler(lengths, batch_size=8, seed=4)) != first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == sorted(first)
    sampler.set_epoch(0)
    assert list(sampler) == first  # an epoch's order does not depend on what ran before (resume)


def test_grouping_lowers_the_padding_fraction_of_mixed_length_pairs():
    chosen, rejected = mixed_lengths()
    lengths = [max(c, r) for c, r in zip(chosen, rejected, strict=True)]
    grouped = list(PairLengthGroupedSampler(lengths, batch_size=8, seed=0))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    with_grouping = pair_padding_fraction(chosen, rejected, grouped, 8)
    without = pair_padding_fraction(chosen, rejected, shuffled, 8)
    # Random batches of this mix are mostly padding (a 400-token answer beside one-liners); grouped batches hold
    # similar lengths, leaving only the chosen/rejected difference (+-20 tokens) and the spread within a batch.
    assert without > 0.5
    assert with_grouping < 0.15


def test_pair_padding_fraction_by_hand():
    # Batch 1: pairs 0, 1 -> rows 4, 2, 3, 3 padded to 4: 16 cells, 12 real. Batch 2: pair 2 -> rows 1, 5: 10 cells,
    # 6 real. Padding (4 + 4) / 26.
    assert pair_padding_fraction([4, 3, 1], [2, 3, 5], [0, 1, 2], 2) == pytest.approx(8 / 26)


def test_batches_keep_chosen_and_rejected_of_the_same_pairs_together():
    chosen, rejected = mixed_lengths(n=40)
    pairs = enumerate(zip(chosen, rejected, strict=True))
    rows = [{"chosen_ids": [i] * c, "rejected_ids": [1000 + i] * r} for i, (c, r) in pairs]
    lengths = [max(c, r) for c, r in zip(chosen, rejected, strict=True)]
    order = list(PairLengthGroupedSampler(lengths, batch_size=4, seed=0))
    collate = DataCollatorForPreference(pad_token_id=-1)
    for start in range(0, len(order), 4):
        batch = collate([rows[i] for i in order[start : start + 4]])["input_ids"]
        half = len(batch) // 2
        assert [int(row[0]) for row in batch[:half]] == order[start : start + 4]
        assert [int(row[0]) - 1000 for row in batch[half:]] == order[start : start + 4]


@pytest.fixture(scope="module")
def trainer(tiny_world, tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_world / "base", num_labels=1)
    data = Dataset.from_list([{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6]}] * 4)
    args = RewardConfig(
        output_dir=str(tmp_path_factory.mktemp("rm")),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        center_rewards_coefficient=0.01,
    )
    return PairwiseRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def fixed_rewards(values: list[float]):
    """A stand-in model whose rewards are `values` (the chosen rows first, then the rejected rows)."""
    return lambda **inputs: SequenceClassifierOutput(logits=torch.tensor(values).unsqueeze(-1))


def test_loss_is_minus_logsigmoid_of_the_margin_plus_centering(trainer):
    trainer.model.train()
    chosen, rejected, margin = [1.0, -0.5], [0.2, 0.3], [0.5, 0.0]
    inputs = {
        "input_ids": torch.ones(4, 3, dtype=torch.long),
        "attention_mask": torch.ones(4, 3, dtype=torch.long),
        "margin": torch.tensor(margin),
    }
    loss = trainer.compute_loss(fixed_rewards(chosen + rejected), dict(inputs))
    # -log(sigmoid(x)) = log(1 + exp(-x)), x = r_c - r_r - margin = 0.3 and -0.8; centering 0.01 * mean((r_c + r_r)^2)
    by_hand = (math.log(1 + math.exp(-0.3)) + math.log(1 + math.exp(0.8))) / 2 + 0.01 * (1.2**2 + 0.2**2) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)

    without_margin = {k: v for k, v in inputs.items() if k != "margin"}
    loss = trainer.compute_loss(fixed_rewards(chosen + rejected), without_margin)
    by_hand = (math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(0.8))) / 2 + 0.01 * (1.2**2 + 0.2**2) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)


def test_logged_metrics_are_exact_over_every_pair_since_the_last_log(trainer):
    trainer.model.train()
    trainer._pair_rewards.clear()
    inputs = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    # Two batches of one pair and one of two pairs: a mean of per-batch means would give accuracy 2/3, margin 0.5.
    trainer.compute_loss(fixed_rewards([1.0, 0.2]), dict(inputs))
    trainer.compute_loss(fixed_rewards([-0.5, 0.3]), dict(inputs))
    four = {k: torch.ones(4, 3, dtype=torch.long) for k in inputs}
    trainer.compute_loss(fixed_rewards([2.0, 3.0, 1.0, 1.0]), four)
    logs = {}
    trainer.log(logs)
    chosen, rejected = [1.0, -0.5, 2.0, 3.0], [0.2, 0.3, 1.0, 1.0]
    mean_c, mean_r = sum(chosen) / 4, sum(rejected) / 4
    assert logs["accuracy"] == pytest.approx(3 / 4)  # every pair but (-0.5, 0.3)
    assert logs["margin"] == pytest.approx((0.8 - 0.8 + 1.0 + 2.0) / 4)
    assert logs["rewards/chosen_mean"] == pytest.approx(mean_c)
    assert logs["rewards/chosen_std"] == pytest.approx(math.sqrt(sum((c - mean_c) ** 2 for c in chosen) / 4))
    assert logs["rewards/rejected_mean"] == pytest.approx(mean_r)
    assert logs["rewards/rejected_std"] == pytest.approx(math.sqrt(sum((r - mean_r) ** 2 for r in rejected) / 4))
    assert not trainer._pair_rewards["train"]  # cleared: the next log covers only the pairs after this one


def test_reward_statistics_count_ties_as_wrong():
    stats = reward_statistics(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]))
    assert stats["accuracy"] == 0.5 and stats["margin"] == 1.0


CONVERSATIONS = [
    [{"role": "user", "content": "What is 12+30?"}, {"role": "assistant", "content": "12+30=42"}],
    [
        {"role": "system", "content": "You are a friendly calculator."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Hello! Send me a sum and I will add it."},
        {"role": "user", "content": "Please add 84+43."},
        {"role": "assistant", "content": "84+43=127"},
    ],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi!"}],
]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_reward_is_read_at_the_last_real_token_on_either_padding_side(tiny_world, padding_side):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_world / "base", num_labels=1).eval()
    alone = score_with(model, tokenizer, CONVERSATIONS, batch_size=1)
    tokenizer.padding_side = padding_side
    batched = score_with(model, tokenizer, CONVERSATIONS, batch_size=3)
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len({round(x, 4) for x in alone}) == 3  # three different rewards: nothing degenerate compared


def test_a_pad_token_that_ends_replies_is_refused_naming_the_row(tiny_world):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    tokenizer.pad_token = tokenizer.eos_token  # zephyr ends every assistant turn with </s>
    rows = Dataset.from_list([{"prompt": "What is 1+2?", "chosen": "3", "rejected": "4"}])
    with pytest.raises(ValueError, match=r"split 'train'\) row 0: the chosen sequence ends with the pad token '</s>'"):
        tokenize_pairs(rows, tokenizer, max_length=None)


def test_pairs_over_max_length_are_dropped_not_truncated(tiny_world):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world / "base")
    rows = Dataset.from_list(
        [
            {"prompt": "What is 1+2?", "chosen": "1+2=3", "rejected": "1+2=4"},
            {"prompt": "What is 1+2?", "chosen": "1+2=3", "rejected": "1+2=3 " + "lol " * 40},
        ]
    )
    encoded = tokenize_pairs(rows, tokenizer, max_length=40)
    assert len(encoded) == 1
    text = tokenizer.decode(encoded[0]["chosen_ids"])
    assert text.endswith("1+2=3</s>") and text.startswith("<|user|>")


def test_row_checks_and_config_checks():
    row = {"prompt": "q", "chosen": "a", "rejected": "b"}
    assert reward_row_problem(row) is None
    assert reward_row_problem({**row, "margin": 0.5}) is None
    assert reward_row_problem({**row, "margin": "big"}).kind == "bad margin"
    assert reward_row_problem({**row, "rejected": "a"}).kind == "chosen equals rejected"
    with pytest.raises(ValueError, match="batch_rebalance"):
        RewardConfig(output_dir="unused", train_sampling_strategy="batch_rebalance")
    with pytest.raises(ValueError, match="center_rewards_coefficient: -0.1"):
        RewardConfig(output_dir="unused", center_rewards_coefficient=-0.1)
    with pytest.raises(ValueError, match="chat_template_path"):
        RewardConfig(output_dir="unused", chat_template_path="x.jinja")


def test_lora_reward_models_train_and_save_the_score_head():
    with pytest.raises(ValueError, match="lora_task_type: SEQ_CLS"):
        reward_peft_config(ModelArguments(model_name_or_path="m", use_peft=True))
    config = reward_peft_config(ModelArguments(model_name_or_path="m", use_peft=True, lora_task_type="SEQ_CLS"))
    assert config.task_type == "SEQ_CLS" and config.modules_to_save == ["score"]
    assert reward_peft_config(ModelArguments(model_name_or_path="m")) is None
