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
# Docker cluster (cluster/): `docker compose` when the plugin answers, else docker-compose v1.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
COMPOSE_PROJECT ?= kvstore
CLUSTER_NODES ?= 4
CLUSTER_IMAGE ?= kvstore:latest

.PHONY: setup run test lint typecheck unit integration proto clean redis-server etcd-server compare \
	cluster-image cluster-up cluster-down

setup: $(STAMP)

# Exact versions from constraints.txt (pyproject.toml states ranges). A venv made before the
# distribution was renamed still holds it as `kvstore`: uninstalled first.
$(STAMP): pyproject.toml constraints.txt setup.py native/kvstore/_native.pyx native/kvstore/_native.pxd native/murmur3.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --quiet --yes kvstore
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) setup.py --quiet build_ext --inplace
	touch $(STAMP)

run: setup
	$(VENV)/bin/kvstore local --nodes $(NODES) --base-port $(BASE_PORT) --data-dir $(DATA_DIR)

lint: setup
	$(VENV)/bin/ruff check kvstore tests proto bench tools
	$(VENV)/bin/ruff format --check kvstore tests proto bench tools
	$(PY) tools/check_layers.py

typecheck: setup
	$(VENV)/bin/mypy

# kvbench's Redis adapter and bench/compare are tested against Debian's redis-server:
# installed here when missing (as root, or with passwordless sudo).
redis-server: setup
	$(PY) -m kvstore.bench.redis_local ensure

# ... and etcd's (3 members, fsync on every commit) against Debian's etcd-server, likewise.
etcd-server: setup
	$(PY) -m kvstore.bench.etcd_local ensure

test: lint typecheck redis-server etcd-server
	$(PY) -m pytest

compare: redis-server etcd-server
	bench/compare

unit: setup
	$(PY) -m pytest tests/unit tests/property

integration: setup
	$(PY) -m pytest tests/integration

proto: setup
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) build dist wheelhouse *.egg-info kvstore/_native*.so native/kvstore/_native.c

# The node image, built with no registry (cluster/base-image + prebuilt wheels); BASE (e.g.
# BASE=python:3.11-slim where a registry is reachable) passes through to cluster/build-image.
cluster-image: setup
	IMAGE=$(CLUSTER_IMAGE) cluster/build-image

# A seed plus CLUSTER_NODES scalable nodes that join by themselves; clients reach the seed on 127.0.0.1:8100.
cluster-up: cluster-image
	KVSTORE_IMAGE=$(CLUSTER_IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) -f cluster/compose.yaml up -d --scale node=$(CLUSTER_NODES)

# Containers, network and volumes (data) of this project only. Volumes are listed first:
# a node's anonymous /data volume that `up` carried over to a recreated container is mounted
# by name there, and docker-compose v1's `down -v` leaves it behind.
cluster-down:
	@volumes=$$(docker ps -aq --filter label=com.docker.compose.project=$(COMPOSE_PROJECT) \
	    | xargs -r docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'); \
	$(COMPOSE) -p $(COMPOSE_PROJECT) -f cluster/compose.yaml down -v && \
	for volume in $$volumes; do docker volume rm "$$volume" >/dev/null 2>&1 || true; done
