"""Every vendor template TRL ships and every template we ship, on real vocabularies
(`tests/support/template_matrix.py`): zero wrong masks, and the matrix in
`src/alignment/chat/chat_templates/README.md` is the one measured here."""

import pytest

from tests.support.template_matrix import BEGIN, END, README, markdown, run_matrix


@pytest.fixture(scope="module")
def matrix(real_tokenizer_cache):
    return {result.template: result for result in run_matrix(real_tokenizer_cache)}  # raises on any wrong mask


def test_readme_matrix_is_the_measured_one(matrix):
    text = README.read_text(encoding="utf-8")
    documented = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert documented == markdown(list(matrix.values())), (
        "run `python -m tests.support.template_matrix` and commit the README"
    )


@pytest.mark.parametrize("name", ["zephyr", "llama2", "vicuna", "chatml", "qwen2_5", "qwen3_instruct_2507", "llama3"])
def test_prefix_stable_templates_are_exact_on_every_chat(matrix, name):
    assert set(matrix[name].verdicts.values()) == {"exact"}, matrix[name].verdicts


@pytest.mark.parametrize("name", ["qwen3", "qwen3_6", "qwen3_8", "gptoss"])
def test_history_rewriting_templates_expand_every_multi_turn_chat_and_refuse_none(matrix, name):
    verdicts = matrix[name].verdicts
    assert not any(v.startswith("refused") for v in verdicts.values()), verdicts
    assert verdicts["2 turns, CJK + emoji"] == verdicts["4 turns"] == "expanded"


def test_refusals_name_the_check_they_failed(matrix):
    """What is still refused, and why: each is a chat with no exact answer under that template."""
    refusals = {
        (name, verdict)
        for name, result in matrix.items()
        for verdict in result.verdicts.values()
        if "refused" in verdict
    }
    kinds = {verdict for _, verdict in refusals}
    assert kinds <= {
        "refused: generation prompt prefilled",  # <think> opened for a reply without reasoning (DeepSeek, Nemotron)
        "refused: template cannot render",  # Gemma 1 takes no system role
        "refused: no end-of-turn token",  # GLM-4-MoE closes a turn only with the next message's header
    }
    assert {name for name, _ in refusals} <= {
        "deepseek_r1_distill",
        "deepseekv3",
        "gemma",
        "glm4moe",
        "nemotron_3_5_lightning",
        "nemotron_3_nano",
        "nemotron_3_super",
        "nemotron_3_ultra",
        "qwen3_5_nothink",
    }
    assert matrix["deepseek_r1_distill"].verdicts["reasoning in content, 2 turns"] == "expanded"
