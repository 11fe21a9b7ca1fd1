"""The KV cache: shapes, an explicit-concatenation attention equal to the library's, exact cached
generation, the memory formula, and the decode benchmark's output (structure only, no speed)."""

import json
import math

import pytest
import torch
from transformers import DynamicCache

from cadlab.lm import kvcache
from cadlab.lm.bench import decode_benchmark, main
from cadlab.lm.kvcache import (
    attention_with_kv,
    cache_nbytes,
    cache_shapes,
    explicit_attention_parity,
    kv_cache_bytes,
    mha_cache_bytes,
    step_cost,
    step_times,
    trace_cache,
    weight_bytes,
)
from cadlab.lm.models import qwen25_config, tiny_qwen2
from cadlab.lm.sampling import generate, next_token_logits

PROMPTS = ["The capital of France is", "Write a haiku about the sea.", "def fibonacci(n):"]


def _random_ids(shape, seed=0, low=3, high=256):
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


# --- what the cache holds ----------------------------------------------------------------

def test_every_layer_holds_batch_kvheads_seq_headdim_after_prefill_and_each_decode(tiny):
    ids = _random_ids((2, 7))
    cache = DynamicCache(config=tiny.config)
    next_token_logits(tiny, ids, None, torch.arange(7).expand(2, -1), cache)
    assert cache.get_seq_length() == 7
    assert cache_shapes(cache) == [((2, 2, 7, 16), (2, 2, 7, 16))] * 2
    for step in range(3):
        next_token_logits(tiny, ids[:, :1], None, torch.full((2, 1), 7 + step), cache)
        assert cache_shapes(cache) == [((2, 2, 8 + step, 16), (2, 2, 8 + step, 16))] * 2


def test_trace_cache_prefill_then_one_row_per_decode(tiny):
    rows = trace_cache(tiny, _random_ids((2, 5)), 4)
    assert [r["phase"] for r in rows] == ["prefill", "decode", "decode", "decode"]
    assert [r["fed"] for r in rows] == [(2, 5), (2, 1), (2, 1), (2, 1)]
    assert [r["positions"] for r in rows] == ["0..4", "5..5", "6..6", "7..7"]
    assert [r["cache_len"] for r in rows] == [5, 6, 7, 8]
    assert [r["keys"] for r in rows] == [(2, 2, n, 16) for n in (5, 6, 7, 8)]
    assert [r["values"] for r in rows] == [r["keys"] for r in rows]


def test_trace_cache_offline_model_gqa_shapes(offline_lm):
    model, tokenizer = offline_lm
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    rows = trace_cache(model, ids, 3)
    p = ids.shape[1]
    assert [r["keys"] for r in rows] == [(1, 3, p + i, 64) for i in range(3)]  # 3 KV heads of width 64
    greedy = model.generate(ids, max_new_tokens=3, do_sample=False, top_k=None, top_p=None, temperature=None)
    assert [r["token"] for r in rows] == greedy[0, p:].tolist()


def test_trace_cache_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="new_tokens"):
        trace_cache(tiny, _random_ids((1, 3)), 0)
    with pytest.raises(ValueError, match="input_ids"):
        trace_cache(tiny, torch.tensor([1, 2, 3]), 2)


# --- explicit K/V concatenation == the library's attention at every step -------------------

@pytest.mark.parametrize("layer_index", [0, 1])
def test_explicit_concat_attention_equals_library_layer_every_step_tiny(tiny, layer_index):
    rows = explicit_attention_parity(tiny, _random_ids((2, 6), seed=1), 6, layer_index)
    assert len(rows) == 6 and rows[0]["phase"] == "prefill"
    assert [r["cache_len"] for r in rows] == list(range(6, 12))
    for r in rows:
        assert r["k_diff"] == 0 and r["v_diff"] == 0, r
        assert r["out_diff"] < 1e-6, r


@pytest.mark.parametrize("layer_index", [0, 14, -1])
def test_explicit_concat_attention_equals_library_layer_every_step_offline(offline_lm, layer_index):
    model, tokenizer = offline_lm
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    rows = explicit_attention_parity(model, ids, 5, layer_index)
    for r in rows:
        assert r["k_diff"] == 0 and r["v_diff"] == 0, r
        assert r["out_diff"] < 1e-4, r  # float32, our eager softmax vs the library's sdpa


def test_attention_with_kv_rejects_a_cache_of_the_wrong_shape(tiny):
    layer = tiny.model.layers[0]
    x = torch.randn(1, 1, 64)
    cos, sin = tiny.model.rotary_emb(x, torch.tensor([[3]]))
    with pytest.raises(ValueError, match="past K"):
        attention_with_kv(layer, x, cos, sin, tiny.config, (torch.zeros(1, 4, 3, 16), torch.zeros(1, 4, 3, 16)))
    with pytest.raises(ValueError, match="out of range"):
        explicit_attention_parity(tiny, _random_ids((1, 3)), 2, layer_index=5)


# --- cached generation is exact ---------------------------------------------------------------

