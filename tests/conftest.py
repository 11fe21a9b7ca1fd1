"""Shared fixtures. Tests never touch the network and always use the offline default model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["CADLAB_LM"] = "SmolLM2-135M-Instruct"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def offline_lm():
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded once for the whole test session."""
    from cadlab.models import load_lm

    return load_lm("SmolLM2-135M-Instruct")
