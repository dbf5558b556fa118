"""Shared offline fixtures: the tiny tokenizer, model and chats, built in-process (no hub)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file

from alignment.stages import STAGES
from tests.support.greedy import greedy_shares
from tiny_world import arithmetic_rows, operand_pairs, preference_rows, with_style_flaw, write_base

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (`make test`: `pytest -n 2`) take one thread each, and so does every process they start (the
    # scripts inherit this environment): two processes of 2 threads each on 2 cores slow each other down many times.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python *args` from the repository root, offline, as a user would run a script or module; never raises."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# The tiny world's data folder of a stage whose data is another's: GRPO's prompts are the SFT chats' prompt turns.
STAGE_DATA = {"grpo": "sft"}


def stage_command(
    stage: str,
    world: Path,
    output_dir: Path,
    *args: str,
    launcher: tuple[str, ...] = (sys.executable,),
    extra_env: dict[str, str] | None = None,
    recipe: str | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and probe folder of `run_stage`, for a test that starts the process itself."""
    probe_dir = output_dir.with_suffix(".probe")
    probe_dir.mkdir(parents=True, exist_ok=True)
    command = [
        *launcher,
        str(REPO / "tests" / "support" / "launch_probe.py"),
        str(REPO / "scripts" / f"run_{stage}.py"),
        str(REPO / (recipe or f"recipes/tiny/{stage}/config.yaml")),
        *["--model_name_or_path", str(world / "base")],
        *["--dataset_mixer", json.dumps({str(world / STAGE_DATA.get(stage, stage)): 1.0})],
        *["--output_dir", str(output_dir), "--disable_tqdm", "true", *args],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PROBE_DIR": str(probe_dir)}
    env.update(extra_env or {})
    return command, env, probe_dir


def run_stage(
    stage: str, world: Path, output_dir: Path, *args: str, **options
) -> tuple[subprocess.CompletedProcess, Path]:
    """`scripts/run_<stage>.py` on its tiny recipe and the tiny world's data, through `tests/support/launch_probe.py`
    (which records what each rank trained on into the returned folder, `output_dir` + `.probe`) and `launcher` (this
    Python, or an `accelerate launch` command). `recipe` (a path from the repository root) replaces the stage's tiny
    one; `options` are `stage_command`'s."""
    command, env, probe_dir = stage_command(stage, world, output_dir, *args, **options)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    return result, probe_dir


def probe_records(probe_dir: Path) -> dict[int, dict[str, dict]]:
    """What `tests/support/launch_probe.py` recorded: step -> rank file name ("rank0", ...) -> record."""
    records: dict[int, dict[str, dict]] = {}
    for path in sorted(probe_dir.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            records.setdefault(record["step"], {})[path.stem] = record
    return records


def logged_losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "value_head.safetensors")


def saved_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor a stage saved in `output_dir` (model or adapter, and value head), keyed `file:tensor`."""
    return {
        f"{name}:{key}": tensor
        for name in WEIGHT_FILES
        if (output_dir / name).is_file()
        for key, tensor in load_file(output_dir / name).items()
    }


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """`base/` (tokenizer + random tiny Llama) and `sft/{train,test}.jsonl`, as `make demo` builds them."""
    from tiny_world import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_world / "base")


# Real vocabularies (pip-shipped artefacts, `tests/support/real_tokenizers.py`) on tiny random models, for the
# stages' runs.
REAL_WORLD_ROWS = {"train": 16, "test": 8}
# The tiny random body both real-vocabulary models share: the vocabulary's embeddings dominate its size.
TINY_BODY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="session")
def real_tokenizer_cache(tmp_path_factory) -> Path:
    """One folder where each real tokenizer is built once per session (qwen3.6 takes seconds to convert)."""
    return tmp_path_factory.mktemp("real-tokenizers")


def _real_world(root: Path, tokenizer, model, tiny_world: Path) -> Path:
    """`base/` (the model and tokenizer) and the first rows of each of the tiny world's stage datasets."""
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    for stage in sorted({STAGE_DATA.get(stage, stage) for stage in STAGES}):
        (root / stage).mkdir(parents=True)
        for split, rows in REAL_WORLD_ROWS.items():
            lines = (tiny_world / stage / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
            (root / stage / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def mistral_world(tiny_world, real_tokenizer_cache, tmp_path_factory) -> Path:
    """Zephyr's base tokenizer (Mistral-7B-v0.1, legacy SentencePiece) on a tiny random `MistralForCausalLM`.

    `save_pretrained` drops `legacy`; the hub's tokenizer_config.json says `"legacy": true`, so it is written back,
    and the reloaded tokenizer is checked to keep the legacy behaviour (a lone "▁" after a special token).
    """
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from tests.support.real_tokenizers import build

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32000, **TINY_BODY)
    root = _real_world(
        tmp_path_factory.mktemp("mistral"),
        build("mistral-7b-v0.1", real_tokenizer_cache),
        MistralForCausalLM(config),
        tiny_world,
    )
    settings_path = root / "base" / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text())
    settings.update(legacy=True, add_bos_token=True, add_eos_token=False)
    settings_path.write_text(json.dumps(settings, indent=2))
    reloaded = AutoTokenizer.from_pretrained(root / "base")
    after_eos = reloaded.convert_ids_to_tokens(reloaded("</s>\n", add_special_tokens=False)["input_ids"])
    assert after_eos[:2] == ["</s>", "▁"], f"the saved tokenizer lost Mistral's legacy behaviour: {after_eos}"
    assert reloaded("Hi")["input_ids"][0] == reloaded.bos_token_id
    return root


@pytest.fixture(scope="session")
def qwen_world(tiny_world, real_tokenizer_cache, tmp_path_factory) -> Path:
    """Qwen3's real vocabulary (151,669 ids) with its vendor template (TRL's `qwen3.jinja`) on a tiny random
    `Qwen3ForCausalLM`; the tiny world's multi-turn chats, which Qwen3's template renders differently per turn."""
    import trl
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.support.real_tokenizers import build

    torch.manual_seed(0)
    tokenizer = build("qwen3", real_tokenizer_cache)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    config = Qwen3Config(vocab_size=len(tokenizer), head_dim=8, **TINY_BODY)
    return _real_world(tmp_path_factory.mktemp("qwen3"), tokenizer, Qwen3ForCausalLM(config), tiny_world)


# The teacher world: the tiny model SFT'd on a careless teacher's chats (the flaw on 70% of answers), the policy DPO
# and GRPO start from (tests/test_dpo.py, tests/test_grpo.py).
SFT_STEPS = 300
TEACHER_FLAW_SHARE = 0.7


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="session")
def teacher_world(tmp_path_factory):
    """A smaller world than the demo's (`tiny_world.build`), in a folder of its own: `sft_teacher/{train,test}.jsonl`,
    2,000 of the addition chats with 70% of answers flawed, and `base/`, the tiny model over a tokenizer trained on
    them. The thresholds below were measured on this world; the demo's (8,000 chats) orders token ids otherwise,
    which is another initialisation, and after 300 SFT steps from that one 30 DPO steps left the flaw on 73-81% of
    answers."""
    train_pairs, test_pairs = operand_pairs(0)
    root = tmp_path_factory.mktemp("teacher_world")
    train = arithmetic_rows(train_pairs, 2000, 0)
    write_jsonl(root / "sft_teacher" / "train.jsonl", with_style_flaw(train, TEACHER_FLAW_SHARE, 0))
    write_jsonl(
        root / "sft_teacher" / "test.jsonl",
        with_style_flaw(arithmetic_rows(test_pairs, 200, 1), TEACHER_FLAW_SHARE, 1),
    )
    write_base(root / "base", train, seed=0)
    return root


