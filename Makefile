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
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup system-deps demo test bench lint clean lock

setup: system-deps $(STAMP)

# sox with mp3 support (Common Voice clips) and espeak-ng (demo and test corpora).
system-deps:
	@if command -v sox >/dev/null && command -v espeak-ng >/dev/null \
	    && sox -h 2>/dev/null | grep -q 'AUDIO FILE FORMATS:.* mp3'; then \
	  echo "system packages: sox (mp3), espeak-ng present"; \
	else \
	  echo "installing sox, libsox-fmt-mp3, espeak-ng"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    sox libsox-fmt-mp3 espeak-ng >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[$(TF_EXTRA),dev]"
	touch $(STAMP)

demo: setup
	@start=$$(date +%s); \
	$(BIN)/deepspeech-flow make-demo-corpus $(DEMO_DIR)/cv --count 400 && \
	$(BIN)/deepspeech-flow run --corpus $(DEMO_DIR)/cv/en --workdir $(DEMO_DIR)/work \
	  --config deployments/demo.yaml && \
	echo "make demo: pipeline time $$(( $$(date +%s) - start )) s"

test: setup
	$(BIN)/pytest -q

bench: setup
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: setup
	$(BIN)/ruff check .

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^deepspeech-flow' > constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
