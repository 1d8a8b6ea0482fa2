# regner developer targets. `make install` creates .venv; everything else uses it.
PY ?= .venv/bin/python
PROFILE ?= cpu

.PHONY: install train test test-all lint benchmark benchmark-v2 bench-speed check-defaults pretrain clean

install:
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	.venv/bin/pip install torch==2.13.0 -e '.[test]'

train:
	.venv/bin/regner train

test:
	$(PY) -m pytest

test-all:  ## include the slow end-to-end tests
	$(PY) -m pytest -m ''

lint:
	.venv/bin/ruff check regner tests scripts

benchmark:  ## regner compare (docs/benchmarks/PROTOCOL.md): race strengths, compare every regularizer with none in sequential looks; rerun to continue (PROFILE=cpu|gpu|demo, ENCODER=dir)
	.venv/bin/regner compare compare=$(PROFILE) $(if $(ENCODER),encoder_dir=$(ENCODER))

benchmark-v2:  ## the fixed two-stage design of the committed 2026-12-01 benchmark (scripts/matrices/), to reproduce it
	$(PY) scripts/benchmark.py --profile $(PROFILE) $(if $(ENCODER),--encoder $(ENCODER))

pretrain:  ## regner's small Chinese encoder (encoder=zh-mini) into outputs/pretrained/zh-mini; cached (PROFILE=gpu: zh-small)
	.venv/bin/regner pretrain pretrain=$(if $(filter gpu,$(PROFILE)),zh-small-gpu,zh-mini)

check-defaults:  ## every regularizer's defaults on every shared dataset: fails if one collapses
	$(PY) scripts/check_defaults.py

bench-speed:  ## training-step throughput and cost ratio of every regularizer (CPU-sized by default)
	$(PY) scripts/bench_throughput.py --encoder small --batch-sizes 16 --steps 4 --warmup 1

clean:
	rm -rf outputs/2* outputs/multirun .pytest_cache .ruff_cache
