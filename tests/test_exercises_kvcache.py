"""The self-checks of notebook 03: the reference passes, a stub is "not attempted", and every
plausible wrong answer fails. The notebook's stored solutions pass in a fresh namespace."""

import math

import pytest
import torch

from cadlab.exercises.kvcache import check_append_kv, check_decode_attention, check_kv_cache_bytes
from cadlab.lm.anatomy import head_dim_of
from cadlab.lm.kvcache import append_kv, decode_attention, kv_cache_bytes


def _stub(*_args):
    raise NotImplementedError


# --- append_kv ---------------------------------------------------------------------------------

def _cat(past, k, v, dim=2, new_first=False):
    if past is None:
        return k, v
    pairs = [(k, past[0]), (v, past[1])] if new_first else [(past[0], k), (past[1], v)]
    return tuple(torch.cat(pair, dim=dim) for pair in pairs)


APPEND_WRONG = {
    "heads axis (dim=1)": lambda past, k, v: _cat(past, k, v, dim=1),
    "batch axis (dim=0)": lambda past, k, v: _cat(past, k, v, dim=0),
    "head_dim axis (dim=-1)": lambda past, k, v: _cat(past, k, v, dim=-1),
    "new rows first": lambda past, k, v: _cat(past, k, v, new_first=True),
    "keeps only the new rows": lambda past, k, v: (k, v),
    "V grows with k": lambda past, k, v: (k, v) if past is None else (torch.cat([past[0], k], 2),
                                                                          torch.cat([past[1], k], 2)),
    "K and V swapped": lambda past, k, v: (v, k) if past is None else (torch.cat([past[1], v], 2),
                                                                          torch.cat([past[0], k], 2)),
}


# --- decode_attention --------------------------------------------------------------------------

def _attention(q, keys, values, *, scale=None, tile=False, mask="offset", softmax_dim=-1):
    group = q.shape[1] // keys.shape[1]
    if tile:   # KV heads 0, 1, 0, 1, ... instead of 0, 0, 0, 1, 1, 1
        keys, values = keys.repeat(1, group, 1, 1), values.repeat(1, group, 1, 1)
    else:
        keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    scores = q @ keys.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    s, t = q.shape[2], keys.shape[2]
    if mask == "offset":
        scores = scores.masked_fill(torch.ones(s, t, dtype=torch.bool).triu(t - s + 1), float("-inf"))
    elif mask == "square":   # as if the queries were the first s positions, not the last
        scores = scores.masked_fill(torch.ones(s, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(dim=softmax_dim) @ values


def _no_repeat(q, keys, values):
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ values


ATTENTION_WRONG = {
    "no scale": lambda q, k, v: _attention(q, k, v, scale=1.0),
    "scale 1/d instead of 1/sqrt(d)": lambda q, k, v: _attention(q, k, v, scale=1 / q.shape[-1]),
    "KV heads tiled (repeat) instead of repeated (repeat_interleave)": lambda q, k, v: _attention(q, k, v, tile=True),
    "KV heads not repeated at all": _no_repeat,
    "no causal mask": lambda q, k, v: _attention(q, k, v, mask=None),
    "causal mask that ignores the cached positions (triu(1))": lambda q, k, v: _attention(q, k, v, mask="square"),
    "softmax over the queries": lambda q, k, v: _attention(q, k, v, softmax_dim=-2),
}


def test_the_reference_attention_helper_is_right():
    """The wrong answers above are small edits of a right one: make sure that one is right."""
    generator = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(1, 6, 3, 8, generator=generator), torch.randn(1, 2, 7, 8, generator=generator), \
        torch.randn(1, 2, 7, 8, generator=generator)
    assert torch.allclose(_attention(q, k, v), decode_attention(q, k, v), atol=1e-6)


def test_decode_attention_equals_sdpa_for_one_new_token_and_for_a_causal_chunk():
    generator = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(2, 6, 1, 8, generator=generator), torch.randn(2, 3, 5, 8, generator=generator), \
        torch.randn(2, 3, 5, 8, generator=generator)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert torch.allclose(decode_attention(q, k, v), sdpa, atol=1e-6)
    # a chunk of s tokens at the end of the cache = the last s rows of full causal attention over the cache
    q_all = torch.randn(2, 6, 5, 8, generator=generator)
    full = torch.nn.functional.scaled_dot_product_attention(q_all, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(decode_attention(q_all[:, :, -2:], k, v), full[:, :, -2:], atol=1e-6)
    with pytest.raises(ValueError, match="T >= s"):
        decode_attention(q_all, k[:, :, :3], v[:, :, :3])


# --- kv_cache_bytes ----------------------------------------------------------------------------

def _bytes(config, seq_len, batch, dtype, *, heads="kv", factor=2, head_dim="config", element=None, layers=True,
           use_batch=True):
    n = config.num_key_value_heads if heads == "kv" else config.num_attention_heads
    d = head_dim_of(config) if head_dim == "config" else config.hidden_size // config.num_attention_heads
    size = element or torch.empty((), dtype=dtype).element_size()
    return ((config.num_hidden_layers if layers else 1) * factor * n * d * size * seq_len
            * (batch if use_batch else 1))


BYTES_WRONG = {
    "query heads instead of KV heads (forgets GQA)": lambda c, s, b, t: _bytes(c, s, b, t, heads="query"),
    "K only (no factor 2)": lambda c, s, b, t: _bytes(c, s, b, t, factor=1),
    "head_dim = hidden / heads even when config.head_dim is set": lambda c, s, b, t: _bytes(c, s, b, t,
                                                                                            head_dim="hidden"),
    "2 bytes per element whatever the dtype": lambda c, s, b, t: _bytes(c, s, b, t, element=2),
    "one layer": lambda c, s, b, t: _bytes(c, s, b, t, layers=False),
    "forgets the batch": lambda c, s, b, t: _bytes(c, s, b, t, use_batch=False),
}


def test_the_reference_bytes_helper_is_right():
    from cadlab.lm.models import qwen25_config

    assert _bytes(qwen25_config(), 32_768, 2, torch.bfloat16) == kv_cache_bytes(qwen25_config(), 32_768, 2)


# --- each check: passes the library unit, reports a stub, fails every wrong answer -------------

CHECKS = {"append_kv": (check_append_kv, append_kv, APPEND_WRONG),
          "decode_attention": (check_decode_attention, decode_attention, ATTENTION_WRONG),
          "kv_cache_bytes": (check_kv_cache_bytes, kv_cache_bytes, BYTES_WRONG)}
WRONG_ANSWERS = [(unit, wrong) for unit, (_, _, wrongs) in CHECKS.items() for wrong in wrongs]


@pytest.mark.parametrize("unit", CHECKS)
def test_check_passes_the_library_unit(unit):
    check, reference, _ = CHECKS[unit]
    assert check(reference) is True


@pytest.mark.parametrize("unit", CHECKS)
def test_check_reports_a_stub_as_not_attempted(unit, capsys):
    check, _, _ = CHECKS[unit]
    assert check(_stub) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("unit, wrong", WRONG_ANSWERS)
def test_check_fails_a_wrong_answer(unit, wrong, capsys):
    """A wrong value raises AssertionError; a wrong shape, or a function that raises, prints one line and gives False."""
    check, _, wrongs = CHECKS[unit]
    try:
        result = check(wrongs[wrong])
    except AssertionError:
        return
    assert result is False and capsys.readouterr().out.startswith(f"check_{unit}: ")
