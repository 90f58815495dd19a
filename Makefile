# Two commands do all set-up on a fresh machine:
#   make run    creates .venv, installs kvstore with its Cython extension, starts a 3-node cluster
#   make test   the same set-up, then ruff, mypy --strict and the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODES ?= 3
BASE_PORT ?= 7101
DATA_DIR ?= ./data
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck unit integration proto clean redis-server compare

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py native/kvstore/_native.pyx native/kvstore/_native.pxd native/murmur3.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) setup.py --quiet build_ext --inplace
	touch $(STAMP)

run: setup
	$(VENV)/bin/kvstore local --nodes $(NODES) --base-port $(BASE_PORT) --data-dir $(DATA_DIR)

lint: setup
	$(VENV)/bin/ruff check kvstore tests proto bench
	$(VENV)/bin/ruff format --check kvstore tests proto bench

typecheck: setup
	$(VENV)/bin/mypy

# kvbench's Redis adapter and bench/compare are tested against Debian's redis-server:
# installed here when missing (as root, or with passwordless sudo).
redis-server: setup
	$(PY) -m kvstore.bench.redis_local ensure

test: lint typecheck redis-server
	$(PY) -m pytest

compare: redis-server
	bench/compare

unit: setup
	$(PY) -m pytest tests/unit tests/property

integration: setup
	$(PY) -m pytest tests/integration

proto: setup
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) build *.egg-info kvstore/_native*.so native/kvstore/_native.c
