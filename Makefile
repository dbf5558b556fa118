# Two commands do everything from a fresh clone: `make demo` and `make test`. Each installs what it needs first.
.PHONY: install demo ablation test test-quick quality style clean

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url <a CPU wheel index>" on a CPU machine whose pip
# would otherwise resolve torch to the CUDA build.
TORCH_PIP_ARGS ?=
TINY := data/tiny
# The demo's one seed: the tiny world's data and initial weights, and every stage's training (`make demo SEED=1`).
SEED ?= 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

install: $(INSTALLED)

# torch first and pinned: a machine without CUDA takes the CPU wheel (`torch==2.13.0`), after which the package's
# `torch>=2.11,<2.14` is already satisfied and pip pulls no CUDA packages. A machine with CUDA takes the CUDA build.
$(INSTALLED): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# One world per seed: a new SEED rebuilds it (and the finished stages of another seed then refuse to be reused).
$(TINY)/seed-$(SEED): | $(INSTALLED)
	rm -f $(TINY)/seed-*
	$(PY) -m tiny_world build --output_dir $(TINY) --seed $(SEED)
	touch $@

demo: install $(TINY)/seed-$(SEED)
	@echo "make demo: seed $(SEED) (the tiny world's data and weights, and every stage). Another seed: make clean demo SEED=<n>"
	$(PY) scripts/run_pipeline.py recipes/tiny/pipeline.yaml --seed $(SEED)
	$(PY) -m tiny_world evaluate outputs/tiny/sft --data $(TINY)/sft/test.jsonl --baseline $(TINY)/base
	$(PY) scripts/run_eval.py --baseline outputs/tiny/sft --candidate outputs/tiny/dpo \
		--prompts $(TINY)/dpo/test.jsonl --judge outputs/tiny/rm --rule tiny_world.arithmetic:answer_is_correct \
		--pairs $(TINY)/rm/test.jsonl --value_model outputs/tiny/value --steps $(TINY)/value/test.jsonl \
		--extra_rules tiny_world.arithmetic:sum_is_correct --output outputs/tiny/eval.json
	@echo "make demo: seed $(SEED)"

# Zephyr's Table 3 in miniature, 3 seeds (benchmarks/evidence.py; its tables go to benchmarks/RESULTS.md).
ablation: install
	$(PY) benchmarks/evidence.py --parts ablation

# Parallel test workers, one torch thread each (tests/conftest.py); each test file stays on one worker, so that its
# module fixtures are built once (the session ones shared across workers are built once too: `sft_model`).
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

# Skips the end-to-end training runs and the multi-process launches (about a minute).
test-quick: install
	$(PY) -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m "not slow and not multiprocess"

quality: install
	$(VENV)/bin/ruff check src scripts tests benchmarks
	$(VENV)/bin/ruff format --check src scripts tests benchmarks

style: install
	$(VENV)/bin/ruff check --fix src scripts tests benchmarks
	$(VENV)/bin/ruff format src scripts tests benchmarks

clean:
	rm -rf outputs $(TINY)
