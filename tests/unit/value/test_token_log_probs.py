"""`alignment.value.token_log_probs` and the value model over it: the chunked label log-probs give the loss, the values
(Q predictions), the likelihood feature and every parameter's gradient that the full `[batch, seq, vocab]` logits
gave (the code before issue #38, kept here as `full_logits_reference`), to 1e-5 in fp32, for every chunk size."""

import contextlib

import peft
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, CohereConfig, Gemma2Config, Qwen3Config

from alignment.chat.turns import IGNORE_INDEX
from alignment.value import token_log_probs
from alignment.value.formats import Q_IGNORE
from alignment.value.loss import VALUE_LOSS_EPS, joint_loss
from alignment.value.modeling import ValueHead, ValueModel, log_prob_targets, running_min_log_likelihood
from alignment.value.token_log_probs import next_token_log_probs

VOCAB = 97
TOLERANCE = 1e-5
VALUE_LOSS_WEIGHT = 0.7
SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
SMALL |= {"num_key_value_heads": 1, "head_dim": 8, "vocab_size": VOCAB}


def value_model(config, reads_likelihood: bool = True) -> ValueModel:
    torch.manual_seed(0)
    body = AutoModelForCausalLM.from_config(config)
    head = ValueHead(config.hidden_size, reads_likelihood=reads_likelihood)
    if reads_likelihood:
        with torch.no_grad():
            head.likelihood_weight.fill_(0.3)  # non-zero, so the likelihood's gradient reaches the body
    return ValueModel(body, head).train()


