# spafit_exp: every target runs from a fresh clone. `make install run` = install + the main job.
VENV  ?= .venv
PY    ?= $(VENV)/bin/python
TORCH ?= torch==2.13.0
export WANDB_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-all tables sanity repro bench bench-gpu lint clean

install:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[dev]"

run:
	$(PY) -m spafit_exp method=spafit task=rte

test:
	$(PY) -m pytest -m 'not slow'

test-all:
	$(PY) -m pytest

tables:
	$(PY) -m spafit_exp.tables $(ARGS)

# Every method (and method=subset with every selector) learns on SST-2 at its recommended rate (~30 min, 2 cores)
sanity:
	$(PY) -m scripts.sanity

# One paper's main table, its published numbers beside ours and its claims checked (docs/reproductions.md):
#   make repro PAPER=stoc [ARGS="--scale tiny|cpu|paper --plan --report"]
repro:
	$(PY) -m spafit_exp.repro $(PAPER) $(ARGS)

bench:
	$(PY) -m scripts.bench_peer --repeats 3 --padded --bf16 --subset --overhead
	$(PY) -m scripts.bench_flops
	$(PY) -m scripts.bench_methods
	$(PY) -m scripts.bench_sampling --sizes 22.7e6,125e6
	$(PY) -m scripts.bench_memory --task sst2 --method full_ft --rows 32000
	$(PY) -m scripts.bench_stats --rows 256 --paragraphs 256
	$(PY) -m scripts.bench_cli

# One GPU (meant for <= 8 min; not yet run on one): BERT-large step of full FT / LoRA-II / SPAFIT / Stochastic Tuning in fp32 and
# bf16, padded vs unpadded, and the sampler at 125M / 355M vs NumPy -> outputs/bench/gpu.md (docs/benchmarks.md)
bench-gpu:
	$(PY) -m scripts.bench_gpu --device cuda $(ARGS)

lint:
	$(PY) -m ruff check spafit_exp scripts tests

clean:
	rm -rf outputs .pytest_cache build *.egg-info
