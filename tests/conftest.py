"""Shared offline fixtures: the tiny tokenizer, model and chats, built in-process (no hub)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python *args` from the repository root, offline, as a user would run a script or module; never raises."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """`base/` (tokenizer + random tiny Llama) and `sft/{train,test}.jsonl`, as `make demo` builds them."""
    from alignment.synthetic import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_world / "base")
