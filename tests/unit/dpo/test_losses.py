"""Every `loss_type` through the handbook's entry point (`PreferenceTrainer.compute_loss`) on fixed log-probs, against
the paper formula evaluated by hand with `math` (no torch) in this file, to 1e-6.

A stand-in model returns hand-chosen per-token log-probs, so TRL's losses and ours see exactly the same numbers:

    pair 0: chosen tokens  [-0.5, -0.3]          sum -0.8  avg -0.4      reference sum -1.1
            rejected       [-1.0, -0.7, -0.4]    sum -2.1  avg -0.7      reference sum -1.8
    pair 1: chosen         [-0.2, -0.9, -0.6]    sum -1.7  avg -0.5667   reference sum -1.6
            rejected       [-1.5]                sum -1.5  avg -1.5      reference sum -1.3
"""

import math
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM

from alignment.dpo.config import DPOConfig
from alignment.dpo.losses import (
    LABEL_SMOOTHING_LOSS_TYPES,
    LOSS_TYPES,
    OUR_LOSS_TYPES,
    PREFERENCE_LOSSES,
    REFERENCE_FREE_LOSS_TYPES,
    LossInputs,
)
from alignment.dpo.trainer import PreferenceTrainer

CHOSEN = [[-0.5, -0.3], [-0.2, -0.9, -0.6]]
REJECTED = [[-1.0, -0.7, -0.4], [-1.5]]
REF_CHOSEN = [-1.1, -1.6]
REF_REJECTED = [-1.8, -1.3]
PROMPT_LENGTH, WIDTH = 2, 5
BETA = 0.5


