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
of decode. ``copy_bandwidth`` measures the machine's side of that bound; ``decode_profile``
splits a real step into its matrix products (``nn.Linear``, which do stream near that
bandwidth) and everything else (small ops and Python, which move almost no bytes).

Optimisation: ``LeanDecoder`` runs the same model with fewer, larger ops per layer (one
matrix for q/k/v, one for gate/up, one attention kernel, a RoPE table made once) into a
``StaticKVCache`` allocated once - instead of ``torch.cat`` copying the whole cache per step
and layer, as ``DynamicCache`` and ``append_kv`` do. Same tokens and logits as the library.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from cadlab.lm.anatomy import apply_rope, causal_attention, head_dim_of, repeat_kv, rms_norm
from cadlab.lm.sampling import next_token_logits

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
# One layer's attention with an explicit K/V cache: append_kv, then decode_attention
# ---------------------------------------------------------------------------------------


def append_kv(past, k: torch.Tensor, v: torch.Tensor):
    """The cache update: ``(K, V) = (cat(K_past, k), cat(V_past, v))`` along the sequence axis (dim 2).

    ``past``: None (nothing cached yet: the cache is just ``(k, v)``) or ``(K_past, V_past)``,
    each [b, kv_heads, s_past, d]; ``k, v``: the new tokens' rows [b, kv_heads, s_new, d].
    Returns ``(K, V)``, each [b, kv_heads, s_past + s_new, d], old rows first.
    """
    if past is None:
        return k, v
    k_past, v_past = past
    if k_past.shape[:2] != k.shape[:2] or k_past.shape[-1] != k.shape[-1]:
        raise ValueError(f"past K has shape {tuple(k_past.shape)}; expected [{k.shape[0]}, {k.shape[1]}, seq, "
                         f"{k.shape[-1]}] for this layer and batch.")
    return torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention of the s newest positions against the whole cache, with grouped-query attention.

    ``q``: [b, n_q, s, d], the queries of the last s of the T cached positions; ``keys, values``:
    [b, n_kv, T, d] with T >= s. KV head j serves query heads j*g .. (j+1)*g - 1, g = n_q / n_kv:

        out = softmax(q K^T / sqrt(d) + M) V,   M[i, t] = -inf where t > T - s + i

    (query i sits at position T - s + i and may not see later keys). At a decode step s = 1 and
    M is all zeros: the newest token sees every cached key. Returns [b, n_q, s, d].
    """
    s, T = q.shape[2], keys.shape[2]
    if T < s or q.shape[1] % keys.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and keys {tuple(keys.shape)}: need T >= s and n_q a multiple of n_kv.")
    group = q.shape[1] // keys.shape[1]
    out, _ = causal_attention(q, repeat_kv(keys, group), repeat_kv(values, group), 1.0 / math.sqrt(q.shape[-1]))
    return out


def attention_with_kv(layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, config, past=None):
    """One layer's self-attention on the new tokens only, with our own cache of K and V.

    ``x``: normed input of the new tokens [b, s_new, hidden]; ``cos, sin`` their rotary
    embeddings; ``past``: ``(K, V)`` of all earlier tokens, each [b, kv_heads, s_past, d],
    or None at prefill. Computes q, k, v of the new tokens, rotates q and k by their
    positions, then

        K, V = append_kv(past, k, v)                  K = cat(K_past, k) along the sequence axis
        out = decode_attention(q, K, V) W_o          softmax(q K^T / sqrt(d) + M) V, then W_o

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
    keys, values = append_kv(past, k, v)
    out = decode_attention(q, keys, values)
    return attn.o_proj(out.transpose(1, 2).reshape(b, s, n_q * d)), (keys, values)


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