@pytest.fixture(scope="session")
def dpo_data(tmp_path_factory):
    """`dpo/{train,test}.jsonl`: 2,000 training pairs, 200 held-out pairs, chosen clean, rejected flawed."""
    train_pairs, test_pairs = operand_pairs(0)
    root = tmp_path_factory.mktemp("dpo")
    write_jsonl(root / "train.jsonl", preference_rows(train_pairs, 2000, 0, rejection="style_flaw"))
    write_jsonl(root / "test.jsonl", preference_rows(test_pairs, 200, 1, rejection="style_flaw"))
    return root


@pytest.fixture(scope="session")
def sft_model(teacher_world, tmp_path_factory):
    """The model DPO and GRPO start from: the tiny base SFT'd on the teacher's chats through `scripts/run_sft.py`.
    300 steps is where it answers in the chat format, flaw included. Built once for every worker of the session: the
    first builds it in the folder they share, under a lock, the others wait and take it."""
    shared = tmp_path_factory.getbasetemp().parent  # the session's folder; each xdist worker has one below it
    output_dir = shared / "sft_teacher_model"
    with FileLock(str(shared / "sft_teacher_model.lock")):
        if (output_dir / "run_finished.json").is_file():
            return output_dir
        _train_sft_model(teacher_world, output_dir)
    return output_dir


def _train_sft_model(teacher_world, output_dir) -> None:
    """`SFT_STEPS` of the tiny SFT recipe on the teacher's chats, into `output_dir`."""
    result = run(
        "scripts/run_sft.py",
        "recipes/tiny/sft/config.yaml",
        "--model_name_or_path",
        str(teacher_world / "base"),
        "--dataset_mixer",
        json.dumps({str(teacher_world / "sft_teacher"): 1.0}),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(SFT_STEPS),
        "--eval_strategy",
        "no",
        "--eval_on_start",
        "false",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="session")
def sft_greedy_shares(sft_model, dpo_data) -> tuple[float, float]:
    """The control for every learning threshold below: the starting model, before DPO."""
    return greedy_shares(sft_model, dpo_data)
