# petcd — every set-up step lives here so that a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
SEEDS ?= 200
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit simulate bench robustness proto clean system-deps native-deps
NATIVE_SRC := src/petcd/api/native/_h2.pyx

# The native gRPC front end (a Cython extension) builds against libnghttp2 with a C compiler;
# pip fetches Cython itself (pyproject's build requirements). Without them petcd uses grpcio.
native-deps:
	@if [ ! -f /usr/include/nghttp2/nghttp2.h ] || ! command -v cc >/dev/null 2>&1; then \
		echo "installing Debian libnghttp2-dev and a C compiler"; \
		$(SUDO) apt-get update -qq && $(APT_INSTALL) libnghttp2-dev gcc libc6-dev >/dev/null; \
	fi

$(STAMP): pyproject.toml setup.py $(NATIVE_SRC) | native-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e '.[test,bench]'
	touch $@

# Debian packages the tests need: etcdctl 3.4 (etcd-client) and etcd 3.4 (etcd-server).
system-deps:
	@if ! command -v etcdctl >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1; then \
		echo "installing Debian etcd-client and etcd-server"; \
		$(SUDO) apt-get update -qq && $(APT_INSTALL) etcd-client etcd-server >/dev/null; \
	fi

## make run: a single-member server on 127.0.0.1:2379 with data in ./default.petcd
run: $(STAMP)
	$(VENV)/bin/petcd --name default --data-dir ./default.petcd

## make test: lint, type check and the whole test suite (under 15 minutes on 2 cores)
test: $(TEST_STAMP) system-deps lint typecheck unit

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks

typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

unit: $(TEST_STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)
	# the server suite once more on the grpcio front end (the default run used the native one)
	PETCD_TEST_FRONTEND=grpcio $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests/server

## make simulate SEEDS=N (or SEED=n to replay one): the deterministic raft cluster simulator
simulate: $(STAMP)
	$(PY) -m petcd.raft.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

## make bench: every benchmark; figures appended to bench-results.jsonl
bench: $(TEST_STAMP) system-deps
	$(PY) -m benchmarks.run_all

## make robustness: long fault-injection runs (make test runs each briefly)
## ROBUSTNESS_S seconds of random faults per cluster run, ROBUSTNESS_RUNS runs (new seed each)
ROBUSTNESS_S ?= 300
ROBUSTNESS_RUNS ?= 3
robustness: $(TEST_STAMP) system-deps
	$(PY) -m petcd.raft.sim --seeds 5000
	for run in $$(seq $(ROBUSTNESS_RUNS)); do \
		PETCD_ROBUSTNESS_S=$(ROBUSTNESS_S) $(VENV)/bin/pytest -q -s tests/robustness \
			|| exit 1; \
	done
	PETCD_WAL_CRASH_ROUNDS=2000 $(VENV)/bin/pytest -q --timeout 3600 tests/wal/test_crash.py
	PETCD_MVCC_MODEL_EXAMPLES=5000 PETCD_MVCC_CRASH_KILLS=500 $(VENV)/bin/pytest -q --timeout 3600 tests/mvcc/test_model.py tests/mvcc/test_crash.py

proto: $(TEST_STAMP)
	PY=$(PY) scripts/genproto.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
