"""The self-checks of notebook 01: each accepts the solution stored in the notebook, rejects a
plausible wrong answer, and reports an untouched stub as "not attempted" (False)."""


import pytest
import torch

from cadlab.exercises import anatomy as checks
from cadlab.lm import anatomy


def _todo(*args):
    raise NotImplementedError


def test_check_rms_norm_rejects_wrong_answers(capsys):
    assert checks.check_rms_norm(anatomy.rms_norm)
    with pytest.raises(AssertionError, match="sqrt"):  # eps left out: wrong when eps = 0.1
        checks.check_rms_norm(lambda x, w, eps: w * x / x.pow(2).mean(-1, keepdim=True).sqrt())
    with pytest.raises(AssertionError, match="sqrt"):  # divides by the L2 norm, not the root *mean* square
        checks.check_rms_norm(lambda x, w, eps: w * x / (x.pow(2).sum(-1, keepdim=True) + eps).sqrt())
    # returns float32 for a bfloat16 input: the wrong dtype, reported as one line and False
    assert checks.check_rms_norm(
        lambda x, w, eps: w.float() * anatomy.rms_norm(x.float(), torch.ones_like(w.float()), eps)) is False
    assert "cast back" in capsys.readouterr().out
    # no float32 upcast: right formula, wrong precision - the message says so (not "check the formula")
    with pytest.raises(AssertionError, match="formula is right, the precision is not.*Upcast"):
        checks.check_rms_norm(lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    # upcasts only for bfloat16: float16's x**2 overflows, and the message names it
    with pytest.raises(AssertionError, match="overflows"):
        checks.check_rms_norm(lambda x, w, eps: anatomy.rms_norm(x, w, eps) if x.dtype != torch.float16
                              else w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    assert checks.check_rms_norm(_todo) is False


def test_check_repeat_kv_rejects_tiled_heads():
    assert checks.check_repeat_kv(anatomy.repeat_kv)
    with pytest.raises(AssertionError, match="wrong order"):  # tiles heads 0,1,2,0,1,2 instead of 0,0,1,1,2,2
        checks.check_repeat_kv(lambda x, n: x.repeat(1, n, 1, 1))
    assert checks.check_repeat_kv(_todo) is False


def _count(c, biases=True, tied_once=True):
    d = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * d
    attention = c.hidden_size * (c.hidden_size + 2 * kv) + c.hidden_size ** 2 + (c.hidden_size + 2 * kv) * biases
    per_layer = attention + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    embeddings = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings and tied_once else 2)
    return c.num_hidden_layers * per_layer + embeddings + c.hidden_size


def test_check_parameter_count_rejects_wrong_answers():
    assert checks.check_parameter_count(_count)
    with pytest.raises(AssertionError, match="difference"):  # forgot the q/k/v biases
        checks.check_parameter_count(lambda c: _count(c, biases=False))
    with pytest.raises(AssertionError, match="difference"):  # counted the tied lm_head a second time
        checks.check_parameter_count(lambda c: _count(c, tied_once=False))
    with pytest.raises(AssertionError, match="difference"):  # k/v as wide as q (no GQA)
        checks.check_parameter_count(lambda c: _count(type(c)(**{**c.to_dict(),
                                                                 "num_key_value_heads": c.num_attention_heads})))
    assert checks.check_parameter_count(_todo) is False


def test_check_rope_cos_sin_rejects_wrong_answers(capsys):
    assert checks.check_rope_cos_sin(anatomy.rope_cos_sin)

    def interleaved(positions, d, theta):  # angles laid out f0, f0, f1, f1, ...: the GPT-J layout
        angles = positions[..., None].float() * anatomy.rope_frequencies(d, theta)
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos(), angles.sin()

    def exponent_off_by_two(positions, d, theta):  # theta^(-i/d) instead of theta^(-2i/d)
        freqs = 1.0 / theta ** (torch.arange(d // 2).float() / d)
        angles = torch.cat([positions[..., None].float() * freqs] * 2, dim=-1)
        return angles.cos(), angles.sin()

    def half_width(positions, d, theta):  # d/2 angles, not laid out twice
        angles = positions[..., None].float() * anatomy.rope_frequencies(d, theta)
        return angles.cos(), angles.sin()

    with pytest.raises(AssertionError, match="repeat_interleave"):
        checks.check_rope_cos_sin(interleaved)
    with pytest.raises(AssertionError, match="differs"):
        checks.check_rope_cos_sin(exponent_off_by_two)
    assert checks.check_rope_cos_sin(half_width) is False   # the wrong shape: one line and False
    assert "laid out twice" in capsys.readouterr().out
    assert checks.check_rope_cos_sin(_todo) is False
