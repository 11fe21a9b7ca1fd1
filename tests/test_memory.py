"""cadlab.lm.memory: eager attention keeps L^2 probabilities, SDPA does not, checkpointing keeps layer inputs."""

import pytest

from cadlab.lm import memory
from cadlab.lm.models import tiny_qwen2


def test_eager_keeps_the_attention_matrix_and_checkpointing_frees_it():
    layers = 8                                  # eager keeps layers + 2 matrices, checkpointing 3: a 7-matrix gap
    model = tiny_qwen2(num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                       num_hidden_layers=layers)
    rows = {(r["attention"], r["checkpointing"]): r for r in
            memory.measure_table(model, lengths=(1024,), repeats=3, progress=False)}   # median of 3 steps
    matrix_mb = 8 * 1024**2 * 4 / 2**20                             # one layer: 8 heads x L^2 floats = 32 MB
    assert rows["eager", False]["peak_mb"] - rows["sdpa", False]["peak_mb"] > 0.6 * layers * matrix_mb
    assert rows["eager", True]["peak_mb"] < rows["eager", False]["peak_mb"] - 0.5 * (layers - 1) * matrix_mb
    assert rows["sdpa", False]["peak_mb"] < 0.5 * layers * matrix_mb     # no L x L matrix kept: under half one per layer
    assert all(r["seconds"] > 0 for r in rows.values())
    assert model.config._attn_implementation == "sdpa" and not model.is_activation_checkpointing


def test_formula_terms_and_the_seeds_qwen3_figure():
    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8, "intermediate_size": 128,
              "vocab_size": 256}
    eager, sdpa = memory.estimate(config, 1024, "eager"), memory.estimate(config, 1024, "sdpa")
    assert eager["attention"] == (2 + 2) * 8 * 1024**2 * 4 and sdpa["attention"] == 0
    assert memory.estimate(config, 1024, "eager", checkpointing=True)["attention"] == 3 * 8 * 1024**2 * 4
    assert eager["activations"] == sdpa["activations"] == 2 * 1024 * (10 * 64 + 4 * 128) * 4
    assert memory.estimate(config, 1024, "sdpa", checkpointing=True)["activations"] < sdpa["activations"]
    q = memory.qwen3_8b(13_000)
    assert q["seed_attention_one_layer_gb"] == pytest.approx(10.8, abs=0.05)   # the seed's own number
    assert 8.1e9 < q["parameters"] < 8.3e9 and q["weights_gb"] == pytest.approx(16.4, abs=0.1)
    assert q["logits_bf16_once_gb"] == pytest.approx(13_000 * 151_936 * 2 / 1e9, abs=0.01)
    assert q["total_sdpa_checkpointing_gb"] < q["total_eager_checkpointing_gb"] < q["eager_all_layers_no_checkpointing_gb"]
