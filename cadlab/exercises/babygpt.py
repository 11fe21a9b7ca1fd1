"""Self-checks for the exercises of 04_babygpt.ipynb (a repetition metric, one cached decode step)."""

from __future__ import annotations

import torch

from cadlab.babygpt import BabyGPT, distinct_n
from cadlab.exercises import attempted


def check_distinct_n(fn) -> bool:
    """``fn(items, n)`` must return distinct-n: different n-grams / all n-grams (0.0 when there are none)."""
    if not attempted(fn, ["a", "b"], 2):
        return False
    cases = [("to be or not to be".split(), 1), ("to be or not to be".split(), 2), ("la la la la".split(), 2),
             (list("abcabcabc"), 3), ("alas".split(), 2), ([], 1), ("good night good night sweet prince".split(), 3)]
    for items, n in cases:
        got, expected = fn(items, n), distinct_n(items, n)
        assert abs(got - expected) < 1e-12, (
            f"items={items!r}, n={n}: you said {got}, expected {expected}. Take every window items[i:i+n] "
            "(len(items) - n + 1 of them, as tuples), count the different ones and divide; return 0.0 when "
            "there are no windows.")
    print("check_distinct_n: equal to cadlab.babygpt.distinct_n on 7 cases ✓")
    return True


@torch.no_grad()
def check_cached_step(fn) -> bool:
    """``fn(model, idx, cache) -> (logits [B, vocab], cache)``: one decode step that handles the window.

    ``idx`` is the whole sequence so far, ``cache`` None or what the previous call returned.
    The logits must equal the uncached windowed model's, ``model(idx[:, -block_size:])``, at every
    step, also once the sequence is longer than ``block_size``.
    """
    torch.manual_seed(0)
    model = BabyGPT(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=16).eval()
    idx = torch.randint(9, (2, 3), generator=torch.Generator().manual_seed(1))
    if not attempted(fn, model, idx, None):
        return False
    cache, sizes = None, []
    for step in range(20):
        logits, cache = fn(model, idx, cache)
        expected = model(idx[:, -model.block_size:])[0][:, -1, :]
        assert tuple(logits.shape) == (2, 9), (
            f"step {step}: logits have shape {tuple(logits.shape)}, expected (2, 9) - the last position only.")
        diff = (logits - expected).abs().max().item()
        assert diff < 1e-5, (
            f"step {step} (sequence length {idx.shape[1]}, block_size 8): max |difference| {diff:.2e}. "
            + ("Past block_size the window slides and every position shifts: run model(idx[:, -block_size:]) "
               "from scratch when the cache is full." if idx.shape[1] > 8 else
               "With a cache feed only idx[:, -1:]; without one, run the whole (cropped) sequence."))
        sizes.append(cache[0][0].shape[2])
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    assert sizes[:6] == [3, 4, 5, 6, 7, 8], f"cache lengths {sizes[:6]}: expected 3, 4, ... 8 while the window fills."
    print("check_cached_step: equal to the uncached windowed model for 20 steps, across the slide ✓")
    return True
