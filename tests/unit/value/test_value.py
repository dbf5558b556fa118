"""`alignment.value`: rows, the Q tensor layout (padding, truncation), the joint loss, metrics and saving."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from alignment.chat.templates import render_prompt
from alignment.chat.turns import IGNORE_INDEX
from alignment.data.mixture import load_mixture
from alignment.data.rows import InvalidRowError
from alignment.recipes.arguments import DataArguments, ModelArguments
from alignment.recipes.parser import RecipeError, RecipeParser
from alignment.value.config import ValueConfig
from alignment.value.formats import Q_IGNORE
from alignment.value.loss import auroc, joint_loss, value_metrics
from alignment.value.modeling import (
    VALUE_HEAD_NAME,
    ValueHead,
    ValueModel,
    build_value_model,
    load_value_model,
    running_min_log_likelihood,
    save_value_model,
)
from alignment.value.rows import ValueCollator, to_trace, tokenize_trace, tokenize_traces, value_row_problem
from alignment.value.scoring import score_traces
from alignment.value.trainer import ValueTrainer

REPO = Path(__file__).resolve().parents[3]

PROMPT = "Add 3, 4, 5 and 2."
STEPS = ["3+4=7", " 7+5=12 ", "12+2=14"]  # the second is stripped before tokenizing
Q = [1.0, -1.0, 0.5]
REST_ROW = {"prompt": PROMPT, "response": [{"step": s, "Q": q} for s, q in zip(STEPS, Q, strict=True)]}


def config(tmp_path, **kwargs) -> ValueConfig:
    return ValueConfig(output_dir=str(tmp_path), report_to="none", **kwargs)


def q_positions(q) -> list[int]:
    return [i for i, value in enumerate(q) if value != Q_IGNORE]


# Rows


def test_rest_row_keeps_q_and_is_positive_only_when_the_final_q_is_one():
    trace = to_trace(REST_ROW)
    assert trace.steps == ["3+4=7", "7+5=12", "12+2=14"] and trace.q == Q
    assert not trace.positive  # final Q 0.5
    final_one = {**REST_ROW, "response": [*REST_ROW["response"][:2], {"step": "12+2=14", "Q": 1}]}
    assert to_trace(final_one).positive and to_trace(final_one).q == [1.0, -1.0, 1.0]


def test_stepwise_row_maps_labels_to_plus_minus_one_and_needs_every_label_true():
    row = {"prompt": PROMPT, "completions": STEPS, "labels": [True, False, True]}
    trace = to_trace(row)
    assert trace.q == [1.0, -1.0, 1.0]
    assert not trace.positive  # a wrong middle step: not a demonstration, even with a true last label
    assert to_trace({**row, "labels": [True, True, True]}).positive


def test_message_list_prompt_is_kept():
    messages = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": PROMPT}]
    assert to_trace({**REST_ROW, "prompt": messages}).prompt == messages


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt": PROMPT, "response": [{"step": "3+4=7", "Q": 1.5}]},
            "response[0]: Q 1.5 is not a number in [-1, 1]",
        ),
        ({"prompt": PROMPT, "response": [{"step": "  ", "Q": 1}]}, "response[0]: the step text is empty"),
        ({"prompt": PROMPT, "response": []}, "non-empty list"),
        ({"prompt": PROMPT, "completions": ["a", "b"], "labels": [True]}, "2 completions but 1 labels"),
        ({"prompt": PROMPT, "completions": ["a"], "labels": [1]}, "labels must be true/false"),
        (
            {"prompt": PROMPT, "completions": ["a"], "labels": [True], "response": []},
            "this row has `response` (ReST-MCTS*",
        ),
        ({"prompt": [{"role": "assistant", "content": "hi"}], "response": [{"step": "a", "Q": 1}]}, "prompt:"),
    ],
)
def test_invalid_rows_are_named(row, message):
    assert message in value_row_problem(row)


def test_load_mixture_names_the_bad_row(tmp_path):
    rows = [REST_ROW] * 3 + [{"prompt": PROMPT, "response": [{"step": "3+4=7", "Q": 2}]}]
    path = tmp_path / "value.jsonl"
    Dataset.from_list(rows).to_json(str(path))
    with pytest.raises(InvalidRowError, match="row 3: response\\[0\\]: Q 2.0 is not a number"):
        load_mixture(
            DataArguments(dataset_mixer={str(path): 1.0}, test_split_size=0.0), validate_row=value_row_problem
        )


# Tensor layout


def expected_prefixes(tokenizer) -> list[str]:
    """The text up to and including each step's newline: where the value must be read."""
    prompt = render_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    return [prompt + "".join(s.strip() + "\n" for s in STEPS[: k + 1]) for k in range(len(STEPS))]


