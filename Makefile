# Comet: every target sets up .venv from the system Python when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
ADDR ?= :6174

.PHONY: run test lint format proto bench example clean

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

## example: a broker, the price producer and two price-alert consumers (Ctrl-C stops all)
example: $(STAMP)
	$(BIN)/python examples/run_example.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .example-data
