"""Self-checks for the exercises of 02_sampling_loop.ipynb (top-k, top-p, a greedy loop with EOS).

Each check's reference is the function the notebook teaches in ``cadlab.lm.sampling``
(``top_k_filter``, ``top_p_filter``, ``generate``), which tests/test_sampling.py proves
bit-identical to transformers' ``TopKLogitsWarper``, ``TopPLogitsWarper`` and ``model.generate``.
"""

from __future__ import annotations

import torch

from cadlab.exercises import attempted, case, exercise_check, expect_tensor
from cadlab.lm import sampling
from cadlab.lm.models import tiny_qwen2


def _random_logits(seed: int, rows: int = 4, vocab: int = 50) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def _kept(logits: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in logits > float("-inf")]


@exercise_check
def check_top_k(fn) -> bool:
    """``fn(logits, k)`` must set all but the k largest logits of each row to -inf, like ``sampling.top_k_filter``."""
    logits = _random_logits(0)
    if not attempted(fn, logits.clone(), 3):
        return False
    ties = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, -1.0]])
    for name, x, k in [("random, k=1", logits, 1), ("random, k=5", logits, 5), ("k = vocab", logits, 50),
                       ("k > vocab", logits, 80), ("ties at the k-th value", ties, 2)]:
        expected = sampling.top_k_filter(x.clone(), k)
        with case(name):
            got = expect_tensor(fn(x.clone(), k), tuple(x.shape), "floating",
                                hint="the logits, with all but the k largest of each row set to -inf")
        assert _kept(got) == _kept(expected), (
            f"{name}: you kept token ids {_kept(got)[0]} in row 0, the library keeps {_kept(expected)[0]}. "
            "Keep every logit >= the k-th largest (torch.topk(...).values[..., -1:]); clamp k to the vocabulary.")
        assert torch.equal(got, expected), f"{name}: right tokens kept, but the kept logits must stay unchanged."
    print("check_top_k: equal to sampling.top_k_filter (= TopKLogitsWarper) for k = 1, 5, vocab, > vocab, ties ✓")
    return True


@exercise_check
def check_top_p(fn) -> bool:
    """``fn(logits, p)`` must keep the smallest top set with probability >= p, like ``sampling.top_p_filter``."""
    logits = _random_logits(1)
    if not attempted(fn, logits.clone(), 0.9):
        return False
    peaked = torch.tensor([[0.0, 6.0, 1.0, 0.5, -2.0]])
    for name, x, p in [("p = 0.9", logits, 0.9), ("p = 0.5", logits, 0.5), ("p = 0.99", _random_logits(2), 0.99),
                       ("p = 0 (greedy)", logits, 0.0), ("p = 1 (keep all)", logits, 1.0),
                       ("one dominant token, p = 0.9", peaked, 0.9), ("one dominant token, p = 0.999", peaked, 0.999)]:
        expected = sampling.top_p_filter(x.clone(), p)
        with case(name):
            got = expect_tensor(fn(x.clone(), p), tuple(x.shape), "floating",
                                hint="the logits, with the tokens outside the top-p set at -inf")
        got_kept, expected_kept = _kept(got), _kept(expected)
        assert all(got_kept), f"{name}: a row lost every token - top-p must always keep the most probable one."
        assert got_kept == expected_kept, (
            f"{name}: first differing row keeps {next(g for g, e in zip(got_kept, expected_kept) if g != e)}, "
            f"the library keeps {next(e for g, e in zip(got_kept, expected_kept) if g != e)}. Sort by probability, "
            "keep tokens while the mass ABOVE them is < p (so the token that crosses p is kept).")
        assert torch.equal(got, expected), f"{name}: right tokens kept, but the kept logits must stay unchanged."
    print("check_top_p: equal to sampling.top_p_filter (= TopPLogitsWarper) for p = 0, 0.5, 0.9, 0.99, 1, a dominant token ✓")
    return True


@exercise_check
def check_greedy_loop(fn) -> bool:
    """``fn(model, input_ids, max_new_tokens, eos_token_id)`` must equal greedy ``sampling.generate`` (one row)."""
    model = tiny_qwen2(seed=3)
    prompt = torch.tensor([[5, 17, 42, 99, 7]])
    if not attempted(fn, model, prompt, 1, None):
        return False
    free = sampling.generate(model, prompt, max_new_tokens=8, temperature=0)
    stop_early = int(free[0, prompt.shape[1] + 2])  # an id the greedy run produces at its third step
    for name, n, eos in [("no EOS", 8, None), ("max_new_tokens = 0", 0, None), ("EOS met early", 8, stop_early),
                         ("EOS never met", 6, 255)]:
        expected = sampling.generate(model, prompt, max_new_tokens=n, temperature=0, eos_token_id=eos)
        with torch.no_grad(), case(name):
            got = expect_tensor(fn(model, prompt.clone(), n, eos), (1, "seq"), "integer",
                                hint="the prompt followed by the new token ids")
        assert torch.equal(got, expected), (
            f"{name}: you returned {got[0, prompt.shape[1]:].tolist()} after the prompt, greedy decoding gives "
            f"{expected[0, prompt.shape[1]:].tolist()}. Append the argmax of the last position's logits; stop "
            "right after appending the EOS id, or after max_new_tokens.")
    print("check_greedy_loop: equal to greedy sampling.generate (= model.generate) - no EOS, 0 tokens, early EOS, "
          "EOS never met ✓")
    return True