def random_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three rows of 12 (left padding of 0, 3 and 5), a prompt of 3-4 tokens, labels on a random ~60% of the
    response and on one prompt token, and Q on four random response positions."""
    generator = torch.Generator().manual_seed(seed)
    rows, width = 3, 12
    input_ids = torch.randint(0, VOCAB, (rows, width), generator=generator)
    attention_mask = torch.ones(rows, width, dtype=torch.long)
    response_mask = torch.zeros(rows, width, dtype=torch.long)
    for row, (pad, prompt) in enumerate([(0, 3), (3, 4), (5, 3)]):
        attention_mask[row, :pad] = 0
        response_mask[row, pad + prompt :] = 1
    labelled = (response_mask.bool() & (torch.rand(rows, width, generator=generator) < 0.6)) | (
        attention_mask.bool() & (torch.arange(width) == 8)
    )
    labels = torch.where(labelled, input_ids, IGNORE_INDEX)
    q = torch.full((rows, width), Q_IGNORE)
    steps = response_mask.nonzero()[torch.randperm(int(response_mask.sum()), generator=generator)[:4]]
    q[steps[:, 0], steps[:, 1]] = torch.rand(4, generator=generator) * 2 - 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "labels": labels,
        "Q": q,
    }


def full_logits_reference(model: ValueModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The value stage before issue #38: the body's full logits, an fp32 cross-entropy over the shifted labels, and
    the likelihood from a logsumexp over the whole vocabulary at every position."""
    input_ids, attention_mask, labels, q = (batch[k] for k in ("input_ids", "attention_mask", "labels", "Q"))
    response = batch["response_mask"] * attention_mask
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model.body(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()
    token_ll = F.pad(logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1), (1, 0))
    likelihood = torch.cummin(torch.where(response.bool(), token_ll, 0.0), dim=-1).values
    values = model.value_head(out.hidden_states[-1], likelihood if model.value_head.reads_likelihood else None)
    summed = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    sft = summed / (labels[:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
    steps = q != Q_IGNORE
    value = (torch.where(steps, values - q, 0.0) ** 2).sum() / (steps.sum() + VALUE_LOSS_EPS)
    token_nll = torch.where(labels[:, 1:] != IGNORE_INDEX, -token_ll[:, 1:], 0.0)
    return {
        "total": sft + VALUE_LOSS_WEIGHT * value,
        "sft": sft,
        "value": value,
        "values": values,
        "likelihood": likelihood,
        "token_nll": token_nll,
    }


def chunked(model: ValueModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The value stage's own path: `ValueModel` with labels, then `joint_loss` (as `ValueTrainer.compute_loss`)."""
    out = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], labels=batch["labels"])
    loss = joint_loss(out["label_log_probs"], batch["labels"], out["values"], batch["Q"], VALUE_LOSS_WEIGHT)
    return {"total": loss.total, "sft": loss.sft, "value": loss.value, "values": out["values"]}


def gradients(model: ValueModel, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def chunk_sizes(batch: dict[str, torch.Tensor]) -> list[int]:
    """1, a size that divides neither the scored positions nor the label positions, their count, and more."""
    scored = int((log_prob_targets(batch["input_ids"], batch["labels"], batch["response_mask"])[:, 1:] >= 0).sum())
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    odd = next(size for size in range(3, scored) if scored % size and labelled % size)
    return [1, odd, scored, scored + 5]


@pytest.fixture
def chunk_of(monkeypatch):
    """Set the chunk to `tokens` tokens through the byte bound the model reads (`LOGITS_CHUNK_BYTES`)."""

    def set_chunk(tokens: int) -> None:
        monkeypatch.setattr(token_log_probs, "LOGITS_CHUNK_BYTES", 4 * VOCAB * tokens)

    return set_chunk


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("reads_likelihood", [True, False], ids=["likelihood", "head_only"])
def test_chunked_log_probs_give_the_full_logits_loss_values_and_gradients(tied, reads_likelihood, chunk_of):
    """Loss terms, values at every position and every parameter's gradient equal the full-logits computation's to
    1e-5, for chunks of 1 token, of a size that divides neither the scored nor the labelled count, of exactly the
    scored count, and of more.

    Why this catches a dropped or double-counted position: each label position's share of `sft` is its
    `-log p / num_tokens`, asserted below to exceed 1e4 x the tolerance for every position (a random tiny model
    gives log p near -log 97); a position scored twice, skipped at a chunk boundary, or scattered back to another
    position moves `sft` (and the likelihood, the values and the gradients) by at least that much, and the
    comparison fails. `test_the_parity_check_sees_one_position_dropped_or_doubled` builds those wrong references
    by hand and checks that the same comparison rejects them.
    """
    model = value_model(Qwen3Config(**SMALL, tie_word_embeddings=tied), reads_likelihood)
    batch = random_batch()
    reference = full_logits_reference(model, batch)
    expected_grads = gradients(model, reference["total"])
    num_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    shares = reference["token_nll"][batch["labels"][:, 1:] != IGNORE_INDEX] / num_tokens
    assert shares.min() > 1e4 * TOLERANCE
    for tokens in chunk_sizes(batch):
        chunk_of(tokens)
        got = chunked(model, batch)
        for term in ("total", "sft", "value"):
            torch.testing.assert_close(got[term], reference[term].detach(), rtol=0, atol=TOLERANCE, msg=term)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(got["values"][real], reference["values"][real].detach(), rtol=0, atol=TOLERANCE)
        got_grads = gradients(model, got["total"])
        assert got_grads.keys() == expected_grads.keys()
        for name, grad in got_grads.items():
            torch.testing.assert_close(grad, expected_grads[name], rtol=TOLERANCE, atol=TOLERANCE, msg=name)


def test_the_likelihood_feature_equals_the_full_logits_one_for_every_chunk_size():
    model = value_model(Qwen3Config(**SMALL))
    batch = random_batch(seed=1)
    reference = full_logits_reference(model, batch)["likelihood"]
    response = batch["response_mask"] * batch["attention_mask"]
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    hidden = model.body(
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=position_ids,
        output_hidden_states=True,
    ).hidden_states[-1]
    targets = log_prob_targets(batch["input_ids"], None, response)
    for tokens in chunk_sizes(batch):
        log_probs = next_token_log_probs(hidden, model.body.lm_head, targets, chunk_tokens=tokens)
        got = running_min_log_likelihood(log_probs, response)
        torch.testing.assert_close(got, reference, rtol=0, atol=TOLERANCE)


def test_the_parity_check_sees_one_position_dropped_or_doubled():
    """The comparison of the parity test, against hand-built wrong answers: the SFT term with one label position
    left out, or counted twice, for each position in turn. Every one is rejected."""
    model = value_model(Qwen3Config(**SMALL))
    batch = random_batch()
    reference = full_logits_reference(model, batch)
    labelled = batch["labels"][:, 1:] != IGNORE_INDEX
    nll = reference["token_nll"].detach()
    for row, column in labelled.nonzero().tolist():
        for times in (0, 2):
            wrong = nll.clone()
            wrong[row, column] *= times
            with pytest.raises(AssertionError):
                torch.testing.assert_close(
                    wrong.sum() / labelled.sum(), reference["sft"].detach(), rtol=0, atol=TOLERANCE
                )


def test_a_batch_with_nothing_to_score_gives_zero_sft_and_a_zero_head_gradient():
    model = value_model(Qwen3Config(**SMALL), reads_likelihood=False)
    batch = random_batch()
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    got = chunked(model, batch)
    assert got["sft"].item() == 0.0
    grads = gradients(model, got["total"])
    assert torch.count_nonzero(grads["body.lm_head.weight"]) == 0


def test_a_softcapping_body_matches_and_a_body_that_scales_its_logits_otherwise_is_refused(chunk_of):
    gemma = value_model(Gemma2Config(**SMALL, final_logit_softcapping=0.5, tie_word_embeddings=False))
    batch = random_batch()
    reference = full_logits_reference(gemma, batch)
    chunk_of(3)
    torch.testing.assert_close(chunked(gemma, batch)["total"], reference["total"], rtol=0, atol=TOLERANCE)

    cohere = value_model(CohereConfig(**SMALL, logit_scale=0.5))
    with pytest.raises(ValueError, match="not its output embeddings' projection"):
        chunked(cohere, batch)


def test_a_head_with_dropout_is_checked_when_it_does_not_drop_out():
    """A LoRA on the head with dropout: in training the body's head call and the check's draw different masks, so the
    check waits for evaluation, where it still refuses a body that scales its logits."""
    lora = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.5, target_modules=["lm_head"], init_lora_weights=False)
    batch = random_batch()
    for config, refused in ((Qwen3Config, False), (CohereConfig, True)):
        model = value_model(config(**SMALL, tie_word_embeddings=False, **({"logit_scale": 0.5} if refused else {})))
        model.body = peft.get_peft_model(model.body, lora)
        chunked(model, batch)
        model.eval()
        with torch.no_grad(), pytest.raises(ValueError) if refused else contextlib.nullcontext():
            chunked(model, batch)


def test_labels_that_are_not_the_response_tokens_are_refused_with_the_likelihood():
    batch = random_batch()
    labels = batch["labels"].clone()
    labels[0, -1] = (batch["input_ids"][0, -1] + 1) % VOCAB
    with pytest.raises(ValueError, match="must be its own tokens"):
        log_prob_targets(batch["input_ids"], labels, batch["response_mask"])
