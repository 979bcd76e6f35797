# spafit_exp: every target runs from a fresh clone. `make install run` = install + the main job.
VENV  ?= .venv
PY    ?= $(VENV)/bin/python
TORCH ?= torch==2.13.0
export WANDB_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-all tables bench lint clean

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
	$(PY) -m spafit_exp.tables

bench:
	$(PY) scripts/bench_peer.py --repeats 3 --padded --bf16 --subset
	$(PY) scripts/bench_methods.py
	$(PY) scripts/bench_sampling.py --sizes 22.7e6,125e6

lint:
	$(PY) -m ruff check spafit_exp scripts tests

clean:
	rm -rf outputs .pytest_cache build *.egg-info
