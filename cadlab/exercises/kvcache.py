"""Self-checks for the exercises of 03_kv_cache.ipynb (cache memory, appending K/V, one decode step)."""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, Qwen2Config

from cadlab.exercises import attempted
from cadlab.kvcache import kv_cache_bytes


def check_kv_cache_bytes(fn) -> bool:
    """``fn(config, seq_len, batch, dtype)`` must return the bytes of a full KV cache."""
    from cadlab.models import qwen25_config

    configs = {
        "Qwen2.5-0.5B": qwen25_config(),
        "SmolLM2-135M-like": LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                         num_key_value_heads=3),
        "head_dim set explicitly": Qwen2Config(hidden_size=256, num_hidden_layers=3, num_attention_heads=4,
                                               num_key_value_heads=1, head_dim=128),
    }
    if not attempted(fn, configs["Qwen2.5-0.5B"], 1, 1, torch.bfloat16):
        return False
    for name, config in configs.items():
        for seq_len, batch, dtype in [(1, 1, torch.bfloat16), (32_768, 1, torch.bfloat16), (100, 8, torch.float32),
                                      (7, 3, torch.float16)]:
            got, expected = fn(config, seq_len, batch, dtype), kv_cache_bytes(config, seq_len, batch, dtype)
            assert got == expected, (
                f"{name}, seq_len={seq_len}, batch={batch}, {dtype}: you said {got:,} bytes, the cache holds "
                f"{expected:,}. Count layers x 2 (K and V) x KV heads (not query heads) x head_dim x bytes per "
                "element x seq_len x batch; head_dim is config.head_dim when set.")
    print("check_kv_cache_bytes: exact for Qwen2.5-0.5B, a SmolLM2-like Llama and an explicit head_dim ✓")
    return True


def check_append_kv(fn) -> bool:
    """``fn(past, k, v)`` must return the new cache ``(K, V)``: ``past`` (or None) plus the new rows."""
    generator = torch.Generator().manual_seed(0)
    k1, v1 = torch.randn(2, 3, 5, 8, generator=generator), torch.randn(2, 3, 5, 8, generator=generator)
    if not attempted(fn, None, k1, v1):
        return False
    first = fn(None, k1, v1)
    assert torch.equal(first[0], k1) and torch.equal(first[1], v1), "with past=None the cache is just (k, v)."
    k2, v2 = torch.randn(2, 3, 1, 8, generator=generator), torch.randn(2, 3, 1, 8, generator=generator)
    keys, values = fn(first, k2, v2)
    assert keys.shape == (2, 3, 6, 8), (f"after appending one token K has shape {tuple(keys.shape)}, expected "
                                        "(2, 3, 6, 8): concatenate along the sequence axis, dim=2 (or -2).")
    assert torch.equal(keys, torch.cat([k1, k2], dim=2)) and torch.equal(values, torch.cat([v1, v2], dim=2)), \
        "right shape, wrong content: the old rows come first, then the new ones, K with k and V with v."
    print("check_append_kv: the cache grows by one row per token along the sequence axis ✓")
    return True


def check_decode_attention(fn) -> bool:
    """``fn(q, keys, values)``: one query per row [b, n_q, 1, d] against a GQA cache [b, n_kv, T, d]."""
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 1, 16, generator=generator)
    keys, values = torch.randn(2, 2, 9, 16, generator=generator), torch.randn(2, 2, 9, 16, generator=generator)
    if not attempted(fn, q, keys, values):
        return False
    for n_kv in (2, 3, 6):
        k, v = torch.randn(2, n_kv, 9, 16, generator=generator), torch.randn(2, n_kv, 9, 16, generator=generator)
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16), enable_gqa=True)
        got = fn(q, k, v)
        assert got.shape == expected.shape, f"{n_kv} KV heads: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        diff = (got - expected).abs().max().item()
        assert diff < 1e-5, (f"{n_kv} KV heads: max |difference| {diff:.2e}. Repeat each KV head for its "
                             f"{6 // n_kv} query heads, scores = q K^T / sqrt(d), softmax over the T cached "
                             "positions (no mask: the newest token sees them all), then weights @ V.")
    print("check_decode_attention: equal to scaled_dot_product_attention with 2, 3 and 6 KV heads ✓")
    return True
