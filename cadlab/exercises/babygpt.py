"""Self-checks for the exercises of 04_babygpt.ipynb: a repetition metric (``cadlab.lm.babygpt.distinct_n``)
and one cached decode step (``BabyGPT.step``). The references are the library's own functions."""

from __future__ import annotations

import torch

from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_pair, expect_tensor
from cadlab.lm.babygpt import BabyGPT, distinct_n


@exercise_check
def check_distinct_n(fn) -> bool:
    """``fn(items, n)`` must return distinct-n: different n-grams / all n-grams (0.0 when there are none)."""
    if not attempted(fn, ["a", "b"], 2):
        return False
    cases = [("to be or not to be".split(), 1), ("to be or not to be".split(), 2), ("la la la la".split(), 2),
             (list("abcabcabc"), 3), ("alas".split(), 2), ([], 1), ("good night good night sweet prince".split(), 3),
             ("abab", 2), ("the cat the dog the cat".split(), 2)]
    for items, n in cases:
        with case(f"items={items!r}, n={n}"):
            got = expect_number(fn(items, n), "a float")
        expected = distinct_n(items, n)
        assert abs(got - expected) < 1e-12, (
            f"items={items!r}, n={n}: you said {got}, expected {expected}. Take every window items[i:i+n] "
            "(len(items) - n + 1 of them, as tuples), count the different ones and divide by the number of "
            "windows; return 0.0 when there are none.")
    print(f"check_distinct_n: equal to cadlab.lm.babygpt.distinct_n on {len(cases)} cases ✓")
    return True


def _tokens_fed(model):
    """A list that records, per forward call, how many token positions ``model`` embedded (a hook on ``tok_emb``)."""
    fed = []
    handle = model.tok_emb.register_forward_hook(lambda module, args, out: fed.append(args[0].shape[1]))
    return fed, handle


@exercise_check
@torch.no_grad()
def check_cached_step(fn) -> bool:
    """``fn(model, idx, cache) -> (logits [B, vocab], cache)``: one decode step that handles the window.

    ``idx`` is the whole sequence so far, ``cache`` None or what the previous call returned.
    The logits must equal the uncached windowed model's, ``model(idx[:, -block_size:])``, at every
    step, also once the sequence is longer than ``block_size``; and the step must really use its
    cache: a hook on the token embedding counts the tokens fed to the model per step, which must be
    what ``BabyGPT.step`` feeds (the prompt once, then 1 token per step until the window is full,
    then the whole window: with learned positions a slide makes every cached K/V stale).
    """
    torch.manual_seed(0)
    model = BabyGPT(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=16).eval()
    start = torch.randint(9, (2, 3), generator=torch.Generator().manual_seed(1))
    if not attempted(fn, model, start, None):
        return False
    fed, handle = _tokens_fed(model)
    try:
        # The reference: cadlab's own BabyGPT.step, on the same sequence.
        idx, cache, expected_fed = start, None, []
        for _ in range(20):
            del fed[:]
            logits, cache = model.step(idx, cache)
            expected_fed.append(sum(fed))
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
        idx, cache = start, None
        for step in range(20):
            del fed[:]
            with case(f"step {step} (sequence length {idx.shape[1]}, block_size 8)"):
                logits, cache = expect_pair(fn(model, idx, cache), "(logits, cache)")
                with case("logits"):
                    logits = expect_tensor(logits, (2, 9), "floating", hint="[batch, vocab]: the last position only")
            fed_now = sum(fed)
            del fed[:]
            expected = model(idx[:, -model.block_size:])[0][:, -1, :]
            diff = (logits - expected).abs().max().item()
            assert diff < 1e-5, (
                f"step {step} (sequence length {idx.shape[1]}, block_size 8): max |difference| {diff:.2e}. "
                + ("Past block_size the window slides and every position shifts: run model(idx[:, -block_size:]) "
                   "from scratch when the cache is full." if idx.shape[1] > 8 else
                   "With a cache feed only idx[:, -1:]; without one, run the whole (cropped) sequence."))
            assert fed_now == expected_fed[step], (
                f"step {step} (sequence length {idx.shape[1]}): your step fed {fed_now} tokens to the model, a "
                f"cached step feeds {expected_fed[step]}. "
                + ("While the window still has room, feed only the newest token idx[:, -1:] with the cache: "
                   "recomputing the window every step is right but uses no cache." if expected_fed[step] == 1 else
                   "Feed the prompt once (the last block_size tokens), and when the cache is full re-run the "
                   "window once - not more."))
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    finally:
        handle.remove()
    print("check_cached_step: equal to the uncached windowed model for 20 steps, across the slide, feeding "
          f"{expected_fed[:8]}... tokens per step like BabyGPT.step ✓")
    return True