def test_q_sits_exactly_on_the_last_token_of_each_step(tiny_tokenizer):
    encoded = tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)
    ids, q, labels = encoded["input_ids"], encoded["Q"], encoded["labels"]
    positions = q_positions(q)
    assert [q[i] for i in positions] == Q
    decode = tiny_tokenizer.decode
    assert [decode(ids[: i + 1]) for i in positions] == expected_prefixes(tiny_tokenizer)
    assert [tiny_tokenizer.convert_ids_to_tokens(ids[i]) for i in positions] == ["Ċ", "Ċ", "Ċ"]  # byte-level "\n"
    assert positions[-1] == len(ids) - 1
    assert all(label == IGNORE_INDEX for label in labels)  # final Q 0.5: a negative trace trains no token
    assert encoded["steps"] == encoded["steps_kept"] == 3 and not encoded["truncated"]


def test_positive_trace_trains_the_steps_and_never_the_prompt(tiny_tokenizer):
    row = {"prompt": PROMPT, "completions": STEPS, "labels": [True, True, True]}
    encoded = tokenize_trace(tiny_tokenizer, to_trace(row), max_length=None)
    ids, labels = encoded["input_ids"], encoded["labels"]
    start = len(
        tiny_tokenizer(expected_prefixes(tiny_tokenizer)[0][: -len("3+4=7\n")], add_special_tokens=False)["input_ids"]
    )
    assert labels[:start] == [IGNORE_INDEX] * start
    assert labels[start:] == ids[start:]
    assert tiny_tokenizer.decode(ids[start:]) == "3+4=7\n7+5=12\n12+2=14\n"
    with_prompt = tokenize_trace(tiny_tokenizer, to_trace(row), max_length=None, train_on_prompt=True)
    assert with_prompt["labels"] == ids
    # The response mask marks the steps' tokens, in positive and negative traces alike.
    assert encoded["response_mask"] == [0] * start + [1] * (len(ids) - start)
    negative = tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)
    assert negative["response_mask"] == encoded["response_mask"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_pads_q_exactly_like_labels(tiny_tokenizer, side):
    long = {"prompt": "Add 13, 4, 5, 2, 8 and 9.", "completions": ["13+4=17", "17+5=22", "22+2=24", "24+8=32"]}
    long["labels"] = [True, True, True, True]
    features = [tokenize_trace(tiny_tokenizer, to_trace(r), max_length=None) for r in (REST_ROW, long)]
    batch = ValueCollator(tiny_tokenizer.pad_token_id, side)(features)
    width = batch["input_ids"].shape[1]
    short = features[0]
    pad = width - len(short["input_ids"])
    assert pad > 0
    offset = pad if side == "left" else 0
    assert batch["Q"].dtype == torch.float32
    assert q_positions(batch["Q"][0].tolist()) == [offset + i for i in q_positions(short["Q"])]
    assert batch["Q"][0, q_positions(batch["Q"][0].tolist())].tolist() == Q
    real = slice(offset, offset + len(short["input_ids"]))
    assert batch["input_ids"][0, real].tolist() == short["input_ids"]
    assert batch["labels"][0, real].tolist() == short["labels"]
    assert batch["attention_mask"][0].tolist() == [1 if real.start <= i < real.stop else 0 for i in range(width)]
    assert batch["response_mask"][0, real].tolist() == short["response_mask"]
    padded = [i for i in range(width) if not real.start <= i < real.stop]
    assert all(batch["Q"][0, i] == Q_IGNORE and batch["labels"][0, i] == IGNORE_INDEX for i in padded)
    assert all(batch["input_ids"][0, i] == tiny_tokenizer.pad_token_id for i in padded)
    assert batch["Q"][1].ne(Q_IGNORE).sum() == 4  # the longer row is unpadded


def test_truncation_drops_cut_steps_and_counts_them(tiny_tokenizer):
    full = tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)
    ends = q_positions(full["Q"])
    # Cut just after step 2's newline: step 2 keeps its target; cut one token earlier: it loses it.
    kept = tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=ends[1] + 1)
    assert q_positions(kept["Q"]) == ends[:2] and kept["steps_kept"] == 2 and kept["truncated"]
    lost = tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=ends[1])
    assert q_positions(lost["Q"]) == ends[:1] and lost["steps_kept"] == 1
    assert len(lost["input_ids"]) == len(lost["labels"]) == len(lost["Q"]) == len(lost["response_mask"]) == ends[1]

    # A prompt longer than max_length leaves nothing to learn: the row is dropped and counted.
    rows = Dataset.from_list([REST_ROW, {**REST_ROW, "prompt": "Add " + ", ".join(["3"] * 40) + " and 4."}])
    dataset, report = tokenize_traces(rows, tiny_tokenizer, max_length=ends[1])
    assert (report.examples, report.truncated, report.steps, report.steps_lost, report.dropped) == (2, 2, 6, 5, 1)
    assert dataset.column_names == ["input_ids", "labels", "Q", "response_mask"] and len(dataset) == 1
    assert report.metrics("train")["train_steps_lost_to_truncation"] == 5


