# `make demo` and `make test` do all set-up on a fresh machine: venv, package, data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint data bench parity clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import jax, flax, optax, orbax.checkpoint, chex, tensorflow_datasets, ml_collections, pytest, xdist, ruff, scipy"
	touch $(STAMP)

data:
	bash scripts/ensure_data.sh

demo: $(STAMP) data
	$(PY) -m experiments.demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(STAMP) data lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# Benchmarks send convolutions to Eigen (docs/performance.md: 1.5x faster conv gradients on WRN-16-4).
BENCH_XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
bench: $(STAMP)
	$(PY) -m benchmarks.attacks
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.lwta
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.eot
	$(PY) -m benchmarks.cpu_findings

# AutoAttack parity with the reference (pyautoattack) and torchattacks on the same weights:
# PARITY_WORKDIR is a trained small-CNN run, e.g. runs/fashion_mnist/regular from experiments.table1.
PARITY_WORKDIR ?= runs/fashion_mnist/regular
parity: $(STAMP)
	$(PY) -m pip install -q -e '.[parity]' 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --no-deps torchattacks 2>&1 | grep -v "is ignored" || true
	$(PY) -m benchmarks.zoo_fixtures --full
	$(PY) -m benchmarks.attacks
	$(PY) -m benchmarks.parity_torch --workdir=$(PARITY_WORKDIR) --num_test=1000
	# standard AutoAttack per image against the reference and torchattacks (hours: WRN-16-4's full budgets)
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.autoattack

clean:
	rm -rf $(VENV) *.egg-info
