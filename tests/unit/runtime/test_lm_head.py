"""The CPU fused head (`alignment.runtime.lm_head`): TRL's fused forward, run compact in `CPU_VOCAB_TILE`-wide tiles,
gives the log-probs, entropy, top-1 flags, loss and every gradient of the full logits computed by hand, projects only
the trained positions, and is mixed into the trained model (the base model under PEFT) and its reference."""

import peft
import pytest
import torch
import trl.trainer.utils as trl_utils
from transformers import Qwen3Config, Qwen3ForCausalLM
from trl.trainer.utils import add_fused_lm_head

from alignment.runtime.lm_head import CPU_VOCAB_TILE, CompactLMHeadMixin, compact_fused_head

OUTPUTS = ("log_probs", "entropy", "is_top1")
VOCAB = CPU_VOCAB_TILE + 904  # two tiles, the second partial


def tiny_model(seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=False,
    )
    return Qwen3ForCausalLM(config).float()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 12 tokens: a prompt (-100) before each reply, and padding (-100) at the end of the second."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (2, 12), generator=generator)
    labels = input_ids.clone()
    labels[0, :5] = -100
    labels[1, :3] = -100
    labels[1, 9:] = -100
    return input_ids, labels


def by_hand(model, input_ids, labels) -> dict[str, torch.Tensor]:
    """Full logits: log p(label), entropy and top-1 at every next-token position, 0 where the label is -100."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    targets = labels[:, 1:]
    trained = targets != -100
    log_p = torch.log_softmax(logits, -1)
    label_log_p = log_p.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * trained
    entropy = -(log_p.exp() * log_p).sum(-1) * trained
    is_top1 = (logits.argmax(-1) == targets) & trained
    return {
        "log_probs": label_log_p,
        "entropy": entropy,
        "is_top1": is_top1,
        "loss": -label_log_p.sum() / trained.sum(),
    }


class SpyKernel:
    """Records how many rows each call of TRL's kernel projects, and in what vocabulary tile width."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, *rest):
        self.calls.append((hidden.shape[0], chunk_size))
        return self.kernel.apply(hidden, weight, bias, targets, temperature, chunk_size, *rest)


def fused_outputs(model, input_ids, labels):
    outputs = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    outputs.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return outputs, gradients


def test_the_cpu_head_projects_only_trained_positions(monkeypatch):
    input_ids, labels = batch()
    expected_model = tiny_model()
    expected = by_hand(expected_model, input_ids, labels)
    expected["loss"].backward()
    expected_gradients = {name: p.grad for name, p in expected_model.named_parameters()}

    spy = SpyKernel(trl_utils._ChunkedLogProbFunction)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", spy)
    trl_model = tiny_model()
    add_fused_lm_head(trl_model, outputs=OUTPUTS)
    ours = tiny_model()
    add_fused_lm_head(ours, outputs=OUTPUTS)
    compact_fused_head(ours)

    trl_outputs, _ = fused_outputs(trl_model, input_ids, labels)
    assert spy.calls == [(2 * 11, 32768)]  # TRL off Triton: every position, prompt and padding included
    spy.calls.clear()
    outputs, gradients = fused_outputs(ours, input_ids, labels)
    trained = int((labels[:, 1:] != -100).sum())
    assert spy.calls == [(trained, CPU_VOCAB_TILE)]
    assert trl_utils._use_triton(torch.device("cpu")) is False  # the patch ends with the call
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 32768

    for name in OUTPUTS:
        for result in (outputs, trl_outputs):
            torch.testing.assert_close(getattr(result, name), expected[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.loss, expected["loss"], rtol=1e-5, atol=1e-6)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_position_dropped_or_doubled_fails_the_comparison():
    input_ids, labels = batch()
    model = tiny_model()
    add_fused_lm_head(model, outputs=OUTPUTS)
    compact_fused_head(model)
    with torch.no_grad():
        log_probs = model(input_ids=input_ids, labels=labels, fused_lm_head=True).log_probs
    dropped, doubled = labels.clone(), labels.clone()
    dropped[0, 7] = -100
    doubled[1, 2] = input_ids[1, 2]
    for changed in (dropped, doubled):
        with torch.no_grad():
            assert not torch.allclose(by_hand(model, input_ids, changed)["log_probs"], log_probs, atol=1e-5)


class FakeTRLTrainer:
    """What TRL's trainers do to the head in `__init__`: patch the base model (under PEFT) and the reference."""

    def __init__(self, model, ref_model=None):
        self.model, self.ref_model = model, ref_model
        add_fused_lm_head(model.get_base_model() if isinstance(model, peft.PeftModel) else model)
        if ref_model is not None:
            add_fused_lm_head(ref_model)


class Trainer(CompactLMHeadMixin, FakeTRLTrainer):
    pass


@pytest.mark.parametrize("lora", [False, True])
def test_the_mixin_wraps_the_trained_model_and_its_reference(lora):
    model = tiny_model()
    if lora:
        model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    trainer = Trainer(model, tiny_model(1))
    base = model.get_base_model() if lora else model
    for wrapped in (base, trainer.ref_model):
        assert wrapped.forward.compact_on_cpu
    input_ids, labels = batch()
    with torch.no_grad():
        fused = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        torch.testing.assert_close(fused.log_probs, by_hand(model, input_ids, labels)["log_probs"])
        assert model(input_ids=input_ids).logits.shape == (2, 12, VOCAB)  # an unfused call is the model's own