# Loss


def test_joint_loss_matches_a_hand_computation():
    # Batch of 1, 4 positions. Labels train positions 2 and 3, whose log-probs the model gives (0 elsewhere).
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 2]])
    label_log_probs = torch.tensor([[0.0, 0.0, -0.4, -1.3]])
    values = torch.tensor([[0.9, 0.5, -0.2, 0.3]])
    q = torch.tensor([[Q_IGNORE, 1.0, -1.0, Q_IGNORE]])
    sft = (0.4 + 1.3) / 2
    value = ((0.5 - 1.0) ** 2 + (-0.2 + 1.0) ** 2) / (2 + 1e-3)
    loss = joint_loss(label_log_probs, labels, values, q, value_loss_weight=0.7)
    assert loss.sft.item() == pytest.approx(sft, rel=1e-6)
    assert loss.value.item() == pytest.approx(value, rel=1e-6)
    assert loss.total.item() == pytest.approx(sft + 0.7 * value, rel=1e-6)


def test_no_label_gives_zero_sft_and_no_q_gives_zero_value_even_with_nan_padding():
    label_log_probs = torch.zeros(2, 5, requires_grad=True)  # the model's, with no label set
    values = torch.tensor([[float("nan"), 0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    q = torch.full((2, 5), Q_IGNORE)
    q[0, 2] = -1.0
    loss = joint_loss(label_log_probs, torch.full((2, 5), IGNORE_INDEX), values, q, value_loss_weight=1.0)
    assert loss.sft.item() == 0.0
    assert loss.value.item() == pytest.approx(1.2**2 / (1 + 1e-3))
    loss.total.backward()
    assert torch.isfinite(values.grad).all() and torch.isfinite(label_log_probs.grad).all()
    empty = joint_loss(label_log_probs, torch.full((2, 5), IGNORE_INDEX), values, torch.full((2, 5), Q_IGNORE), 1.0)
    assert empty.value.item() == 0.0 and empty.total.item() == 0.0


def test_a_batch_of_only_negative_traces_trains_without_nan(tiny_world, tiny_tokenizer, tmp_path):
    rows = [{"prompt": PROMPT, "completions": STEPS, "labels": [True, False, False]}] * 8
    dataset, _ = tokenize_traces(Dataset.from_list(rows), tiny_tokenizer, max_length=None)
    assert set(dataset[0]["labels"]) == {IGNORE_INDEX}  # not the rows' boolean `labels` column
    body = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    model = ValueModel(body, ValueHead(128))
    head_before = model.value_head.weight.detach().clone()
    args = config(tmp_path, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1)
    trainer = ValueTrainer(model=model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "sft_loss" in entry]
    assert len(logged) == 3
    assert all(entry["sft_loss"] == 0.0 and math.isfinite(entry["loss"]) for entry in logged)
    assert all(math.isfinite(entry["value_loss"]) and entry["value_loss"] > 0 for entry in logged)
    assert not torch.equal(model.value_head.weight, head_before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# Model pieces


def test_value_head_stays_fp32_under_a_bf16_body_and_autocast():
    head = ValueHead(8)
    hidden = torch.randn(2, 3, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = head(hidden)
    assert head.weight.dtype == torch.float32 and values.dtype == torch.float32
    expected = torch.tanh(hidden.float() @ head.weight.T + head.bias).squeeze(-1)
    assert torch.allclose(values, expected)
    assert (values.abs() < 1).all()


def test_running_min_log_likelihood_matches_a_hand_computation():
    # log p(x_t | x_<t) per position; tokens 0-1 are the prompt and count 0, whatever their log-probs.
    token_log_probs = torch.tensor([[0.0, -5.0, -0.7, -2.1, -0.4]])
    response = torch.tensor([[0, 0, 1, 1, 1]])
    expected = [0.0, 0.0, -0.7, -2.1, -2.1]
    got = running_min_log_likelihood(token_log_probs, response)[0].tolist()
    assert got == pytest.approx(expected)


def test_a_head_that_reads_the_likelihood_adds_it_and_saves_and_loads_it(tiny_world, tiny_tokenizer, tmp_path):
    body = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    model = ValueModel(body, ValueHead(128, reads_likelihood=True))
    with torch.no_grad():
        model.value_head.likelihood_weight.fill_(0.5)
    ids = torch.tensor([tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)["input_ids"]])
    response = torch.tensor([tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)["response_mask"]])
    out = model(ids, response_mask=response)
    body_out = body(ids, output_hidden_states=True)
    plain = body_out.hidden_states[-1] @ model.value_head.weight.T + model.value_head.bias
    token_log_probs = torch.log_softmax(body_out.logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    likelihood = torch.cummin(torch.where(response[:, 1:].bool(), token_log_probs, 0.0), -1).values
    likelihood = torch.nn.functional.pad(likelihood, (1, 0))
    assert torch.allclose(out["values"], torch.tanh(plain.squeeze(-1) + 0.5 * likelihood), atol=1e-5)
    with pytest.raises(ValueError, match="pass response_mask"):
        model(ids)

    save_value_model(model, tmp_path / "saved")
    tiny_tokenizer.save_pretrained(tmp_path / "saved")
    assert set(load_file(tmp_path / "saved" / VALUE_HEAD_NAME)) == {"weight", "bias", "likelihood_weight"}
    loaded = load_value_model(tmp_path / "saved")
    assert loaded.value_head.reads_likelihood and loaded.value_head.likelihood_weight.item() == 0.5
    # Scoring passes the response mask: the values read are those of the forward pass at each step's end.
    ends = q_positions(tokenize_trace(tiny_tokenizer, to_trace(REST_ROW), max_length=None)["Q"])
    scored = score_traces(loaded, tiny_tokenizer, [(PROMPT, STEPS)])[0]
    assert scored == pytest.approx(out["values"][0, ends].tolist(), abs=1e-5)

    # Continuing a head with a recipe that says otherwise is refused, naming the key and the fix.
    args = config(tmp_path / "run", value_reads_likelihood=False)
    with pytest.raises(RecipeError, match="`value_reads_likelihood: false`.*set it to true"):
        build_value_model(ModelArguments(model_name_or_path=str(tmp_path / "saved")), args, tiny_tokenizer)


def test_the_trainer_passes_the_response_mask_and_trains_the_likelihood_weight(tiny_world, tiny_tokenizer, tmp_path):
    dataset, _ = tokenize_traces(Dataset.from_list([REST_ROW] * 8), tiny_tokenizer, max_length=None)
    body = AutoModelForCausalLM.from_pretrained(tiny_world / "base")
    model = ValueModel(body, ValueHead(128, reads_likelihood=True))
    args = config(tmp_path, max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1)
    ValueTrainer(model=model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer).train()
    assert model.value_head.likelihood_weight.item() != 0.0


def test_save_writes_the_gathered_state_dict_not_the_live_parameters(tiny_world, tiny_tokenizer, tmp_path):
    """Under ZeRO-3 the live parameters are empty shards and the Trainer hands `_save` the consolidated state dict;
    the value head (and body) written must be that dict's, cast to fp32."""
    model = ValueModel(AutoModelForCausalLM.from_pretrained(tiny_world / "base"), ValueHead(128))
    trainer = ValueTrainer(model=model, args=config(tmp_path / "run"), processing_class=tiny_tokenizer)
    gathered = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    gathered["value_head.weight"] = torch.full((1, 128), 0.25, dtype=torch.bfloat16)
    gathered["value_head.bias"] = torch.tensor([-0.5], dtype=torch.bfloat16)
    gathered["body.model.norm.weight"] = torch.full((128,), 2.0)
    trainer._save(str(tmp_path / "out"), state_dict=gathered)
    head = load_file(tmp_path / "out" / VALUE_HEAD_NAME)
    assert head["weight"].dtype == torch.float32 and torch.equal(head["weight"], torch.full((1, 128), 0.25))
    assert torch.equal(head["bias"], torch.tensor([-0.5]))
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["model.norm.weight"], torch.full((128,), 2.0))
    assert (tmp_path / "out" / "tokenizer.json").is_file()


# Metrics and config


def test_auroc_and_metrics_match_hand_counts():
    # Positives 0.9, 0.4, 0.4; negatives 0.4, -0.3. Pairs (pos > neg): 0.9 beats both (2), each positive 0.4 ties
    # the negative 0.4 (0.5) and beats -0.3 (1): 2 + 1.5 + 1.5 = 5 of 6.
    assert auroc(np.array([0.9, 0.4, 0.4, 0.4, -0.3]), np.array([1, 1, 1, 0, 0], dtype=bool)) == pytest.approx(5 / 6)
    values = np.array([[0.9, 0.0, 0.4], [-0.3, 0.4, 5.0]])
    q = np.array([[1.0, 0.0, 1.0], [-1.0, -1.0, Q_IGNORE]])
    metrics = value_metrics(values, q)
    assert metrics["value_steps"] == 5
    assert metrics["value_mse"] == pytest.approx((0.01 + 0 + 0.36 + 0.49 + 1.96) / 5)
    assert metrics["sign_accuracy"] == pytest.approx(3 / 4)  # Q = 0 has no sign and is left out
    # Signed steps: positives 0.9, 0.4; negatives -0.3, 0.4: 0.9 beats both, 0.4 beats -0.3 and ties 0.4: 3.5 of 4.
    assert metrics["auroc"] == pytest.approx(3.5 / 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value_loss_weight": 0.0}, "`value_loss_weight: 0.0`"),
        ({"remove_unused_columns": True}, "would drop the `Q` targets"),
        ({"max_length": 1}, "`max_length: 1`"),
    ],
)
def test_config_refuses_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "recipe", sorted((REPO / "recipes").glob("*/value/*.yaml")), ids=lambda p: str(p.parent.parent.name)
)
def test_value_recipes_parse(recipe):
    model_args, data_args, training_args = RecipeParser((ModelArguments, DataArguments, ValueConfig)).parse(
        [str(recipe)]
    )
    assert training_args.value_loss_weight > 0 and data_args.dataset_mixer
    assert model_args.model_name_or_path