# ---------------------------------------------------------------------------------------
# Where a decode step's time goes: matrix products against everything else
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def linear_weight_bytes(model) -> int:
    """Bytes of the weights (and biases) of every ``nn.Linear``, shared ones counted once: what the
    matrix products of one decode step read (``lm_head`` included, tied to the embedding or not)."""
    unique = {id(p): p for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


@torch.no_grad()
def decode_profile(model, input_ids: torch.Tensor, steps: int = 16, warmup: int = 4) -> dict:
    """Time decode steps (batch 1, ``DynamicCache``) and split each into its ``nn.Linear`` calls and the rest.

    After a prefill of ``input_ids`` and ``warmup`` untimed decode steps, ``steps`` decode steps
    run twice: once plain (``step_s``: median wall time of a step) and once with forward hooks
    that time every ``nn.Linear`` (q/k/v/o, gate/up/down, lm_head). Per hooked step,
    ``linear_s`` = the sum of its Linear calls and ``other_s`` = step - linear_s: norms, RoPE,
    attention, the cache update, reshapes, masks and the Python between them (hook overhead,
    a few microseconds per call, lands here too). Medians over the steps:

        linear_share  = linear_s / (linear_s + other_s)
        linear_GB_s   = linear_weight_bytes / linear_s      (how fast the matrix products stream)
        step_GB_s     = (weight bytes + cache bytes) / step_s   (the whole step, as ``decode_bandwidth``)
    """
    _check_prompt(input_ids, steps)
    if input_ids.shape[0] != 1:
        raise ValueError("decode_profile times batch 1: input_ids must have shape [1, seq].")
    prompt = input_ids.shape[1]

    def run(record):
        """Prefill, then warmup + steps greedy decode steps; record(step, seconds) after each."""
        cache = DynamicCache(config=model.config)
        ids = next_token_logits(model, input_ids, None, torch.arange(prompt)[None], cache).argmax(-1)[:, None]
        calls.clear()  # the prefill's Linear calls are not a decode step's
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            ids = next_token_logits(model, ids, None, torch.tensor([[prompt + i]]), cache).argmax(-1)[:, None]
            record(i, time.perf_counter() - t0)

    plain, hooked, linear, calls = [], [], [], []
    run(lambda i, seconds: plain.append(seconds) if i >= warmup else None)

    def start(_module, _args):
        calls.append(-time.perf_counter())   # Linear calls never nest: close it in stop

    def stop(_module, _args, _output):
        calls[-1] += time.perf_counter()

    def record(i, seconds):
        if i >= warmup:
            hooked.append(seconds)
            linear.append(sum(calls))
        calls.clear()

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    handles = [h for m in linears for h in (m.register_forward_pre_hook(start), m.register_forward_hook(stop))]
    try:
        run(record)
    finally:
        for handle in handles:
            handle.remove()
    other = [h - lin for h, lin in zip(hooked, linear)]
    step_s, linear_s, other_s = statistics.median(plain), statistics.median(linear), statistics.median(other)
    context = prompt + warmup + steps // 2
    return {"threads": torch.get_num_threads(), "dtype": str(model.dtype).removeprefix("torch."),
            "steps": steps, "linear_calls": len(linears), "step_s": step_s, "hooked_step_s": statistics.median(hooked),
            "linear_s": linear_s, "other_s": other_s, "linear_share": linear_s / (linear_s + other_s),
            "linear_GB_s": linear_weight_bytes(model) / linear_s / 1e9,
            "step_GB_s": decode_bandwidth(model, context, step_s)}


# ---------------------------------------------------------------------------------------
# An optimisation: a pre-allocated cache and fewer, larger ops per decode step
# ---------------------------------------------------------------------------------------


class StaticKVCache:
    """K and V of every layer in two tensors allocated once, [layers, batch, kv_heads, max_len, head_dim].

    ``write(layer, k, v)`` copies the new rows into place at positions ``length .. length + s - 1``
    and returns views of the filled part, [batch, kv_heads, length + s, head_dim]: no new tensor
    and no copy of the old rows per step (``torch.cat`` makes both). ``advance(s)`` moves
    ``length`` on once every layer has written (the layers of one step share positions).
    """

    def __init__(self, config, batch: int, max_len: int, dtype=torch.float32):
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, head_dim_of(config))
        self.keys, self.values = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self.length = 0

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.length + k.shape[2]
        if end > self.keys.shape[3]:
            raise ValueError(f"the cache holds {self.keys.shape[3]} positions; writing {k.shape[2]} more after "
                             f"{self.length} would overflow it: allocate a larger max_len.")
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, s: int) -> None:
        self.length += s


class ConcatKVCache:
    """The same interface over ``append_kv``: every write builds new K, V tensors with ``torch.cat``."""

    def __init__(self, config):
        self.layers = [None] * config.num_hidden_layers
        self.length = 0

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.layers[layer] = append_kv(self.layers[layer], k, v)
        return self.layers[layer]

    def advance(self, s: int) -> None:
        self.length += s


