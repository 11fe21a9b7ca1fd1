"""Self-checks for the exercises of 03_kv_cache.ipynb: growing the cache, attending from the newest
tokens to it, and the cache's size in bytes.

Each check compares the learner's function with the library unit the notebook teaches
(``cadlab.lm.kvcache.append_kv``, ``decode_attention``, ``kv_cache_bytes``) on inputs chosen so
that the usual slips fail: the wrong axis, the new rows first, a missing scale, tiled
instead of repeated KV heads, a causal mask that ignores the cached positions, query heads
counted instead of KV heads, K without V.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, Qwen2Config

from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_pair, expect_tensor
from cadlab.lm.kvcache import append_kv, decode_attention, kv_cache_bytes
from cadlab.lm.models import qwen25_config


@exercise_check
def check_append_kv(fn) -> bool:
    """``fn(past, k, v)`` must return the new cache ``(K, V)``: ``past`` (or None) plus the new rows."""
    generator = torch.Generator().manual_seed(0)

    def rows(n):  # K and V rows of n tokens: [batch 2, kv_heads 3, n, head_dim 8]
        return torch.randn(2, 3, n, 8, generator=generator), torch.randn(2, 3, n, 8, generator=generator)

    k1, v1 = rows(1)
    if not attempted(fn, None, k1, v1):
        return False
    with case("past=None"):
        first = expect_pair(fn(None, k1, v1), "(K, V)", lambda t: expect_tensor(t, tuple(k1.shape), "floating"))
    assert torch.equal(first[0], k1) and torch.equal(first[1], v1), "with past=None the cache is just (k, v)."
    past, reference = first, append_kv(None, k1, v1)
    for step, n in enumerate([1, 1, 4, 1]):  # decode steps and one chunk of 4 tokens
        k, v = rows(n)
        reference = append_kv(reference, k, v)
        with case(f"appending {n} row(s) to a cache of {past[0].shape[2]}"):
            got = expect_pair(fn(past, k, v), "(K, V)", lambda t: expect_tensor(
                t, tuple(reference[0].shape), "floating",
                hint="the cache is [batch, kv_heads, seq, head_dim], so the new rows go along the sequence axis, dim=2"))
        assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1]), (
            f"step {step + 1}: right shape, wrong content. The old rows come first, then the new ones; "
            "K grows with k and V with v.")
        past = got
    print("check_append_kv: the cache grows along the sequence axis, old rows first, K and V each ✓")
    return True


@exercise_check
def check_decode_attention(fn) -> bool:
    """``fn(q, keys, values)``: the s newest queries [b, n_q, s, d] against a GQA cache [b, n_kv, T, d]."""
    generator = torch.Generator().manual_seed(1)
    n_q, T, d = 6, 9, 16

    def inputs(n_kv, s):
        return (torch.randn(2, n_q, s, d, generator=generator), torch.randn(2, n_kv, T, d, generator=generator),
                torch.randn(2, n_kv, T, d, generator=generator))

    if not attempted(fn, *inputs(n_q, 1)):
        return False
    for n_kv, s in [(6, 1), (2, 1), (3, 1), (2, 4), (6, 3)]:
        q, keys, values = inputs(n_kv, s)
        what = f"{n_kv} KV heads for {n_q} query heads, {s} new token(s), {T} cached positions"
        expected = decode_attention(q, keys, values)
        with case(what):
            got = expect_tensor(fn(q, keys, values), tuple(expected.shape), "floating",
                                hint="[batch, query heads, new tokens, head_dim], like q")
        diff = (got - expected).abs().max().item()
        hint = ("repeat each KV head for its query heads (head j serves query heads j*g .. j*g+g-1: "
                "repeat_interleave, not repeat), scores = q K^T / sqrt(d), softmax over the cached positions, "
                "then weights @ V.")
        if s > 1:
            hint += (f" With {s} new tokens, query i sits at position T-s+i and must not see later keys: "
                     f"the mask hides key t > T-s+i, i.e. triu(T-s+1), not triu(1).")
        assert diff < 1e-5, f"{what}: max |difference| {diff:.2e}. " + hint
    print("check_decode_attention: equal to cadlab.lm.kvcache.decode_attention with 6, 3 and 2 KV heads, "
          "1 and several new tokens ✓")
    return True


@exercise_check
def check_kv_cache_bytes(fn) -> bool:
    """``fn(config, seq_len, batch, dtype)`` must return the bytes of a full KV cache."""
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
            with case(f"{name}, seq_len={seq_len}, batch={batch}, {dtype}"):
                got = expect_number(fn(config, seq_len, batch, dtype), "the number of bytes, an int")
            expected = kv_cache_bytes(config, seq_len, batch, dtype)
            assert got == expected, (
                f"{name}, seq_len={seq_len}, batch={batch}, {dtype}: you said {got:,} bytes, the cache holds "
                f"{expected:,}. Count layers x 2 (K and V) x KV heads (not query heads) x head_dim x bytes per "
                "element x seq_len x batch; head_dim is config.head_dim when set.")
    print("check_kv_cache_bytes: exact for Qwen2.5-0.5B, a SmolLM2-like Llama and an explicit head_dim ✓")
    return True