def _library_greedy(model, ids, mask, n, eos, pad):
    return model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, top_k=None, top_p=None,
                          temperature=None, eos_token_id=eos, pad_token_id=pad)


def test_cached_generate_equals_uncached_and_model_generate_offline(offline_lm):
    model, tokenizer = offline_lm
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        cached = generate(model, ids, max_new_tokens=16, temperature=0.0, eos_token_id=eos, use_cache=True)
        uncached = generate(model, ids, max_new_tokens=16, temperature=0.0, eos_token_id=eos, use_cache=False)
        assert torch.equal(cached, uncached), prompt
        assert torch.equal(cached, _library_greedy(model, ids, torch.ones_like(ids), 16, eos, pad)), prompt


def test_cached_generate_batched_left_padding_offline(offline_lm):
    model, tokenizer = offline_lm
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    ids, mask = batch.input_ids, batch.attention_mask
    assert (mask == 0).any(), "the prompts should have different lengths"
    cached = generate(model, ids, mask, max_new_tokens=12, temperature=0.0, eos_token_id=eos, use_cache=True)
    uncached = generate(model, ids, mask, max_new_tokens=12, temperature=0.0, eos_token_id=eos, use_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, _library_greedy(model, ids, mask, 12, eos, pad))
    for row, prompt in enumerate(PROMPTS):
        alone_ids = tokenizer(prompt, return_tensors="pt").input_ids
        alone = generate(model, alone_ids, max_new_tokens=12, temperature=0.0, eos_token_id=eos, use_cache=True)
        new = cached[row, ids.shape[1]:]
        assert new[: alone.shape[1] - alone_ids.shape[1]].tolist() == alone[0, alone_ids.shape[1]:].tolist(), prompt


def test_cached_generate_batched_left_padding_tiny(tiny):
    ids = _random_ids((3, 6), seed=2)
    mask = torch.ones_like(ids)
    mask[0, :3], mask[1, :1] = 0, 0
    ids = ids.masked_fill(mask == 0, 2)
    kwargs = dict(max_new_tokens=10, temperature=0.0, eos_token_id=1, pad_token_id=2)
    cached = generate(tiny, ids, mask, use_cache=True, **kwargs)
    assert torch.equal(cached, generate(tiny, ids, mask, use_cache=False, **kwargs))
    assert torch.equal(cached, _library_greedy(tiny, ids, mask, 10, 1, 2))


def test_step_times_gives_the_same_tokens_with_and_without_cache(tiny):
    ids = _random_ids((1, 5), seed=3)
    with_cache, seconds = step_times(tiny, ids, 6, use_cache=True)
    without_cache, _ = step_times(tiny, ids, 6, use_cache=False)
    assert len(seconds) == 6 and all(s > 0 for s in seconds)
    assert torch.equal(with_cache, without_cache)
    assert torch.equal(with_cache, generate(tiny, ids, max_new_tokens=6, temperature=0.0))


def test_step_cost_structure_and_cache_left_at_length(tiny, monkeypatch):
    """Every timed cached step sees exactly L tokens in the cache (the crop puts it back after each
    repeat); every uncached step is one pass over L + 1 tokens with no cache."""
    seen = []

    def recording(model, ids, mask, positions, cache=None):
        before = None if cache is None else cache.get_seq_length()
        logits = next_token_logits(model, ids, mask, positions, cache)
        seen.append((ids.shape[1], positions[0, 0].item(), before, None if cache is None else cache.get_seq_length()))
        return logits

    monkeypatch.setattr(kvcache, "next_token_logits", recording)
    cost = step_cost(tiny, [4, 9], repeats=3)
    assert cost["length"] == [4, 9]
    assert len(cost["uncached"]) == len(cost["cached"]) == 2
    assert all(t > 0 for t in cost["uncached"] + cost["cached"])
    expected = []
    for length in (4, 9):
        expected.append((length, 0, 0, length))                      # prefill of L tokens into an empty cache
        expected += [(length + 1, 0, None, None),                    # uncached: L + 1 tokens, no cache
                     (1, length, length, length + 1)] * 3            # cached: 1 token at position L, L cached
    assert seen == expected


# --- memory --------------------------------------------------------------------------------

def test_kv_cache_bytes_formula_for_qwen25():
    config = qwen25_config()  # 24 layers, 2 KV heads of width 64
    assert kv_cache_bytes(config, 1) == 24 * 2 * 2 * 64 * 2 == 12_288
    assert kv_cache_bytes(config, 32_768) == 402_653_184
    assert kv_cache_bytes(config, 100, batch=4, dtype=torch.float32) == 24 * 2 * 2 * 64 * 4 * 100 * 4
    assert mha_cache_bytes(config, 32_768) == 7 * kv_cache_bytes(config, 32_768)  # 14 query heads / 2 KV heads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_bytes_equals_measured_cache_tiny(dtype):
    model = tiny_qwen2().to(dtype)
    ids = _random_ids((3, 11), seed=4)
    cache = DynamicCache(config=model.config)
    next_token_logits(model, ids, None, torch.arange(11).expand(3, -1), cache)
    next_token_logits(model, ids[:, :1], None, torch.full((3, 1), 11), cache)
    assert cache_nbytes(cache) == kv_cache_bytes(model.config, 12, batch=3, dtype=dtype)


