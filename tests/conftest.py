"""Shared offline fixtures: the tiny tokenizer, model and chats, built in-process (no hub)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.stages import STAGES

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
        *["--model_name_or_path", str(world / "base"), "--dataset_mixer", json.dumps({str(world / stage): 1.0})],
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
    for stage in STAGES:
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