class LeanDecoder:
    """The model's forward pass for generation, written with as few ops per layer as we can:

        h = embed[ids]
        per layer:  x = rms_norm(h);  q, k, v = split(x W_qkv + b_qkv)      one matmul for q, k and v
                    q, k = rope(q), rope(k)        cos/sin looked up in a table made once
                    K, V = cache.write(layer, k, v)
                    h = h + sdpa(q, K, V) W_o      one fused attention kernel (= decode_attention)
                    x = rms_norm(h);  g, u = split(x W_gate_up)            one matmul for gate and up
                    h = h + (silu(g) * u) W_down
        logits = rms_norm(h[:, -1]) W_lm_head^T

    ``fuse=False`` keeps separate q, k, v and gate, up matrices (the same math, more matmuls).
    The fused matrices are concatenated copies, made once in ``__init__``. No padding: every
    row of the batch is a full prompt. The numbers equal the library's (``lean_parity``).
    """

    def __init__(self, model, fuse: bool = True):
        config = self.config = model.config
        self.model, self.fuse = model, fuse
        self.d, self.n_q, self.n_kv = head_dim_of(config), config.num_attention_heads, config.num_key_value_heads
        self.layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
            if fuse:
                qkv = [(torch.cat([q.weight, k.weight, v.weight]),
                        None if q.bias is None else torch.cat([q.bias, k.bias, v.bias]))]
                gate_up = [torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])]
            else:
                qkv = [(m.weight, m.bias) for m in (q, k, v)]
                gate_up = [mlp.gate_proj.weight, mlp.up_proj.weight]
            self.layers.append((layer.input_layernorm.weight, qkv, attn.o_proj.weight,
                                layer.post_attention_layernorm.weight, gate_up, mlp.down_proj.weight))
        positions = torch.arange(config.max_position_embeddings)[None]
        self.cos, self.sin = model.model.rotary_emb(torch.zeros(1, dtype=model.dtype), positions)

    def new_cache(self, batch: int, max_len: int, static: bool = True):
        """An empty ``StaticKVCache`` for ``max_len`` positions, or a ``ConcatKVCache``."""
        return StaticKVCache(self.config, batch, max_len, self.model.dtype) if static else ConcatKVCache(self.config)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """Feed ``ids`` [b, s] (positions ``cache.length`` onwards); float32 logits of the last one, [b, vocab]."""
        b, s = ids.shape
        d, n_q, n_kv, eps = self.d, self.n_q, self.n_kv, self.config.rms_norm_eps
        cos, sin = self.cos[:, cache.length:cache.length + s], self.sin[:, cache.length:cache.length + s]
        h = self.model.model.embed_tokens.weight[ids]
        for i, (w_in, qkv, w_o, w_post, gate_up, w_down) in enumerate(self.layers):
            x = rms_norm(h, w_in, eps)
            if self.fuse:
                q, k, v = F.linear(x, *qkv[0]).split([n_q * d, n_kv * d, n_kv * d], dim=-1)
            else:
                q, k, v = (F.linear(x, w, bias) for w, bias in qkv)
            q = apply_rope(q.view(b, s, n_q, d).transpose(1, 2), cos, sin)
            k = apply_rope(k.view(b, s, n_kv, d).transpose(1, 2), cos, sin)
            keys, values = cache.write(i, k, v.view(b, s, n_kv, d).transpose(1, 2))
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=s > 1, enable_gqa=True)
            h = h + F.linear(out.transpose(1, 2).reshape(b, s, n_q * d), w_o)
            x = rms_norm(h, w_post, eps)
            if self.fuse:
                g, u = F.linear(x, gate_up[0]).chunk(2, dim=-1)
            else:
                g, u = (F.linear(x, w) for w in gate_up)
            h = h + F.linear(F.silu(g) * u, w_down)
        cache.advance(s)
        return F.linear(rms_norm(h[:, -1], self.model.model.norm.weight, eps), self.model.lm_head.weight).float()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, new_tokens: int, static: bool = True):
        """Greedy generation: ``(tokens [b, P + new_tokens], logits [new_tokens, b, vocab], decode seconds)``.

        ``seconds`` holds one wall time per decode step (the prefill is not timed).
        """
        _check_prompt(input_ids, new_tokens)
        cache = self.new_cache(input_ids.shape[0], input_ids.shape[1] + new_tokens, static)
        logits = [self.logits(input_ids, cache)]
        tokens, seconds = [logits[0].argmax(-1)], []
        for _ in range(new_tokens - 1):
            t0 = time.perf_counter()
            logits.append(self.logits(tokens[-1][:, None], cache))
            seconds.append(time.perf_counter() - t0)
            tokens.append(logits[-1].argmax(-1))
        return torch.cat([input_ids, torch.stack(tokens, 1)], 1), torch.stack(logits), seconds