def test_kv_cache_bytes_equals_measured_cache_offline(offline_lm):
    model, tokenizer = offline_lm
    ids = tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    cache = DynamicCache(config=model.config)
    next_token_logits(model, ids, None, torch.arange(ids.shape[1])[None], cache)
    assert cache_nbytes(cache) == kv_cache_bytes(model.config, ids.shape[1], dtype=model.dtype)
    assert cache_nbytes(cache) == 30 * 2 * 3 * 64 * 4 * ids.shape[1]


def test_kv_cache_bytes_rejects_bad_input():
    with pytest.raises(ValueError, match="seq_len"):
        kv_cache_bytes(qwen25_config(), -1)
    with pytest.raises(TypeError, match="torch.dtype"):
        kv_cache_bytes(qwen25_config(), 10, dtype="bf16")


# tiny_qwen2's parameters by hand: vocab 256, hidden 64, MLP 128, 2 layers, 4 query / 2 KV heads of 16.
TINY_EMBEDDING = 256 * 64
TINY_LAYER = (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64   # q, k+v (biased), o, MLP, 2 norms
TINY_PARAMETERS = TINY_EMBEDDING + 2 * TINY_LAYER + 64                                  # + the final norm
assert TINY_PARAMETERS == 90_688


def _storage_bytes(model) -> int:
    """Bytes of the distinct memory blocks behind the parameters (a tied weight is one block)."""
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    return sum(storages.values())


def test_weight_bytes_counts_tied_embeddings_once(tiny):
    assert tiny.lm_head.weight is tiny.model.embed_tokens.weight
    assert weight_bytes(tiny) == TINY_PARAMETERS * 4 == _storage_bytes(tiny) == 362_752
    assert weight_bytes(tiny_qwen2().to(torch.bfloat16)) == TINY_PARAMETERS * 2
    untied = tiny_qwen2(tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert weight_bytes(untied) == (TINY_PARAMETERS + TINY_EMBEDDING) * 4 == _storage_bytes(untied)


# --- the benchmark (structure only: speed is printed, never asserted) ------------------------

def test_decode_benchmark_returns_the_documented_figures(tiny):
    result = decode_benchmark(tiny, _random_ids((1, 4), seed=5), new_tokens=3, runs=1, warmup_tokens=2,
                              copy_megabytes=4, log=None)
    for key in ["tok_s_cached", "tok_s_generate", "tok_s_uncached", "ratio_vs_generate", "cache_speedup",
                "ttft_s", "decode_s_per_token", "achieved_GB_s", "copy_GB_s"]:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["new_tokens"] == 3 and result["runs"] == 1 and result["prompt_tokens"] == 4
    assert result["ratio_vs_generate"] == pytest.approx(result["tok_s_cached"] / result["tok_s_generate"], rel=0.02)
    json.dumps(result)
    with pytest.raises(ValueError, match="one prompt"):
        decode_benchmark(tiny, _random_ids((2, 4)), new_tokens=3, runs=1, log=None)


def test_decode_benchmark_figures_stay_positive_on_a_slow_machine(tiny, monkeypatch):
    """Every figure keeps significant digits: a busy machine gives small figures, never 0.0. Here each
    generation takes 60 s, the prefill 20 s, and the copy bandwidth is 1 MB/s (the timings are set, so
    nothing depends on this machine's speed)."""
    from cadlab.lm import bench

    timings = iter([60.0, 60.0, 60.0, 20.0])                      # cached, generate, uncached, prefill
    monkeypatch.setattr(bench, "_seconds", lambda fn: (fn(), next(timings))[1])
    monkeypatch.setattr(bench, "copy_bandwidth", lambda megabytes: 0.001)
    monkeypatch.setattr(bench, "kv_cache_bytes", lambda *args, **kwargs: 0)
    result = decode_benchmark(tiny, _random_ids((1, 4), seed=5), new_tokens=3, runs=1, warmup_tokens=2, log=None)
    assert result["tok_s_cached"] == result["tok_s_generate"] == result["tok_s_uncached"] == 0.05   # 3 tokens / 60 s
    assert result["ratio_vs_generate"] == result["cache_speedup"] == 1.0
    assert result["ttft_s"] == 20.0 and result["decode_s_per_token"] == 20.0          # (60 - 20) s / 2 tokens
    assert result["achieved_GB_s"] == 1.814e-05                  # 362,752 weight bytes per 20 s: two decimals gave 0.0
    assert result["copy_GB_s"] == 0.001 and result["weight_MB"] == 0.3628


def test_bench_cli_prints_json_as_last_line(capsys):
    assert main(["decode", "--new-tokens", "2", "--runs", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["new_tokens"] == 2 and "cache_speedup" in result and "ratio_vs_generate" in result
