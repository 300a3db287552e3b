# Two entry points: `make demo` (tiny end-to-end run) and `make test` (lint, then the CPU test suite).
# Both create the virtualenv on first use and reuse it afterwards (rebuilt when requirements.txt changes),
# plus the MediaPipe venv of the labeling pipeline (~/.cache/vitra_jax/mediapipe-venv; see preprocess/hands).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: setup demo test bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m preprocess.hands.mediapipe_env   # the labeling pipeline's CPU hand model lives in its own venv
	touch $@

setup: $(STAMP)

demo: setup
	$(PY) -m vitra_jax.train --config configs/demo.py --workdir out/demo
	$(PY) -m vitra_jax.evaluate --workdir out/demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --durations=15 tests