def sigma(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logsigma(x: float) -> float:
    return math.log(sigma(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# Per pair: the policy's summed and averaged log-probs and the log-ratios to the reference.
PI_W = [sum(t) for t in CHOSEN]
PI_L = [sum(t) for t in REJECTED]
AVG_W = [sum(t) / len(t) for t in CHOSEN]
AVG_L = [sum(t) / len(t) for t in REJECTED]
R_W = [p - r for p, r in zip(PI_W, REF_CHOSEN, strict=True)]
R_L = [p - r for p, r in zip(PI_L, REF_REJECTED, strict=True)]
DELTA = [w - lo for w, lo in zip(R_W, R_L, strict=True)]
SFT = -sum(sum(t) for t in CHOSEN) / sum(len(t) for t in CHOSEN)  # token-mean NLL of the chosen replies


def exo(d: float, eps: float) -> float:
    qw, ql = sigma(BETA * d), sigma(-BETA * d)
    return qw * (math.log(qw) - math.log(1 - eps)) + ql * (math.log(ql) - math.log(eps))


def aot(ws: list[float], ls: list[float], eps: float) -> float:
    return mean(
        -(1 - eps) * logsigma(BETA * (w - lo)) - eps * logsigma(-BETA * (w - lo))
        for w, lo in zip(sorted(ws), sorted(ls), strict=True)
    )


def discopop(d: float, tau: float) -> float:
    x = BETA * d
    m = sigma(x / tau)
    return -logsigma(x) * (1 - m) + math.exp(-x) * m


def orpo(w: float, lo: float) -> float:
    log_odds = (w - math.log(1 - math.exp(w))) - (lo - math.log(1 - math.exp(lo)))
    return -w + BETA * -logsigma(log_odds)


def kto_pair() -> float:
    z_w, z_l = max(0.0, mean(R_W)), max(0.0, mean(R_L))
    return mean(
        [1 - sigma(BETA * (r - z_l)) for r in R_W] + [1 - sigma(BETA * (z_w - r)) for r in R_L]
    )  # the mean over the 2·pairs desirable and undesirable terms


# loss_type (and extra config) -> the loss computed by hand from the paper's formula.
CASES = {
    "sigmoid": ({}, mean(-logsigma(BETA * d) for d in DELTA)),  # DPO, eq. 7
    "hinge": ({}, mean(max(0.0, 1 - BETA * d) for d in DELTA)),  # SLiC
    # IPO eq. 17, on log-ratios averaged per token (TRL's normalisation, confirmed by the IPO authors)
    "ipo": (
        {},
        mean(((R_W[i] / len(CHOSEN[i]) - R_L[i] / len(REJECTED[i])) - 1 / (2 * BETA)) ** 2 for i in range(2)),
    ),
    "exo_pair": ({"label_smoothing": 1e-3}, mean(exo(d, 1e-3) for d in DELTA)),
    "nca_pair": (
        {},
        mean(
            -logsigma(BETA * w) - 0.5 * logsigma(-BETA * w) - 0.5 * logsigma(-BETA * lo)
            for w, lo in zip(R_W, R_L, strict=True)
        ),
    ),
    "robust": (
        {"label_smoothing": 0.1},
        mean((-(0.9) * logsigma(BETA * d) + 0.1 * logsigma(-BETA * d)) / (1 - 0.2) for d in DELTA),
    ),
    "bco_pair": ({}, mean(-logsigma(BETA * w) - logsigma(-BETA * lo) for w, lo in zip(R_W, R_L, strict=True))),
    "sppo_hard": (
        {},
        mean((w - 0.5 / BETA) ** 2 + (lo + 0.5 / BETA) ** 2 for w, lo in zip(R_W, R_L, strict=True)),
    ),
    "aot": (
        {"label_smoothing": 0.1},
        aot(
            [w - lo for w, lo in zip(PI_W, PI_L, strict=True)],
            [w - lo for w, lo in zip(REF_CHOSEN, REF_REJECTED, strict=True)],
            0.1,
        ),
    ),
    "aot_unpaired": ({}, aot(R_W, R_L, 0.0)),
    "apo_zero": ({}, mean(1 - sigma(BETA * w) + sigma(BETA * lo) for w, lo in zip(R_W, R_L, strict=True))),
    "apo_down": ({}, mean(sigma(BETA * w) + 1 - sigma(BETA * (w - lo)) for w, lo in zip(R_W, R_L, strict=True))),
    "discopop": ({"discopop_tau": 0.05}, mean(discopop(d, 0.05) for d in DELTA)),
    "sigmoid_norm": (
        {},
        mean(-logsigma(BETA * (R_W[i] / len(CHOSEN[i]) - R_L[i] / len(REJECTED[i]))) for i in range(2)),
    ),
    # Ours (alignment.dpo.losses)
    "orpo": ({}, mean(orpo(w, lo) for w, lo in zip(AVG_W, AVG_L, strict=True))),  # ORPO eqs. 6-7, λ = β
    "simpo": (
        {"beta": 2.0, "simpo_gamma": 0.5},
        mean(-logsigma(2.0 * (w - lo) - 0.5) for w, lo in zip(AVG_W, AVG_L, strict=True)),
    ),
    "kto_pair": ({}, kto_pair()),
    "cdpo": (
        {"loss_type": "sigmoid", "label_smoothing": 0.2},
        mean(-0.8 * logsigma(BETA * d) - 0.2 * logsigma(-BETA * d) for d in DELTA),
    ),
    "sigmoid+pref_ftx": (
        {"loss_type": "sigmoid", "pref_ftx": 0.7},
        mean(-logsigma(BETA * d) for d in DELTA) + 0.7 * SFT,
    ),
    "simpo+pref_ftx": (
        {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 0.5, "pref_ftx": 0.3},
        mean(-logsigma(2.0 * (w - lo) - 0.5) for w, lo in zip(AVG_W, AVG_L, strict=True)) + 0.3 * SFT,
    ),
    "ipo+sigmoid (MPO-style weights)": (
        {"loss_type": ["sigmoid", "ipo"], "loss_weights": [0.8, 0.2]},
        0.8 * mean(-logsigma(BETA * d) for d in DELTA)
        + 0.2 * mean(((R_W[i] / len(CHOSEN[i]) - R_L[i] / len(REJECTED[i])) - 1 / (2 * BETA)) ** 2 for i in range(2)),
    ),
}


class FixedLogProbs(torch.nn.Module):
    """Stands in for the policy: returns the hand-chosen per-token log-probs, as TRL's fused LM head would."""

    def forward(self, input_ids, labels, **kwargs):
        log_probs = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1, requires_grad=True).clone()
        with torch.no_grad():
            for row, tokens in enumerate(CHOSEN + REJECTED):
                log_probs[row, PROMPT_LENGTH - 1 : PROMPT_LENGTH - 1 + len(tokens)] = torch.tensor(tokens)
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def batch(reference: bool) -> dict[str, torch.Tensor]:
    completion_mask = torch.zeros(4, WIDTH, dtype=torch.long)
    for row, tokens in enumerate(CHOSEN + REJECTED):
        completion_mask[row, PROMPT_LENGTH : PROMPT_LENGTH + len(tokens)] = 1
    inputs = {
        "input_ids": torch.full((4, WIDTH), 5),
        "attention_mask": torch.ones(4, WIDTH, dtype=torch.long),
        "completion_mask": completion_mask,
    }
    if reference:
        inputs["ref_chosen_logps"] = torch.tensor(REF_CHOSEN)
        inputs["ref_rejected_logps"] = torch.tensor(REF_REJECTED)
    return inputs


@pytest.fixture(scope="module")
def tiny_base(tiny_world):
    return str(tiny_world / "base")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One reference log-prob cache for the module: the first case computes the (unused) precomputation, the rest
    read it, which keeps each case under a second."""
    return tmp_path_factory.mktemp("ref_logps")


def make_trainer(tiny_base, tiny_tokenizer, tmp_path, cache_dir, **config) -> PreferenceTrainer:
    config = {"beta": BETA, **config}
    args = DPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=2,
        ref_logps_cache_dir=str(cache_dir),
        **config,
    )
    if not args.is_reference_free:
        args.precompute_ref_log_probs = True  # the batch carries the reference log-probs; no reference copy
    data = Dataset.from_dict({"prompt_ids": [[1, 2]] * 2, "chosen_ids": [[3, 4]] * 2, "rejected_ids": [[3, 5]] * 2})
    return PreferenceTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_base),
        args=args,
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )


def test_every_loss_type_has_a_case():
    assert set(LOSS_TYPES) <= set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_equals_the_paper_formula(case, tiny_base, tiny_tokenizer, tmp_path, cache_dir):
    config, expected = CASES[case]
    config = {"loss_type": case, **config}
    trainer = make_trainer(tiny_base, tiny_tokenizer, tmp_path, cache_dir, **config)
    loss = trainer.compute_loss(FixedLogProbs(), batch(reference=not trainer.args.is_reference_free))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_orpo_logs_its_two_terms_under_llama_factory_names(tiny_base, tiny_tokenizer, tmp_path, cache_dir):
    trainer = make_trainer(tiny_base, tiny_tokenizer, tmp_path, cache_dir, loss_type="orpo")
    trainer.compute_loss(FixedLogProbs(), batch(reference=False))
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    sft = mean(-w for w in AVG_W)
    odds = mean(orpo(w, lo) + w for w, lo in zip(AVG_W, AVG_L, strict=True)) / BETA
    assert metrics["sft_loss"] == [pytest.approx(sft, abs=1e-6)]
    assert metrics["odds_ratio_loss"] == [pytest.approx(odds, abs=1e-6)]
    assert metrics["rewards/chosen"] == [pytest.approx(BETA * mean(AVG_W), abs=1e-6)]
    assert metrics["rewards/accuracies"] == [1.0]  # both pairs: avg chosen log-prob above avg rejected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"loss_type": "sft"}, "set `pref_ftx: <weight>`"),
        ({"loss_type": "dpo"}, "valid losses are sigmoid"),
        ({"loss_type": ["simpo", "sigmoid"]}, "cannot be combined"),
        ({"loss_type": "orpo", "pref_ftx": 1.0}, "ORPO already adds an SFT term"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "has no effect on"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, "must be in [0, 0.5)"),
        ({"max_length": 64, "max_prompt_length": 64}, "must be below `max_length: 64`"),
        ({"loss_type": "simpo", "precompute_ref_log_probs": True}, "nothing to precompute"),
        ({"loss_type": "kto_pair", "ld_alpha": 0.5}, "only implemented for TRL's losses"),
        ({"pref_ftx": -1.0}, "must be >= 0"),
    ],
)
def test_bad_loss_settings_are_refused_naming_the_field(config, message, tmp_path):
    with pytest.raises(ValueError) as error:
        DPOConfig(output_dir=str(tmp_path), report_to="none", **config)
    assert message in str(error.value)


# The registry (`alignment.dpo.losses.PREFERENCE_LOSSES`): what each loss is, as the handbook documents it.
TRL_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)
# Each loss we compute -> the CASES case it is checked against.
OUR_CASES = {
    "orpo": PREFERENCE_LOSSES["orpo"],
    "simpo": PREFERENCE_LOSSES["simpo"],
    "kto_pair": PREFERENCE_LOSSES["kto_pair"],
    "cdpo": PREFERENCE_LOSSES["sigmoid"].smoothed,
}


def test_the_validation_tables_are_the_registrys():
    assert LOSS_TYPES == (*TRL_LOSSES, "orpo", "simpo", "kto_pair")
    assert OUR_LOSS_TYPES == ("orpo", "simpo", "kto_pair")
    assert REFERENCE_FREE_LOSS_TYPES == ("orpo", "simpo")
    assert set(LABEL_SMOOTHING_LOSS_TYPES) == {"sigmoid", "robust", "exo_pair", "aot", "aot_unpaired"}
    assert all(PREFERENCE_LOSSES[name].compute is None for name in TRL_LOSSES)
    assert [loss.name for loss in PREFERENCE_LOSSES.values() if loss.smoothed is not None] == ["sigmoid"]
    assert PREFERENCE_LOSSES["sigmoid"].smoothed.reads_label_smoothing


def test_the_loss_type_help_is_the_registrys():
    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert f"one of {', '.join(LOSS_TYPES)};" in help_text
    assert "`orpo` and `simpo` use no reference model" in help_text
    assert "`sigmoid` with `label_smoothing > 0` is conservative DPO" in help_text


def test_every_loss_we_compute_has_a_registry_case():
    ours = [
        loss
        for entry in PREFERENCE_LOSSES.values()
        for loss in (entry, entry.smoothed)
        if loss is not None and loss.compute is not None
    ]
    assert sorted(loss.name for loss in ours) == sorted(loss.name for loss in OUR_CASES.values())


@pytest.mark.parametrize("case", list(OUR_CASES))
def test_registry_compute_equals_the_paper_formula(case):
    """Each of our functions on hand-made tensors of the kind its entry names (`inputs`), without the trainer."""
    loss = OUR_CASES[case]
    config, expected = CASES[case]
    args = SimpleNamespace(**{"beta": BETA, "label_smoothing": 0.0, "simpo_gamma": 0.5, **config})
    chosen, rejected = (AVG_W, AVG_L) if loss.inputs is LossInputs.AVG_LOGPS else (R_W, R_L)
    chosen, rejected = torch.tensor(chosen, requires_grad=True), torch.tensor(rejected, requires_grad=True)
    losses, metrics = loss.compute(chosen, rejected, args)
    assert losses.shape == (2,)
    assert losses.mean().item() == pytest.approx(expected, abs=1e-6)
    assert all(not value.requires_grad for value in metrics.values())


def test_orpo_returns_its_two_terms_as_metrics():
    args = SimpleNamespace(beta=BETA)
    _, metrics = PREFERENCE_LOSSES["orpo"].compute(torch.tensor(AVG_W), torch.tensor(AVG_L), args)
    assert metrics["sft_loss"].mean().item() == pytest.approx(mean(-w for w in AVG_W), abs=1e-6)
    odds = mean(orpo(w, lo) + w for w, lo in zip(AVG_W, AVG_L, strict=True)) / BETA
    assert metrics["odds_ratio_loss"].mean().item() == pytest.approx(odds, abs=1e-6)


@pytest.mark.parametrize(
    ("config", "computed_by", "reference_free"),
    [
        *(({"loss_type": name}, "trl", False) for name in TRL_LOSSES if name != "exo_pair"),
        ({"loss_type": "exo_pair", "label_smoothing": 1e-3}, "trl", False),
        ({"loss_type": "sigmoid", "label_smoothing": 0.2}, "conservative DPO", False),
        ({"loss_type": ["sigmoid", "ipo"]}, "trl", False),
        ({"loss_type": "orpo"}, "orpo", True),
        ({"loss_type": "simpo"}, "simpo", True),
        ({"loss_type": "kto_pair"}, "kto_pair", False),
    ],
)
def test_config_routes_each_loss_as_the_registry_says(config, computed_by, reference_free, tmp_path):
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", **config)
    assert (args.own_loss.name if args.computes_own_loss else "trl") == computed_by
    assert args.is_reference_free == reference_free


@pytest.mark.parametrize("case", ["sigmoid", "cdpo", "ipo+sigmoid (MPO-style weights)", "orpo", "kto_pair"])
def test_trainer_hands_trl_only_trls_losses(case, tiny_base, tiny_tokenizer, tmp_path, cache_dir):
    config, _ = CASES[case]
    trainer = make_trainer(tiny_base, tiny_tokenizer, tmp_path, cache_dir, **{"loss_type": case, **config})
    with mock.patch.object(trl.DPOTrainer, "_compute_loss", autospec=True, return_value=torch.tensor(0.0)) as trl_loss:
        trainer.compute_loss(FixedLogProbs(), batch(reference=not trainer.args.is_reference_free))
    assert trl_loss.called == (trainer.args.own_loss is None)
    assert trl_loss.called == (case in ("sigmoid", "ipo+sigmoid (MPO-style weights)"))
