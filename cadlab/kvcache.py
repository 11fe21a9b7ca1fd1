"""The KV cache: what it holds, why it is exact, what it costs in memory, what it buys in time.

A decoder attends from each new token to the keys and values of every earlier token. Those
K and V depend only on the earlier tokens themselves (causal masking), so they never change
once computed: generation can keep them and feed the model one new token per step.

    prefill  (step 0): input = the whole prompt, P tokens   -> every layer stores K, V: [b, kv_heads, P, d]
    decode   (step t): input = 1 new token at position P+t-1 -> every layer appends 1 row:  [b, kv_heads, P+t, d]
                       attention: q [b, heads, 1, d] against the cached K, V

Without the cache step t re-runs all P+t tokens through every layer: O(P+t) work per token
instead of O(1) (plus an attention over P+t keys, which is small next to the weights).

Memory: per token every layer keeps one key and one value vector per KV head, so

    kv_cache_bytes = layers * 2 * kv_heads * head_dim * bytes_per_element * seq_len * batch

Grouped-query attention (GQA) shares each KV head between ``heads / kv_heads`` query heads,
which divides this by the same factor compared with full multi-head attention.

Speed: one decode step must read every weight once (and the whole cache), so at batch 1 its
time is bounded below by (weight bytes + cache bytes) / memory bandwidth - the "roofline"
of decode. ``copy_bandwidth`` measures the machine's side of that bound.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from transformers import DynamicCache

from cadlab.anatomy import apply_rope, causal_attention, head_dim_of, repeat_kv
from cadlab.sampling import next_token_logits

# ---------------------------------------------------------------------------------------
# What DynamicCache holds: prefill, then one row per decode step
# ---------------------------------------------------------------------------------------


def cache_shapes(cache: DynamicCache) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(keys.shape, values.shape)`` of every layer of a ``DynamicCache``: [batch, kv_heads, seq, head_dim]."""
    return [(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in cache.layers]


def cache_nbytes(cache: DynamicCache) -> int:
    """Bytes actually held by the cache's key and value tensors, all layers."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def _check_prompt(input_ids, new_tokens):
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a LongTensor of shape [batch, seq] with seq >= 1, e.g. "
                         "tokenizer(text, return_tensors='pt').input_ids.")
    if not isinstance(new_tokens, int) or new_tokens < 1:
        raise ValueError(f"new_tokens must be an int >= 1, got {new_tokens!r}.")


@torch.no_grad()
def trace_cache(model, input_ids: torch.Tensor, new_tokens: int) -> list[dict]:
    """Greedy generation with a ``DynamicCache``, recording what goes in and what the cache holds.

    One row per forward pass: ``phase`` ("prefill" or "decode"), ``fed`` (shape of the ids
    given to the model), ``positions`` (their position ids), ``cache_len`` (``get_seq_length()``
    afterwards), ``keys``/``values`` (shape of layer 0's tensors afterwards) and ``token``
    (the greedy choice of row 0). No padding: every row of ``input_ids`` is a full prompt.
    """
    _check_prompt(input_ids, new_tokens)
    cache = DynamicCache(config=model.config)
    fed, start, rows = input_ids, 0, []
    for step in range(new_tokens):
        positions = torch.arange(start, start + fed.shape[1]).expand(fed.shape[0], -1)
        logits = next_token_logits(model, fed, None, positions, cache)
        next_ids = logits.argmax(dim=-1)
        keys, values = cache_shapes(cache)[0]
        rows.append({"step": step, "phase": "prefill" if step == 0 else "decode", "fed": tuple(fed.shape),
                     "positions": f"{positions[0, 0].item()}..{positions[0, -1].item()}",
                     "cache_len": cache.get_seq_length(), "keys": keys, "values": values,
                     "token": next_ids[0].item()})
        start += fed.shape[1]
        fed = next_ids[:, None]
    return rows


# ---------------------------------------------------------------------------------------
# One layer's attention with an explicit K/V concatenation
# ---------------------------------------------------------------------------------------


def attention_with_kv(layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, config, past=None):
    """One layer's self-attention on the new tokens only, with our own cache of K and V.

    ``x``: normed input of the new tokens [b, s_new, hidden]; ``cos, sin`` their rotary
    embeddings; ``past``: ``(K, V)`` of all earlier tokens, each [b, kv_heads, s_past, d],
    or None at prefill. Computes q, k, v of the new tokens, rotates q and k by their
    positions, then

        K = cat(K_past, k),  V = cat(V_past, v)          (along the sequence axis)
        out = softmax(q K^T / sqrt(d) + M) V W_o        (M hides keys after each query)

    Returns ``(out [b, s_new, hidden], (K, V))``: the new cache is the old one plus s_new rows.
    """
    attn = layer.self_attn
    b, s, _ = x.shape
    d = head_dim_of(config)
    n_q, n_kv = config.num_attention_heads, config.num_key_value_heads
    q = attn.q_proj(x).view(b, s, n_q, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, s, n_kv, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, s, n_kv, d).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if past is not None:
        k_past, v_past = past
        if k_past.shape[:2] != k.shape[:2] or k_past.shape[-1] != d:
            raise ValueError(f"past K has shape {tuple(k_past.shape)}; expected [{b}, {n_kv}, seq, {d}] "
                             "for this layer and batch.")
        k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
    out, _ = causal_attention(q, repeat_kv(k, n_q // n_kv), repeat_kv(v, n_q // n_kv), 1.0 / math.sqrt(d))
    return attn.o_proj(out.transpose(1, 2).reshape(b, s, n_q * d)), (k, v)


@torch.no_grad()
def explicit_attention_parity(model, input_ids: torch.Tensor, new_tokens: int, layer_index: int = 0) -> list[dict]:
    """Run greedy cached generation with the library and, beside it, layer ``layer_index``'s
    attention with ``attention_with_kv`` and our own (K, V); compare at every step.

    Hooks on the library's attention module capture its input (normed hidden states and
    rotary cos/sin) and its output. Each row: ``phase``, ``cache_len``, ``out_diff`` (max
    |our output - library output|), ``k_diff``/``v_diff`` (max |our K, V - cache.layers[i]|).
    No padding (every row of ``input_ids`` is a full prompt).
    """
    _check_prompt(input_ids, new_tokens)
    layers = model.model.layers
    if not -len(layers) <= layer_index < len(layers):
        raise ValueError(f"layer_index {layer_index} is out of range: the model has {len(layers)} layers.")
    layer_index %= len(layers)
    attn, seen = layers[layer_index].self_attn, {}

    def before(_module, args, kwargs):
        seen["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        seen["cos_sin"] = kwargs["position_embeddings"]

    def after(_module, _args, output):
        seen["out"] = output[0]

    handles = [attn.register_forward_pre_hook(before, with_kwargs=True), attn.register_forward_hook(after)]
    try:
        cache, ours, fed, start, rows = DynamicCache(config=model.config), None, input_ids, 0, []
        for step in range(new_tokens):
            positions = torch.arange(start, start + fed.shape[1]).expand(fed.shape[0], -1)
            next_ids = next_token_logits(model, fed, None, positions, cache).argmax(dim=-1)
            out, ours = attention_with_kv(layers[layer_index], seen["x"], *seen["cos_sin"], model.config, ours)
            library = cache.layers[layer_index]
            rows.append({"step": step, "phase": "prefill" if step == 0 else "decode",
                         "cache_len": cache.get_seq_length(),
                         "out_diff": (out - seen["out"]).abs().max().item(),
                         "k_diff": (ours[0] - library.keys).abs().max().item(),
                         "v_diff": (ours[1] - library.values).abs().max().item()})
            start += fed.shape[1]
            fed = next_ids[:, None]
    finally:
        for handle in handles:
            handle.remove()
    return rows


# ---------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------


def kv_cache_bytes(config, seq_len: int, batch: int = 1, dtype=torch.bfloat16) -> int:
    """layers * 2 (K and V) * kv_heads * head_dim * bytes per element * seq_len * batch."""
    if not isinstance(seq_len, int) or seq_len < 0 or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"seq_len must be an int >= 0 and batch an int >= 1, got {seq_len!r}, {batch!r}.")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}.")
    element = torch.empty((), dtype=dtype).element_size()
    return (config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim_of(config)
            * element * seq_len * batch)


def mha_cache_bytes(config, seq_len: int, batch: int = 1, dtype=torch.bfloat16) -> int:
    """The cache the same model would need with full multi-head attention (one KV head per query head)."""
    return kv_cache_bytes(config, seq_len, batch, dtype) * config.num_attention_heads // config.num_key_value_heads


def weight_bytes(model) -> int:
    """Bytes of the model's parameters, tied weights counted once: what one decode step reads."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


# ---------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def step_times(model, input_ids: torch.Tensor, new_tokens: int, use_cache: bool):
    """Greedy generation (no padding, no EOS stop), timing every forward pass separately.

    Returns ``(tokens, seconds)``: prompt + new tokens, and one duration per generated token.
    ``seconds[0]`` is the time to first token (the prefill); with the cache, later entries are
    decode steps of one token; without it, step t re-runs all P + t tokens.
    """
    _check_prompt(input_ids, new_tokens)
    cache = DynamicCache(config=model.config) if use_cache else None
    tokens, fed, seconds = input_ids, input_ids, []
    for _ in range(new_tokens):
        start = tokens.shape[1] - fed.shape[1]
        positions = torch.arange(start, tokens.shape[1]).expand(fed.shape[0], -1)
        t0 = time.perf_counter()
        next_ids = next_token_logits(model, fed, None, positions, cache).argmax(dim=-1)
        seconds.append(time.perf_counter() - t0)
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
        fed = next_ids[:, None] if use_cache else tokens
    return tokens, seconds


@torch.no_grad()
def step_cost(model, lengths, repeats: int = 3, seed: int = 0) -> dict[str, list[float]]:
    """Median seconds of one generation step at each context length L, with and without the cache.

    ``uncached[i]``: a forward pass over L + 1 tokens (what the uncached loop does to produce
    token L + 1). ``cached[i]``: one decode token with L tokens already in the cache. Random
    token ids (seeded): the cost of a step does not depend on which tokens they are.
    """
    generator = torch.Generator().manual_seed(seed)
    result = {"length": list(lengths), "uncached": [], "cached": []}
    for length in lengths:
        ids = torch.randint(0, model.config.vocab_size, (1, length + 1), generator=generator)
        positions = torch.arange(length + 1)[None]
        uncached, cached = [], []
        cache = DynamicCache(config=model.config)
        next_token_logits(model, ids[:, :length], None, positions[:, :length], cache)
        for _ in range(repeats):
            t0 = time.perf_counter()
            next_token_logits(model, ids, None, positions)
            uncached.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            next_token_logits(model, ids[:, length:], None, positions[:, length:], cache)
            cached.append(time.perf_counter() - t0)
            cache.crop(-1)  # drop the token just added, so every repeat sees L cached tokens
        result["uncached"].append(statistics.median(uncached))
        result["cached"].append(statistics.median(cached))
    return result


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """The machine's memory bandwidth in GB/s, measured by copying a large tensor.

    A copy reads and writes every byte once, so bandwidth = 2 * size / time (median of
    ``repeats``; the buffer is far larger than any CPU cache).
    """
    n = megabytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)  # touch the pages once
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(seconds) / 1e9


def decode_bandwidth(model, context_len: int, seconds_per_token: float) -> float:
    """GB/s a decode step achieves: (weight bytes + cache bytes at ``context_len``) / its time."""
    cache = kv_cache_bytes(model.config, context_len, dtype=model.dtype)
    return (weight_bytes(model) + cache) / seconds_per_token / 1e9
