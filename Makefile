# deepspeech-flow: two commands on a fresh machine do everything.
#   make demo   set up, generate a small spoken corpus, run the whole train-cv pipeline
#   make test   set up, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tensorflow-cpu here; `make setup TF_EXTRA=gpu` installs tensorflow[and-cuda] instead.
TF_EXTRA ?= cpu
DEMO_DIR ?= demo-data
PYCTCDECODE_VERSION := 0.5.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup system-deps demo test test-fast bench lint clean lock serve stop deepspeech-clients kenlm

setup: system-deps $(STAMP)

# sox with mp3 support (Common Voice clips) and espeak-ng (demo and test corpora).
system-deps:
	@if command -v sox >/dev/null && command -v espeak-ng >/dev/null && command -v g++ >/dev/null \
	    && sox -h 2>/dev/null | grep -q 'AUDIO FILE FORMATS:.* mp3'; then \
	  echo "system packages: sox (mp3), espeak-ng present"; \
	else \
	  echo "installing sox, libsox-fmt-mp3, espeak-ng, g++ (kenlm builds from source)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    sox libsox-fmt-mp3 espeak-ng g++ make zlib1g-dev >/dev/null; \
	fi
	@if command -v cmake >/dev/null && [ -f /usr/include/boost/program_options.hpp ] \
	    && [ -f /usr/include/boost/thread.hpp ] && [ -d /usr/include/eigen3 ]; then \
	  echo "system packages: cmake, boost, eigen present (KenLM's build_binary, lmplz)"; \
	else \
	  echo "installing cmake and boost (KenLM's build_binary and lmplz build from source)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev \
	    libboost-test-dev libeigen3-dev libbz2-dev liblzma-dev >/dev/null; \
	fi

# KenLM's build_binary and lmplz (what DeepSpeech's generate_lm.py runs), compiled once
# from the kenlm source distribution on PyPI into .cache/ (2 targets, -j2: ~2 min).
# `build-lm --scorer` finds them there.
KENLM_VERSION := 0.3.0
KENLM_SRC := .cache/kenlm-$(KENLM_VERSION)
KENLM_BIN := $(KENLM_SRC)/build/bin

kenlm: $(KENLM_BIN)/build_binary

$(KENLM_BIN)/build_binary: | $(STAMP)
	@mkdir -p .cache
	$(BIN)/pip download -q --no-deps --no-binary kenlm "kenlm==$(KENLM_VERSION)" -d .cache
	tar xzf .cache/kenlm-$(KENLM_VERSION).tar.gz -C .cache
	cmake -S $(KENLM_SRC) -B $(KENLM_SRC)/build -DCMAKE_BUILD_TYPE=Release \
	  -DCOMPILE_TESTS=OFF -DENABLE_PYTHON=OFF >/dev/null
	cmake --build $(KENLM_SRC)/build --target build_binary lmplz -j2 >/dev/null
	@test -x $@ && echo "KenLM tools: $(KENLM_BIN)/{build_binary,lmplz}"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[$(TF_EXTRA),dev]"
	# pyctcdecode 0.5 (the LM beam search) declares numpy<2 but runs on numpy 2 (tested in
	# tests/test_decoding.py); installed without its pins, its one runtime dependency
	# (pygtrie) is in pyproject.toml.
	$(BIN)/pip install -q --no-deps "pyctcdecode==$(PYCTCDECODE_VERSION)"
	touch $(STAMP)

demo: setup kenlm
	@start=$$(date +%s); \
	$(BIN)/deepspeech-flow make-demo-corpus $(DEMO_DIR)/cv --count 400 && \
	$(BIN)/deepspeech-flow run --corpus $(DEMO_DIR)/cv/en --workdir $(DEMO_DIR)/work \
	  --config deployments/demo.yaml && \
	echo "make demo: pipeline time $$(( $$(date +%s) - start )) s"

# libdeepspeech 0.9.3 (the library under DeepSpeech's clients), both builds, from the
# deepspeech-tflite and deepspeech wheels on PyPI, cached here; the client tests and
# `transcribe --backend deepspeech` run it. Without the registry the tests skip, saying so.
export DEEPSPEECH_CLIENT_CACHE ?= $(CURDIR)/.cache/deepspeech-0.9.3

deepspeech-clients: $(STAMP)
	$(BIN)/python -m deepspeech_core.export.deepspeech_client fetch

# A fixed order on CI (-p no:randomly); `$(BIN)/pytest -p randomly` shuffles (tests must
# pass in any order: each sets up what it needs). The gates (`make lint`) run first.
# TEST_WORKERS pytest-xdist workers, whole modules each (tests/conftest.py groups them):
# much of the suite waits on Prefect servers and subprocesses starting, so on 2 cores two
# workers took 15.5 min where one took 23.7 (docs/PERFORMANCE.md). TEST_WORKERS=0: one.
TEST_WORKERS ?= 2
test: setup kenlm deepspeech-clients lint
	$(BIN)/pytest -q -p no:randomly -n $(TEST_WORKERS) --dist loadfile

# The unit tests only: those marked `unit` (no Prefect server, no training, no corpus
# fixture; pyproject.toml's markers): 160 tests, 24 s of CPU.
test-fast: setup
	$(BIN)/pytest -q -p no:randomly -m unit

bench: setup
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The gates: lint, formatting, and mypy on deepspeech_core (settings in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v -e '^deepspeech-flow' -e '^pyctcdecode' > constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .cache

# The local deployment (docs/DEPLOYMENT.md): a Prefect server on 127.0.0.1:$(PREFECT_PORT)
# whose database lives in $(DEEPSPEECH_WORKDIR)/prefect, the train-cv deployment (and its
# crash recovery) on a process work pool, and a worker, all in the background; pid files
# and logs in $(DEEPSPEECH_WORKDIR)/prefect. `make stop` stops exactly those processes.
DEEPSPEECH_WORKDIR ?= $(CURDIR)/deepspeech-data
DEEPSPEECH_CORPUS ?= $(CURDIR)/$(DEMO_DIR)/cv/en
PREFECT_PORT ?= 4200

serve: setup
	$(BIN)/python deployments/stack.py up --workdir "$(DEEPSPEECH_WORKDIR)" \
	  --corpus "$(DEEPSPEECH_CORPUS)" --port $(PREFECT_PORT)

# stack.py needs the venv (psutil, Prefect's client): without it, `make setup` first.
stop:
	@test -x $(BIN)/python || { echo "make stop needs $(BIN) (psutil): run make setup first" >&2; exit 1; }
	@$(BIN)/python deployments/stack.py down --workdir "$(DEEPSPEECH_WORKDIR)"
