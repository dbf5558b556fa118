"""Shared offline fixtures: the tiny tokenizer, model and chats, built in-process (no hub)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python *args` from the repository root, offline, as a user would run a script or module; never raises."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_stage(
    stage: str,
    world: Path,
    output_dir: Path,
    *args: str,
    launcher: tuple[str, ...] = (sys.executable,),
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, Path]:
    """`scripts/run_<stage>.py` on its tiny recipe and the tiny world's data, through `tests/_launch_probe.py` (which
    records what each rank trained on into the returned folder, `output_dir` + `.probe`) and `launcher` (this Python,
    or an `accelerate launch` command)."""
    probe_dir = output_dir.with_suffix(".probe")
    probe_dir.mkdir(parents=True, exist_ok=True)
    command = [
        *launcher,
        str(REPO / "tests" / "_launch_probe.py"),
        str(REPO / "scripts" / f"run_{stage}.py"),
        str(REPO / "recipes" / "tiny" / stage / "config.yaml"),
        *["--model_name_or_path", str(world / "base"), "--dataset_mixer", json.dumps({str(world / stage): 1.0})],
        *["--output_dir", str(output_dir), "--disable_tqdm", "true", *args],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PROBE_DIR": str(probe_dir)}
    env.update(extra_env or {})
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    return result, probe_dir


def probe_records(probe_dir: Path) -> dict[int, dict[str, dict]]:
    """What `tests/_launch_probe.py` recorded: step -> rank file name ("rank0", ...) -> record."""
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
    from alignment.synthetic import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_world / "base")
