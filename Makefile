# Minerva: `make serve` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS_DIR ?= models
DEFAULT_MODEL := $(MODELS_DIR)/SmolLM2-135M-Instruct-Q4_1.gguf
EXTRA_MODEL := $(MODELS_DIR)/gemma-3-270m-Q4_K_M.gguf
PROTOS := $(wildcard proto/minerva/v1/*.proto)

.PHONY: install proto proto-check models models-extra serve serve-core serve-bridge test fuzz lint bench clean

install: $(STAMP)

# Virtual machines may advertise AMX without enabling its tile state, and llama.cpp's AMX
# kernels then fault (SIGSEGV in ldtilecfg): build its CPU backend without AMX, keeping the rest
# of -march=native. pip reuses a wheel it built before whatever these flags say: a change here
# needs `pip cache remove llama_cpp_python`.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
endif

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

# Regenerate the committed gRPC/protobuf code (package-qualified imports: -I proto).
proto: $(STAMP)
	$(PY) scripts/gen_proto.py proto

models: $(DEFAULT_MODEL)

$(DEFAULT_MODEL): $(STAMP)
	$(PY) scripts/fetch_models.py --dest $(MODELS_DIR)

models-extra: $(EXTRA_MODEL)

$(EXTRA_MODEL): $(STAMP)
	$(PY) scripts/fetch_models.py --dest $(MODELS_DIR) --extra

serve: $(STAMP) $(DEFAULT_MODEL)
	$(PY) -m core.cli serve --models-dir $(MODELS_DIR)

serve-core: $(STAMP) $(DEFAULT_MODEL)
	$(PY) -m core --models-dir $(MODELS_DIR)

serve-bridge: $(STAMP)
	$(PY) -m rest_bridge

test: $(STAMP) $(DEFAULT_MODEL) $(EXTRA_MODEL)
	$(PY) -m pytest -q -rfEs
	$(MAKE) --no-print-directory lint

# Property-based fuzzing (hypothesis) of the header readers and the bridge's request parsing with
# the long profile: thousands of examples per test where `make test` runs a few dozen.
fuzz: $(STAMP) $(DEFAULT_MODEL)
	MINERVA_FUZZ=1 $(PY) -m pytest -q -rfEs --timeout=1800 tests/fuzz

lint: $(STAMP)
	$(PY) -m ruff check core rest_bridge scripts tests
	$(PY) -m mypy core rest_bridge

# Builds llama.cpp's llama-server once per machine (../shared/tools/llama-server.sh, ~10 min on
# 2 cores), then compares it, in-process llama-cpp-python and Minerva in one table.
# BENCH_ARGS passes flags through, e.g. BENCH_ARGS='--clients 1,4 --rounds 1 --turns 2'.
# Last, aggregate tok/s of 1 core vs 2 cores behind one bridge at 8 clients (bench_scaleout.py).
bench: $(STAMP) $(DEFAULT_MODEL)
	$(PY) scripts/bench_import.py
	$(PY) scripts/bench_core.py --models-dir $(MODELS_DIR)
	$(PY) scripts/bench_serving.py --model $(DEFAULT_MODEL) $(BENCH_ARGS)
	$(PY) scripts/bench_overload.py --model $(DEFAULT_MODEL)
	$(PY) scripts/bench_scaleout.py --model $(DEFAULT_MODEL)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
