# Comet: every target sets up .venv from the system Python when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp
DATA_DIR ?= data
ADDR ?= :6174
# make bench-compare SCALE=0.1: a tenth of the records (a quick run)
SCALE ?=
# make cluster: state, data and logs in $(CLUSTER_DIR); one broker per port; etcd on
# ETCD_PORT (empty = a free port). make cluster-down CLEAN=1 also deletes the data.
CLUSTER_DIR ?= .cluster
CLUSTER_PORTS ?= 6174,6175,6176
ETCD_PORT ?=
CLEAN ?=
# make chaos DURATION=600 SEED=n: the fault harness (tests/faults); no SEED = a random one, printed
DURATION ?= 600
SEED ?=
COMPOSE ?= docker compose
COMPOSE_FILE := deploy/docker-compose.yml
IMAGE ?= comet-broker:local
LOCAL_CLUSTER = $(BIN)/python deploy/local_cluster.py --dir $(CLUSTER_DIR)
YES = $(filter 1 yes true,$(CLEAN))

.PHONY: run test lint format proto bench bench-compare example clean chaos \
	cluster cluster-status cluster-down docker-build docker-up docker-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start a single broker (no etcd) on $(ADDR) with data in $(DATA_DIR)/
run: $(STAMP)
	$(BIN)/comet --etcd "" --data-dir $(DATA_DIR) --addr $(ADDR)

## test: lint, then the whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## proto: regenerate the gRPC/protobuf stubs in src/comet/v1 from proto/
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src \
		--grpc_python_out=src proto/comet/v1/broker.proto

## bench: 1,000,000 x 100 B through one local broker
bench: $(STAMP)
	$(BIN)/cometctl bench both --spawn-broker --count 1000000 --size 100 --acks 1

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## bench-compare: Comet, NATS JetStream and Redis Streams side by side (bench/results/)
bench-compare: $(BENCH_STAMP)
	bash bench/install_servers.sh
	$(BIN)/python -m bench.compare $(if $(SCALE),--scale $(SCALE))

## chaos: DURATION seconds of seeded faults against etcd + 3 brokers, then check the history
chaos: $(STAMP)
	$(BIN)/python -m tests.faults --duration $(DURATION)$(if $(SEED), --seed $(SEED))

## example: a broker, the price producer and two price-alert consumers (Ctrl-C stops all)
example: $(STAMP)
	$(BIN)/python examples/run_example.py

## cluster: etcd + three brokers in cluster mode on 127.0.0.1 (detached; see cluster-down)
cluster: $(STAMP)
	$(LOCAL_CLUSTER) up --ports $(CLUSTER_PORTS)$(if $(ETCD_PORT), --etcd-port $(ETCD_PORT))

## cluster-status: what `make cluster` started, running or not, healthy or not
cluster-status:
	$(LOCAL_CLUSTER) status

## cluster-down: stop exactly the processes `make cluster` started (CLEAN=1: delete data too)
cluster-down:
	$(LOCAL_CLUSTER) down$(if $(YES), --clean)

## docker-build: the broker image (deploy/Dockerfile) as $(IMAGE)
docker-build:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

## docker-up: etcd, three brokers, a price producer and two alert consumers in containers
docker-up:
	$(COMPOSE) -f $(COMPOSE_FILE) up -d --build
	$(COMPOSE) -f $(COMPOSE_FILE) ps

## docker-down: stop and remove the containers (CLEAN=1: the volumes too)
docker-down:
	$(COMPOSE) -f $(COMPOSE_FILE) down$(if $(YES), --volumes)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .example-data
