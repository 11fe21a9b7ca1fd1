"""A Qwen2/Llama decoder taken apart: every step of the forward pass written out by hand.

``manual_forward(model, input_ids)`` recomputes ``model(input_ids).logits`` from the
model's own weights with nothing but tensor arithmetic:

    h = embed_tokens[input_ids]
    for each layer:
        x = rms_norm(h) * w_in                      # input_layernorm
        q, k, v = x W_q + b_q, x W_k + b_k, x W_v + b_v   (biases: Qwen2 only)
        q, k = rope(q), rope(k)                     # rotate pairs of dims by position * freq (rope_cos_sin)
        k, v = repeat_kv(k), repeat_kv(v)           # GQA: each KV head serves n_q/n_kv query heads
        a = softmax(q k^T / sqrt(d) + causal_mask) v
        h = h + a W_o                               # residual
        x = rms_norm(h) * w_post                    # post_attention_layernorm
        h = h + (silu(x W_gate) * (x W_up)) W_down  # SwiGLU MLP, residual
    logits = rms_norm(h) * w_final @ W_lm_head^T

The helpers are the lesson; the notebook proves each equal to the library.
"""

from __future__ import annotations

import math
from collections import Counter

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in float32 like the library."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: rotate each pair (x_i, x_{i+d/2}) by angle position * freq_i.

    ``x``: [batch, heads, seq, head_dim]; ``cos``/``sin``: [batch, seq, head_dim] as returned by
    ``rope_cos_sin`` (or, identically, by the library's ``model.model.rotary_emb(x, position_ids)``).
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """The RoPE inverse frequencies theta^(-2i/d) for i = 0 .. d/2 - 1."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype=torch.float32):
    """The RoPE angles as (cos, sin), each [batch, seq, head_dim].

    Position m and pair i get the angle m * f_i with f_i = theta^(-2i/d) (``rope_frequencies``).
    ``rotate_half`` pairs dimension i with i + d/2, so the d/2 angles are laid out twice,
    [m f_0 .. m f_{d/2-1}, m f_0 .. m f_{d/2-1}]. Computed in float32, then cast to ``dtype``.
    """
    freqs = rope_frequencies(head_dim, theta).to(position_ids.device)
    angles = position_ids[..., None].float() * freqs          # [batch, seq, d/2]
    angles = torch.cat((angles, angles), dim=-1)              # [batch, seq, d]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_theta_of(config) -> float:
    """The RoPE base theta of a config; only plain RoPE (no scaling variant) is written out here."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"rope_type {rope['rope_type']!r}: cadlab.lm.anatomy writes out plain RoPE only "
                                  "(rope_type 'default'); scaled variants change the frequencies.")
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: [b, n_kv, s, d] -> [b, n_kv * n_rep, s, d].

    KV head j is shared by query heads j*n_rep ... (j+1)*n_rep - 1.
    """
    return x.repeat_interleave(n_rep, dim=1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """softmax(q k^T * scale + M) v with M = -inf above the diagonal. Returns (output, weights)."""
    scores = (q @ k.transpose(-2, -1)) * scale
    q_len, k_len = scores.shape[-2:]
    future = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
    scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v, weights


def head_dim_of(config) -> int:
    """Per-head width: ``config.head_dim`` when set, else hidden_size / num_attention_heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def attention_block(layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, config):
    """One layer's self-attention on the normed input ``x`` [b, s, hidden]. Returns (out, weights)."""
    attn = layer.self_attn
    b, s, _ = x.shape
    d = head_dim_of(config)
    n_q, n_kv = config.num_attention_heads, config.num_key_value_heads
    q = attn.q_proj(x).view(b, s, n_q, d).transpose(1, 2)   # [b, n_q, s, d]
    k = attn.k_proj(x).view(b, s, n_kv, d).transpose(1, 2)  # [b, n_kv, s, d]
    v = attn.v_proj(x).view(b, s, n_kv, d).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = repeat_kv(k, n_q // n_kv), repeat_kv(v, n_q // n_kv)
    out, weights = causal_attention(q, k, v, scale=1.0 / math.sqrt(d))
    out = out.transpose(1, 2).reshape(b, s, n_q * d)
    return attn.o_proj(out), weights


def mlp_block(layer, x: torch.Tensor) -> torch.Tensor:
    """SwiGLU: down(silu(gate(x)) * up(x)), with silu(z) = z * sigmoid(z)."""
    mlp = layer.mlp
    gate = mlp.gate_proj(x)
    return mlp.down_proj(gate * torch.sigmoid(gate) * mlp.up_proj(x))


def decoder_layer(layer, h: torch.Tensor, cos, sin, config) -> torch.Tensor:
    """One pre-norm decoder layer: h + attn(norm(h)), then + mlp(norm(h))."""
    eps = config.rms_norm_eps
    attn_out, _ = attention_block(layer, rms_norm(h, layer.input_layernorm.weight, eps), cos, sin, config)
    h = h + attn_out
    return h + mlp_block(layer, rms_norm(h, layer.post_attention_layernorm.weight, eps))


@torch.no_grad()
def manual_forward(model, input_ids: torch.Tensor, return_hidden_states: bool = False):
    """Recompute ``model(input_ids).logits`` step by step (no padding; batch allowed).

    With ``return_hidden_states=True`` returns ``(logits, hidden)`` where ``hidden[i]`` is the
    residual stream after i layers (``hidden[0]`` = embeddings), for the logit lens.
    """
    config, backbone = model.config, model.model
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
    h = backbone.embed_tokens.weight[input_ids]
    cos, sin = rope_cos_sin(position_ids, head_dim_of(config), rope_theta_of(config), dtype=h.dtype)
    hidden = [h]
    for layer in backbone.layers:
        h = decoder_layer(layer, h, cos, sin, config)
        hidden.append(h)
    logits = rms_norm(h, backbone.norm.weight, config.rms_norm_eps) @ model.lm_head.weight.T
    return (logits, hidden) if return_hidden_states else logits


@torch.no_grad()
def logit_lens(model, hidden_states: list[torch.Tensor], position: int = -1, k: int = 1):
    """Read each layer's residual stream through the final norm and lm_head.

    Returns a [n_layers + 1, k] tensor of top-k token ids at ``position`` of the first row:
    what the model "would say" if it stopped after 0, 1, ... L layers.
    """
    eps = model.config.rms_norm_eps
    rows = [rms_norm(h[0, position], model.model.norm.weight, eps) @ model.lm_head.weight.T
            for h in hidden_states]
    return torch.stack(rows).topk(k, dim=-1).indices


def parameter_breakdown(model) -> dict[str, int]:
    """Parameters per kind of component, counting tied weights once. Works on the meta device."""
    counts: Counter[str] = Counter()
    seen = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if "embed_tokens" in name:
            kind = "embedding (tied with lm_head)" if model.config.tie_word_embeddings else "embedding"
        elif "lm_head" in name:
            kind = "lm_head"
        elif ".self_attn." in name:
            kind = "attention (q, k, v, o)"
        elif ".mlp." in name:
            kind = "MLP (gate, up, down)"
        else:
            kind = "RMSNorm weights"
        counts[kind] += parameter.numel()
    return dict(counts)


def architecture_summary(config) -> dict[str, object]:
    """The numbers that define a Llama/Qwen2 decoder, read from its config."""
    rope = getattr(config, "rope_parameters", None) or {}
    return {
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden size": config.hidden_size,
        "MLP size": config.intermediate_size,
        "query heads": config.num_attention_heads,
        "KV heads": config.num_key_value_heads,
        "head dim": head_dim_of(config),
        "vocabulary": config.vocab_size,
        "tied embeddings": bool(config.tie_word_embeddings),
        "RoPE theta": rope.get("rope_theta"),
        "RMSNorm eps": config.rms_norm_eps,
        "q/k/v biases": bool(getattr(config, "attention_bias", config.model_type == "qwen2")),
        "context": config.max_position_embeddings,
    }


# ---------------------------------------------------------------------------------------
# Explorers (notebook 01): the numbers behind the widgets, computed once per prompt
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def lens_top_tokens(model, hidden_states: list[torch.Tensor], layer: int, position: int, k: int = 5):
    """The logit lens at one place: top-``k`` ``(token ids, probabilities)`` after ``layer`` layers.

    p = softmax(rms_norm(h_layer[position]) * w_final @ W_lm_head^T), on the first row of
    ``hidden_states`` (from ``manual_forward(..., return_hidden_states=True)``; ``hidden_states[0]``
    is the embeddings, ``hidden_states[-1]`` the last layer's output, whose top token is the
    model's own prediction). ``position`` may be negative, as in Python.
    """
    n_layers, seq = len(hidden_states) - 1, hidden_states[0].shape[1]
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be between 0 (the embeddings) and {n_layers}, got {layer}.")
    if not -seq <= position < seq:
        raise ValueError(f"position must index one of the {seq} tokens, got {position}.")
    h = rms_norm(hidden_states[layer][0, position], model.model.norm.weight, model.config.rms_norm_eps)
    probabilities = torch.softmax((h @ model.lm_head.weight.T).float(), dim=-1)
    top = probabilities.topk(k)
    return top.indices, top.values


@torch.no_grad()
def attention_weights(model, hidden_states: list[torch.Tensor], layer: int) -> torch.Tensor:
    """[heads, seq, seq] attention weights of ``layer`` (0-based) on the first row of ``hidden_states``.

    Recomputed from the residual stream entering that layer: ``attention_block`` on
    ``rms_norm(hidden_states[layer])`` with the RoPE angles of positions 0..seq-1. Row q of head h
    is softmax over keys 0..q of q_q . k_k / sqrt(d): each row sums to 1, the upper triangle is 0.
    """
    n_layers = len(hidden_states) - 1
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be between 0 and {n_layers - 1}, got {layer}.")
    config = model.config
    block = model.model.layers[layer]
    h = hidden_states[layer][:1]
    cos, sin = rope_cos_sin(torch.arange(h.shape[1])[None], head_dim_of(config), rope_theta_of(config), dtype=h.dtype)
    x = rms_norm(h, block.input_layernorm.weight, config.rms_norm_eps)
    return attention_block(block, x, cos, sin, config)[1][0]
