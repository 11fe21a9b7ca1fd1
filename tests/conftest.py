"""Shared fixtures. Tests never touch the network and always use the offline default model.

The offline environment (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, CADLAB_LM) is defined once, on the
Makefile's ``OFFLINE :=`` line, which `make unit` puts in front of pytest. A pytest started by
hand gets the same values from that line here, before anything imports transformers (which
reads them at import time).
"""

import os
import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"


def offline_environment() -> dict[str, str]:
    """The ``NAME=value`` pairs of the Makefile's ``OFFLINE :=`` line."""
    line = re.search(r"^OFFLINE :=(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    if line is None:
        raise RuntimeError(f"{MAKEFILE} has no 'OFFLINE :=' line: the offline environment is defined there")
    return dict(pair.split("=", 1) for pair in line.group(1).split())


os.environ.update(offline_environment())

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def offline_lm():
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded once for the whole test session."""
    from cadlab.lm.models import load_lm

    return load_lm("SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def tiny():
    """``tiny_qwen2()``: the random 2-layer Qwen2 (vocab 256, hidden 64, 4 query / 2 KV heads, seed 0).

    One instance for the whole session, shared by every test file: use it read-only (no
    ``.to()``, which converts in place, no changes to its config). A test that needs another
    seed, size or dtype calls ``tiny_qwen2(...)`` itself.
    """
    from cadlab.lm.models import tiny_qwen2

    return tiny_qwen2()