@torch.no_grad()
def library_decode(model, input_ids: torch.Tensor, new_tokens: int):
    """``LeanDecoder.generate``'s counterpart with the library's model and a ``DynamicCache``:
    ``(tokens, logits [new_tokens, b, vocab], decode seconds)``, same greedy loop, same timing."""
    _check_prompt(input_ids, new_tokens)
    cache, (b, prompt) = DynamicCache(config=model.config), input_ids.shape
    logits = [next_token_logits(model, input_ids, None, torch.arange(prompt).expand(b, -1), cache)]
    tokens, seconds = [logits[0].argmax(-1)], []
    for i in range(new_tokens - 1):
        t0 = time.perf_counter()
        logits.append(next_token_logits(model, tokens[-1][:, None], None, torch.full((b, 1), prompt + i), cache))
        seconds.append(time.perf_counter() - t0)
        tokens.append(logits[-1].argmax(-1))
    return torch.cat([input_ids, torch.stack(tokens, 1)], 1), torch.stack(logits), seconds


@torch.no_grad()
def cache_update_seconds(config, context_len: int, static: bool, repeats: int = 5, dtype=torch.float32) -> float:
    """Median seconds to add one token's K and V to every layer of a batch-1 cache that already
    holds ``context_len`` positions: ``StaticKVCache.write`` copies one row into place, while
    ``ConcatKVCache.write`` (``torch.cat``) allocates new K, V and copies every cached row -
    work that grows with the context, at every step. One untimed run first."""
    layers, n_kv, d = config.num_hidden_layers, config.num_key_value_heads, head_dim_of(config)
    k = torch.randn(1, n_kv, 1, d, generator=torch.Generator().manual_seed(0)).to(dtype)
    seconds = []
    for _ in range(repeats + 1):
        if static:
            cache = StaticKVCache(config, 1, context_len + 1, dtype)
            cache.keys.fill_(1.0), cache.values.fill_(1.0)   # touch the pages, as a used cache would have
            cache.length = context_len
        else:
            cache = ConcatKVCache(config)
            cache.layers = [(torch.ones(1, n_kv, context_len, d, dtype=dtype),
                             torch.ones(1, n_kv, context_len, d, dtype=dtype)) for _ in range(layers)]
        t0 = time.perf_counter()
        for layer in range(layers):
            cache.write(layer, k, k)
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds[1:])


# ---------------------------------------------------------------------------------------
# Explorer (notebook 03): cache memory of published configs, from ``kv_cache_bytes``
# ---------------------------------------------------------------------------------------

# The only numbers the cache formula needs, written out from the models' published config.json
# files (nothing is downloaded). ``parameters`` (tied embeddings counted once) is what those configs
# build (tests/test_explorers.py counts them on the meta device); ``context`` is a length worth marking.
PUBLISHED_CACHE_CONFIGS = {
    "Qwen2.5-0.5B-Instruct": dict(
        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, hidden_size=896, head_dim=64,
        parameters=494_032_768, context=32_768, note="max_position_embeddings",
        source="huggingface.co/Qwen/Qwen2.5-0.5B-Instruct config.json (the same numbers as cadlab.lm.models.qwen25_config)"),
    "Qwen2-1.5B (CAD-Recode v1.5's backbone)": dict(
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, hidden_size=1536, head_dim=128,
        parameters=1_543_714_304, context=257 + 768, note="CAD-Recode's prompt (256 points + <|im_start|>) + the demo's max_new_tokens=768",
        source="huggingface.co/Qwen/Qwen2-1.5B config.json: hidden 1536, 28 layers, 12 query / 2 KV heads "
               "(the backbone named by filapro/cad-recode-v1.5; notebook 07, section 14)"),
}


def published_cache_config(name: str):
    """A config-like object (the attributes ``kv_cache_bytes`` reads) for a ``PUBLISHED_CACHE_CONFIGS`` entry."""
    if name not in PUBLISHED_CACHE_CONFIGS:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(PUBLISHED_CACHE_CONFIGS)}.")
    entry = PUBLISHED_CACHE_CONFIGS[name]
    return SimpleNamespace(**{key: value for key, value in entry.items() if key not in ("source", "note")})


def cache_memory_curve(config, tokens, batch: int = 1, dtype=torch.bfloat16) -> dict[str, list[int]]:
    """Cache bytes at each length in ``tokens``: with the model's KV heads (``kv_cache_bytes``) and
    with full multi-head attention (``mha_cache_bytes``), for ``batch`` sequences of ``dtype``.

    Both grow linearly in tokens and batch: bytes = layers * 2 * kv_heads * head_dim * element * tokens * batch.
    Returns ``{"tokens": [...], "bytes": [...], "mha_bytes": [...]}``.
    """
    tokens = [int(t) for t in tokens]
    return {"tokens": tokens,
            "bytes": [kv_cache_bytes(config, t, batch, dtype) for t in tokens],
            "mha_bytes": [mha_cache_bytes(config, t, batch, dtype) for t in tokens]}
