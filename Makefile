# `make demo` and `make test` do all set-up on a fresh machine: venv, package, data.
# The project's own commands install the exact versions of requirements.lock (pyproject.toml keeps
# the ranges a library's users need); `make lock` regenerates it, `make test-latest` tries the
# newest versions that the ranges allow (docs/reproducibility.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test test-long test-latest lock lint docs package-check data bench parity reproducibility clean clean-test-cache

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r $(LOCK) 2>&1 | grep -v "is ignored" || true
	$(PIP) --no-deps -e . 2>&1 | grep -v "is ignored\|Editable\|^ *!!\|^ *\*\*\|folders in your\|name as your\|^ *$$\|wheel_obj" || true
	$(PY) scripts/check_lock.py $(LOCK)
	$(PY) -c "import jax, flax, optax, orbax.checkpoint, chex, tensorflow_datasets, ml_collections, pytest, xdist, ruff, scipy, mypy, pdoc"
	touch $(STAMP)

# Regenerates requirements.lock: the newest versions that pyproject.toml's ranges admit, for every
# platform (markers), with hashes. Commit the result with the runs that it changes.
lock: $(STAMP)
	$(PIP) uv 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(LOCK)

# The suite against the newest releases that pyproject.toml allows, in a venv of its own: a
# breaking release shows here before users meet it. Not part of `make test` (CI runs it after,
# non-blocking).
LATEST := .venv-latest
test-latest: data
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check -U -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(LATEST)/bin/python -m pip list --disable-pip-version-check 2>/dev/null | grep -E "^(jax|jaxlib|flax|optax|numpy|orbax-checkpoint|chex) "
	$(LATEST)/bin/python -m pytest -q -n 2 --dist loadfile tests
	# The minimal jax.lax reproduction of the jaxlib 0.10.2 crash, on the newest jaxlib (docs/known-crashes.md).
	$(LATEST)/bin/python scripts/wrn_crash.py --net=lax --runs=5 --timeout=120

data:
	bash scripts/ensure_data.sh

demo: $(STAMP) data
	$(PY) -m experiments.demo

# ruff (lint, format) on everything; mypy on the library (pyproject.toml's [tool.mypy]).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The API reference (docs/api.md): pdoc, one page per public subpackage; any warning fails it.
docs: $(STAMP)
	$(PY) scripts/build_docs.py --out=docs/api/html

# The wheel in a fresh venv outside the repository, used from an empty folder (CI runs it).
package-check: $(STAMP) data
	PY=$(PY) bash scripts/package_check.sh

# The suite is compile-bound (tiny models, many programs): XLA's older CPU emitters compile them
# faster, and the tests check properties, not the emitter's code (docs/reproducibility.md). Set
# for the locked versions only: a newer XLA may have dropped the flag (test-latest runs without it).
TEST_XLA_FLAGS ?= --xla_cpu_use_fusion_emitters=false
PYTEST_ARGS ?=  # e.g. PYTEST_ARGS=--durations=10
test: $(STAMP) data lint
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(PY) -m pytest -q -n 2 --dist loadfile -m "not long" $(PYTEST_ARGS) tests

# The long tests (marker `long`): the WideResNet crash regression in fresh processes, the wheel's
# contents, the GPU/TPU code paths forced on the CPU, the studies and commands end to end, and
# every test whose cold run took 6 s or more (docs/performance.md). CI runs them after `make test`.
test-long: $(STAMP) data
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(PY) -m pytest -q -n 2 --dist loadfile -m long $(PYTEST_ARGS) tests

# Benchmarks send convolutions to Eigen (docs/performance.md: 1.5x faster conv gradients on WRN-16-4).
BENCH_XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
bench: $(STAMP)
	$(PY) -m benchmarks.attacks
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.lwta
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.eot
	$(PY) -m benchmarks.cpu_findings

# How far the demo's Table 1 moves with the numeric path: the same rows and seed under the default
# convolutions on 2 cores, Eigen convolutions, and one core (docs/reproducibility.md). ~20 min.
REPRO := results/reproducibility
reproducibility: $(STAMP) data
	$(PY) -m experiments.demo --out=$(REPRO)/default --runs=runs/reproducibility/default
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m experiments.demo --out=$(REPRO)/eigen --runs=runs/reproducibility/eigen
	taskset -c 0 $(PY) -m experiments.demo --out=$(REPRO)/one_core --runs=runs/reproducibility/one_core
	$(PY) -m experiments.spread $(REPRO)/default $(REPRO)/eigen $(REPRO)/one_core

# AutoAttack parity with the reference (pyautoattack) and torchattacks on the same weights:
# PARITY_WORKDIR is a trained small-CNN run, e.g. runs/fashion_mnist/regular from experiments.table1.
PARITY_WORKDIR ?= runs/fashion_mnist/regular
parity: $(STAMP)
	$(PY) -m pip install -q -e '.[parity]' 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --no-deps torchattacks 2>&1 | grep -v "is ignored" || true
	$(PY) -m tests.fixtures.zoo_fixtures --full
	$(PY) -m benchmarks.attacks
	$(PY) -m benchmarks.parity.autoattack --workdir=$(PARITY_WORKDIR) --num_test=1000
	# standard AutoAttack per image against the reference and torchattacks (hours: WRN-16-4's full budgets)
	XLA_FLAGS="$(BENCH_XLA_FLAGS)" $(PY) -m benchmarks.autoattack

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info

# The test suite's persistent XLA compilation cache (tests/conftest.py; docs/reproducibility.md).
clean-test-cache:
	rm -rf "$${JAXROBUST_TEST_CACHE:-$${TMPDIR:-/tmp}/jaxrobust-test-xla-cache}"
