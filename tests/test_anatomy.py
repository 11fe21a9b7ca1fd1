"""cadlab.lm.anatomy: every hand-written step equals the library, on tiny Qwen2 and the real offline model."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb
from transformers.models.qwen2.modeling_qwen2 import repeat_kv as library_repeat_kv

from cadlab.lm import anatomy
from cadlab.lm.models import tiny_qwen2


def test_rms_norm_equals_library():
    x = torch.randn(3, 7, 64)
    norm = Qwen2RMSNorm(64, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.testing.assert_close(anatomy.rms_norm(x, norm.weight, 1e-6), norm(x))


def test_rope_equals_library(tiny):
    model = tiny
    q, k = torch.randn(2, 4, 9, 16), torch.randn(2, 2, 9, 16)
    position_ids = torch.arange(9).expand(2, -1)
    cos, sin = model.model.rotary_emb(q, position_ids)
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(anatomy.apply_rope(q, cos, sin), expected_q)
    torch.testing.assert_close(anatomy.apply_rope(k, cos, sin), expected_k)
    torch.testing.assert_close(anatomy.rope_frequencies(16, 10000.0), model.model.rotary_emb.inv_freq)


@pytest.mark.parametrize("theta, head_dim", [(10000.0, 16), (1e6, 64), (1e5, 64)])
def test_rope_cos_sin_equals_library_rotary_embedding(theta, head_dim):
    """Our hand-written angles are bit-identical to Qwen2RotaryEmbedding's, for the config's rope_theta."""
    model = tiny_qwen2(hidden_size=4 * head_dim, rope_parameters={"rope_type": "default", "rope_theta": theta})
    assert anatomy.rope_theta_of(model.config) == theta and anatomy.head_dim_of(model.config) == head_dim
    positions = torch.arange(300).expand(2, -1)
    for dtype in (torch.float32, torch.bfloat16):
        expected = model.model.rotary_emb(torch.zeros(1, dtype=dtype), positions)
        got = anatomy.rope_cos_sin(positions, head_dim, anatomy.rope_theta_of(model.config), dtype=dtype)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_rope_theta_of_refuses_scaled_rope():
    config = tiny_qwen2().config
    config.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(NotImplementedError, match="plain RoPE"):
        anatomy.rope_theta_of(config)


def test_manual_forward_uses_its_own_rope_not_the_library_module(monkeypatch):
    """manual_forward must not call model.model.rotary_emb: its RoPE is rope_cos_sin."""
    model = tiny_qwen2()
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits

    def forbidden(*args, **kwargs):
        raise AssertionError("manual_forward called the library's rotary embedding")

    monkeypatch.setattr(model.model.rotary_emb, "forward", forbidden)
    assert (anatomy.manual_forward(model, ids) - expected).abs().max() <= 1e-4


def test_rope_scores_depend_only_on_relative_position(tiny):
    """<rope(q, m), rope(k, n)> is a function of m - n: the point of rotary embeddings."""
    model = tiny
    q, k = torch.randn(1, 1, 1, 16).expand(1, 1, 40, 16), torch.randn(1, 1, 1, 16).expand(1, 1, 40, 16)
    cos, sin = model.model.rotary_emb(q, torch.arange(40)[None])
    scores = anatomy.apply_rope(q, cos, sin)[0, 0] @ anatomy.apply_rope(k, cos, sin)[0, 0].T
    torch.testing.assert_close(scores[10, 7], scores[30, 27], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[5, 5], scores[39, 39], atol=1e-5, rtol=1e-5)


def test_repeat_kv_and_causal_attention_equal_library():
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    assert torch.equal(anatomy.repeat_kv(k, 3), library_repeat_kv(k, 3))
    out, weights = anatomy.causal_attention(q, anatomy.repeat_kv(k, 3), anatomy.repeat_kv(v, 3), 8 ** -0.5)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, expected)
    assert torch.all(weights.triu(1) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6, 5))


@pytest.mark.parametrize("seed", [0, 1])
def test_manual_forward_equals_tiny_qwen2(seed):
    model = tiny_qwen2(seed=seed)
    ids = torch.randint(0, 256, (3, 21), generator=torch.Generator().manual_seed(seed))
    logits, hidden = anatomy.manual_forward(model, ids, return_hidden_states=True)
    reference = model(ids, output_hidden_states=True)
    assert (logits - reference.logits).abs().max() <= 1e-4
    for mine, theirs in zip(hidden[:-1], reference.hidden_states[:-1]):  # the library's last one is normed
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_manual_forward_equals_offline_model(offline_lm):
    model, tokenizer = offline_lm
    ids = tokenizer("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids
    logits, hidden = anatomy.manual_forward(model, ids, return_hidden_states=True)
    with torch.no_grad():
        reference = model(ids).logits
    assert (logits - reference).abs().max() <= 1e-4
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))
    lens = anatomy.logit_lens(model, hidden, k=3)
    assert lens.shape == (31, 3)
    assert lens[-1, 0] == reference[0, -1].argmax()
    assert tokenizer.decode(lens[-1, 0]) == " Berlin"


def test_parameter_breakdown_counts_every_parameter_once(offline_lm, tiny):
    model, _ = offline_lm
    assert sum(anatomy.parameter_breakdown(model).values()) == sum(p.numel() for p in model.parameters())
    summary = anatomy.architecture_summary(model.config)
    assert summary["query heads"] == 9 and summary["KV heads"] == 3 and not summary["q/k/v biases"]
    assert anatomy.architecture_summary(tiny.config)["q/k/v biases"]
