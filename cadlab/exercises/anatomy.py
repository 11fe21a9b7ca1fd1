"""Self-checks for the exercises of 01_qwen25_layers.ipynb (parameter counting, GQA, RMSNorm, RoPE).

Each check's reference is the function the notebook teaches in ``cadlab.lm.anatomy`` (itself proven
equal to transformers in tests/test_anatomy.py), run on several inputs, including ones that
catch the usual mistakes (a missing eps, tiled instead of repeated heads, forgotten biases,
interleaved RoPE angles).
"""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_pair, expect_tensor
from cadlab.lm import anatomy
from cadlab.lm.models import qwen25_config


@exercise_check
def check_rms_norm(fn) -> bool:
    """``fn(x, weight, eps)`` must equal ``anatomy.rms_norm`` in float32 (two eps), bfloat16 and float16.

    The float32 cases check the formula. The half-precision cases check the dtype handling: an answer
    that normalizes in the input's own dtype (no float32 upcast) is off in bfloat16, and in float16 its
    ``x ** 2`` overflows (past 65,504, i.e. |x| > 256) to inf, which turns the output into zeros.
    Once float32 matches, a half-precision failure is reported as what it is: the missing upcast.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=generator)
    weight = torch.randn(16, generator=generator)
    if not attempted(fn, x, weight, 1e-6):
        return False
    # (dtype, scale of x, eps, tolerance); float16 with |x| in the hundreds, as in a real residual stream
    for dtype, scale, eps, tol in [(torch.float32, 1.0, 1e-6, 1e-5), (torch.float32, 1.0, 1e-1, 1e-5),
                                   (torch.bfloat16, 1.0, 1e-6, 1e-2), (torch.float16, 300.0, 1e-6, 1e-2)]:
        x_in, w_in = (scale * x).to(dtype), weight.to(dtype)
        expected = anatomy.rms_norm(x_in, w_in, eps)
        label = f"{dtype} input" + (f" (|x| up to {x_in.abs().max().item():.0f})" if scale != 1.0 else "") + f", eps={eps}"
        with case(label):
            got = expect_tensor(fn(x_in, w_in, eps), tuple(x.shape), dtype,
                                hint="like x: same shape, same dtype - cast back to the input's dtype")
        diff = (got.float() - expected.float()).abs().max().item()
        if dtype == torch.float32:
            assert diff <= tol, (f"{dtype} eps={eps}: max |difference| {diff:.2e} > {tol:g}. Divide by "
                                 "sqrt(mean(x**2) over the last dim + eps), then multiply by weight.")
        else:
            overflow = (" In float16, x**2 overflows past 65,504 (|x| > 256) and becomes inf."
                        if dtype == torch.float16 else "")
            assert diff <= tol, (f"{label}: max |difference| {diff:.2e} > {tol:g}, although float32 matched: the "
                                 f"formula is right, the precision is not.{overflow} Upcast first: x32 = x.float(), "
                                 "normalize x32, cast the result back with .to(x.dtype), then multiply by weight.")
    print("check_rms_norm: equal to anatomy.rms_norm (= Qwen2RMSNorm) in float32 (eps 1e-6, 0.1), bfloat16 "
          "and float16 ✓")
    return True


@exercise_check
def check_repeat_kv(fn) -> bool:
    """``fn(x, n_rep)`` must turn [b, n_kv, s, d] into [b, n_kv*n_rep, s, d] like ``anatomy.repeat_kv``."""
    x = torch.randn(2, 3, 4, 8, generator=torch.Generator().manual_seed(1))
    if not attempted(fn, x, 2):
        return False
    for n_rep in (1, 2, 7):
        expected = anatomy.repeat_kv(x, n_rep)
        with case(f"n_rep={n_rep}"):
            got = expect_tensor(fn(x, n_rep), tuple(expected.shape), "floating", hint="[b, n_kv * n_rep, s, d]")
        assert torch.equal(got, expected), (f"n_rep={n_rep}: right shape, wrong order. Query head h must use "
                                            "KV head h // n_rep: repeat each KV head n_rep times in place.")
    print("check_repeat_kv: equal to anatomy.repeat_kv (= transformers' repeat_kv) for n_rep = 1, 2, 7 ✓")
    return True


@exercise_check
def check_parameter_count(fn) -> bool:
    """``fn(config)`` must return what ``anatomy.parameter_breakdown`` counts on the meta-device model."""
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
            expected = sum(anatomy.parameter_breakdown(Qwen2ForCausalLM(config)).values())
        with case(name):
            got = expect_number(fn(config), "the number of parameters, an int")
        assert got == expected, (f"{name}: you counted {got:,}, the model has {expected:,} "
                                 f"(difference {got - expected:+,}). Remember q/k/v biases, the KV heads' "
                                 "width, two RMSNorms per layer plus a final one, and tied embeddings.")
    print("check_parameter_count: exact for Qwen2.5-0.5B (494,032,768) and two other configs ✓")
    return True


@exercise_check
def check_rope_cos_sin(fn) -> bool:
    """``fn(position_ids, head_dim, theta)`` must return ``anatomy.rope_cos_sin``'s (cos, sin) in float32."""
    positions = torch.arange(40).expand(2, -1)
    if not attempted(fn, positions, 16, 10000.0):
        return False
    cases = [("head_dim 16, theta 1e4", positions, 16, 10000.0), ("head_dim 64, theta 1e6 (Qwen2.5)", positions, 64, 1e6),
             ("offset positions 100..139", positions + 100, 64, 1e5)]
    for name, pos, d, theta in cases:
        expected = anatomy.rope_cos_sin(pos, d, theta)
        with case(name):
            got = expect_pair(fn(pos, d, theta), "(cos, sin)", lambda t: expect_tensor(
                t, tuple(expected[0].shape), "floating", hint="[batch, seq, head_dim]: the d/2 angles, laid out twice"))
        for label, g, e in zip(("cos", "sin"), got, expected):
            diff = (g.float() - e).abs().max().item()
            assert diff <= 1e-5, (f"{name}: {label} differs by up to {diff:.2e}. Angle of pair i at position m: "
                                  "m * theta**(-2i/d); rotate_half pairs dim i with i + d/2, so concatenate the "
                                  "angles with themselves (not repeat_interleave).")
    print("check_rope_cos_sin: equal to anatomy.rope_cos_sin (= the library's rotary embedding) for 3 settings ✓")
    return True
