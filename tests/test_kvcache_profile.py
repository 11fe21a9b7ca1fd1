"""Where decode time goes (structure only: no timing is asserted) and the lean decoder with a
pre-allocated cache, which must give the library's tokens and logits."""

import pytest
import torch

from cadlab.lm.kvcache import (
    ConcatKVCache,
    LeanDecoder,
    StaticKVCache,
    append_kv,
    cache_update_seconds,
    decode_profile,
    library_decode,
    linear_weight_bytes,
    torch_threads,
)
from cadlab.lm.models import tiny_qwen2


@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen2()


def _ids(shape, seed=0):
    return torch.randint(3, 256, shape, generator=torch.Generator().manual_seed(seed))


# --- profiling -----------------------------------------------------------------------------------

def test_linear_weight_bytes_counts_every_projection_and_the_tied_head_once(tiny):
    c = tiny.config                     # hidden 64, 4 query / 2 KV heads of 16, MLP 128, vocab 256, 2 layers
    q, kv = 4 * 16, 2 * 16
    per_layer = (64 * q + q) + 2 * (64 * kv + kv) + q * 64 + 3 * 64 * 128   # q, k, v with biases; o; gate, up, down
    assert linear_weight_bytes(tiny) == 4 * (c.num_hidden_layers * per_layer + 256 * 64)


def test_decode_profile_splits_each_step_into_linear_and_other(tiny):
    result = decode_profile(tiny, _ids((1, 5)), steps=3, warmup=1)
    assert result["steps"] == 3 and result["dtype"] == "float32"
    assert result["linear_calls"] == 2 * 7 + 1            # q k v o gate up down per layer, plus lm_head
    for key in ("step_s", "hooked_step_s", "linear_s", "other_s", "linear_GB_s", "step_GB_s"):
        assert result[key] > 0, key
    assert 0 < result["linear_share"] < 1
    assert result["linear_s"] < result["hooked_step_s"]
    assert result["linear_GB_s"] == pytest.approx(linear_weight_bytes(tiny) / result["linear_s"] / 1e9)
    with pytest.raises(ValueError, match="batch 1"):
        decode_profile(tiny, _ids((2, 5)), steps=2)


def test_decode_profile_leaves_no_hooks_behind(tiny):
    decode_profile(tiny, _ids((1, 4)), steps=2, warmup=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.modules())


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# --- the pre-allocated cache ----------------------------------------------------------------------

def test_static_cache_writes_in_place_and_matches_append_kv(tiny):
    static, concat = StaticKVCache(tiny.config, 2, 10), ConcatKVCache(tiny.config)
    storage = static.keys.untyped_storage().data_ptr()
    generator = torch.Generator().manual_seed(1)
    reference = None
    for s in (4, 1, 1, 3):
        k, v = torch.randn(2, 2, s, 16, generator=generator), torch.randn(2, 2, s, 16, generator=generator)
        keys, values = static.write(1, k, v)
        reference = append_kv(reference, k, v)
        assert torch.equal(keys, reference[0]) and torch.equal(values, reference[1])
        assert all(torch.equal(a, b) for a, b in zip(concat.write(1, k, v), reference))
        assert keys.untyped_storage().data_ptr() == storage   # a view into the tensor allocated at the start
        static.advance(s), concat.advance(s)
    assert static.length == concat.length == 9
    with pytest.raises(ValueError, match="overflow"):
        static.write(0, torch.zeros(2, 2, 2, 16), torch.zeros(2, 2, 2, 16))


# --- the lean decoder gives the library's tokens and logits ----------------------------------------

@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("static", [True, False])
def test_lean_decoder_equals_the_library_tiny(tiny, fuse, static):
    ids = _ids((2, 6), seed=2)
    tokens, logits, seconds = library_decode(tiny, ids, 8)
    lean_tokens, lean_logits, lean_seconds = LeanDecoder(tiny, fuse=fuse).generate(ids, 8, static=static)
    assert torch.equal(lean_tokens, tokens)
    assert lean_logits.shape == logits.shape == (8, 2, 256)
    assert (lean_logits - logits).abs().max().item() < 1e-5
    assert len(seconds) == len(lean_seconds) == 7


def test_library_decode_is_greedy_generation(tiny):
    from cadlab.lm.sampling import generate

    ids = _ids((1, 5), seed=3)
    tokens, _, _ = library_decode(tiny, ids, 6)
    assert torch.equal(tokens, generate(tiny, ids, max_new_tokens=6, temperature=0.0))


def test_lean_decoder_equals_the_library_offline(offline_lm):
    model, tokenizer = offline_lm
    ids = tokenizer(["The capital of France is", "Water boils at a temperature"], return_tensors="pt").input_ids
    tokens, logits, _ = library_decode(model, ids, 12)
    for fuse in (True, False):
        lean_tokens, lean_logits, _ = LeanDecoder(model, fuse=fuse).generate(ids, 12)
        assert torch.equal(lean_tokens, tokens)
        assert (lean_logits - logits).abs().max().item() < 1e-3


def test_lean_decoder_bf16_tiny():
    model = tiny_qwen2().to(torch.bfloat16)
    ids = _ids((1, 5), seed=4)
    tokens, logits, _ = library_decode(model, ids, 6)
    lean_tokens, lean_logits, _ = LeanDecoder(model).generate(ids, 6)
    assert torch.equal(lean_tokens, tokens)
    assert (lean_logits - logits).abs().max().item() < 1e-2


def test_cache_update_seconds_runs_for_both_caches(tiny):
    for static in (True, False):
        assert cache_update_seconds(tiny.config, 32, static, repeats=2) > 0
