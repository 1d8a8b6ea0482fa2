# regner developer targets. `make install` creates .venv; everything else uses it.
PY ?= .venv/bin/python
PROFILE ?= cpu

.PHONY: install train test test-all lint benchmark benchmark-v2 bench-speed check-defaults pretrain gpu-wheels device-check clean

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

benchmark:  ## benchmark v3: regner compare (docs/benchmarks/PROTOCOL.md, "Benchmark v3"): race strengths, compare every regularizer with none in sequential looks within 12 h; rerun to continue (PROFILE=cpu|cpu-300|semi-cpu|gpu|demo, ENCODER=dir)
	.venv/bin/regner compare compare=$(PROFILE) $(if $(ENCODER),encoder_dir=$(ENCODER))

benchmark-v2:  ## the fixed two-stage design of the committed 2026-12-01 benchmark (scripts/matrices/), to reproduce it
	$(PY) scripts/benchmark.py --profile $(PROFILE) $(if $(ENCODER),--encoder $(ENCODER))

pretrain:  ## regner's small Chinese encoder (encoder=zh-mini) into outputs/pretrained/zh-mini; cached (PROFILE=gpu: zh-small)
	.venv/bin/regner pretrain pretrain=$(if $(filter gpu,$(PROFILE)),zh-small-gpu,zh-mini)

check-defaults:  ## every regularizer's defaults on every shared dataset: fails if one collapses (CHOSEN=summary.json: also the raced strengths)
	$(PY) scripts/check_defaults.py $(if $(CHOSEN),--chosen $(CHOSEN))

bench-speed:  ## training-step throughput and cost ratio of every regularizer (CPU-sized by default)
	$(PY) scripts/bench_throughput.py --encoder small --batch-sizes 16 --steps 4 --warmup 1

# The wheels of scripts/gpu-wheels.txt, for a GPU machine with its own torch that cannot reach PyPI: CPython 3.12
# manylinux wheels, and pure-Python wheels built here for the list's `sdist` packages. .whl/ is git-ignored.
WHEEL_PLATFORMS = $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(p))
gpu-wheels:  ## download what the GPU machine lacks (scripts/gpu-wheels.txt) into .whl/ for scripts/device_check.sh
	mkdir -p .whl
	grep -v '^#' scripts/gpu-wheels.txt | grep -v sdist | sed 's/ *#.*//' | xargs $(PY) -m pip download -q --no-deps \
		--only-binary=:all: --python-version 3.12 --implementation cp $(WHEEL_PLATFORMS) -d .whl
	grep -v '^#' scripts/gpu-wheels.txt | grep sdist | sed 's/ *#.*//' | xargs $(PY) -m pip wheel -q --no-deps -w .whl

device-check:  ## scripts/device_check.sh outputs/device-check (on a GPU machine; CPU=1: small shapes on the CPU)
	PYTHON=$(if $(CPU),$(PY),python3) scripts/device_check.sh outputs/device-check $(if $(CPU),--cpu)

clean:
	rm -rf outputs/2* outputs/multirun .pytest_cache .ruff_cache
