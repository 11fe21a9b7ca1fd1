"""Self-checks for the exercises of 01_qwen25_layers.ipynb (RMSNorm, GQA, parameter counting)."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, repeat_kv

from cadlab.exercises import attempted


def check_rms_norm(fn) -> bool:
    """``fn(x, weight, eps)`` must equal the library's Qwen2RMSNorm (fp32 and bf16)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=generator)
    weight = torch.randn(16, generator=generator)
    if not attempted(fn, x, weight, 1e-6):
        return False
    for dtype, eps, tol in [(torch.float32, 1e-6, 1e-5), (torch.float32, 1e-1, 1e-5), (torch.bfloat16, 1e-6, 1e-2)]:
        norm = Qwen2RMSNorm(16, eps=eps).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
            expected = norm(x.to(dtype))
        got = fn(x.to(dtype), norm.weight.detach(), eps)
        assert got.shape == expected.shape, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        diff = (got.float() - expected.float()).abs().max().item()
        assert diff <= tol, (f"{dtype} eps={eps}: max |difference| {diff:.2e} > {tol:g}. Divide by "
                             "sqrt(mean(x**2) over the last dim + eps), then multiply by weight.")
    print("check_rms_norm: equal to Qwen2RMSNorm in float32 and bfloat16 ✓")
    return True


def check_repeat_kv(fn) -> bool:
    """``fn(x, n_rep)`` must turn [b, n_kv, s, d] into [b, n_kv*n_rep, s, d] like the library."""
    x = torch.randn(2, 3, 4, 8, generator=torch.Generator().manual_seed(1))
    if not attempted(fn, x, 2):
        return False
    for n_rep in (1, 2, 7):
        got, expected = fn(x, n_rep), repeat_kv(x, n_rep)
        assert got.shape == expected.shape, f"n_rep={n_rep}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        assert torch.equal(got, expected), (f"n_rep={n_rep}: right shape, wrong order. Query head h must use "
                                            "KV head h // n_rep: repeat each KV head n_rep times in place.")
    print("check_repeat_kv: equal to transformers' repeat_kv for n_rep = 1, 2, 7 ✓")
    return True


def check_parameter_count(fn) -> bool:
    """``fn(config)`` must return the exact parameter count of a Qwen2 model built from config."""
    from cadlab.models import qwen25_config

    configs = {
        "Qwen2.5-0.5B": qwen25_config(),
        "untied, 4 KV heads": Qwen2Config(vocab_size=1000, hidden_size=128, intermediate_size=320,
                                          num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4,
                                          tie_word_embeddings=False),
        "tied, 1 KV head": Qwen2Config(vocab_size=500, hidden_size=96, intermediate_size=200,
                                       num_hidden_layers=5, num_attention_heads=6, num_key_value_heads=1,
                                       tie_word_embeddings=True),
    }
    if not attempted(fn, configs["Qwen2.5-0.5B"]):
        return False
    for name, config in configs.items():
        with torch.device("meta"):
            expected = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
        got = fn(config)
        assert got == expected, (f"{name}: you counted {got:,}, the model has {expected:,} "
                                 f"(difference {got - expected:+,}). Remember q/k/v biases, the KV heads' "
                                 "width, two RMSNorms per layer plus a final one, and tied embeddings.")
    print("check_parameter_count: exact for Qwen2.5-0.5B (494,032,768) and two other configs ✓")
    return True
