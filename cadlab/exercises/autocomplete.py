"""Self-checks for the exercises of 09_cad_autocomplete.ipynb (the boundary, the window's loss, LoRA's merge).

The checks compare the learner's function with ``cadlab.cad.autocomplete`` on hand-made cases that
separate the right answer from the plausible wrong ones (a token that straddles the cut, a token
that ends exactly at it, an empty micro-batch, micro-batches of unequal sizes, alpha vs alpha / r).
"""

from __future__ import annotations

import math

import torch

from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_tensor

# (offsets, cut, expected boundary): the first token that ends after character ``cut``
BOUNDARY_CASES = [
    ([(0, 3), (3, 5), (5, 6), (6, 9)], 5, 2),        # a token ends exactly at the cut: it is kept (masked)
    ([(0, 3), (3, 5), (5, 6), (6, 9)], 4, 1),        # a token straddles the cut: the model must write it
    ([(0, 2), (2, 4), (4, 7)], 0, 0),                # nothing kept: every token is a label
    ([(0, 2), (2, 4), (4, 7)], 7, 3),                # everything kept: no label in the text
    ([(0, 1), (1, 2), (2, 3), (3, 4), (4, 8), (8, 9)], 3, 3),
]


@exercise_check
def check_boundary(fn) -> bool:
    """``fn(offsets, cut) -> int``: the index of the first token whose span ends after ``cut``."""
    if not attempted(fn, BOUNDARY_CASES[0][0], BOUNDARY_CASES[0][1]):
        return False
    for offsets, cut, expected in BOUNDARY_CASES:
        with case(f"offsets {offsets}, cut at character {cut}"):
            got = expect_number(fn(list(offsets), cut), "an int, the index of a token")
        if got != expected:
            raise AssertionError(
                f"offsets {offsets}, cut at character {cut}: you return {got}, expected {expected}. The boundary is "
                "the first token whose span (start, end) ends after the cut, end > cut: a token that ends exactly "
                "at the cut belongs to the kept text, one that starts before it and ends after it must be predicted.")
    print("check_boundary: passed - the boundary comes from the offsets of the full text, not from a second tokenization.")
    return True


def _window_cases():
    g = torch.Generator().manual_seed(0)
    nll = lambda n: torch.rand(n, generator=g) * 3 + 0.1
    mask = lambda n, k: torch.tensor([False] * (n - k) + [True] * k)
    return [
        [(nll(8), mask(8, 3)), (nll(6), mask(6, 0)), (nll(10), mask(10, 7))],        # an empty micro-batch
        [(nll(5), mask(5, 1)), (nll(9), mask(9, 9))],                                # 1 token vs 9 tokens
        [(nll(4), mask(4, 0)), (nll(4), mask(4, 0))],                                # nothing to learn: None
        [(nll(7), mask(7, 2)), (nll(7), mask(7, 5)), (nll(3), mask(3, 3))],
    ]


def _reference_window(micro_batches):
    total = sum(int(m.sum()) for _, m in micro_batches)
    if total == 0:
        return None
    return float(sum(float(l[m].sum()) for l, m in micro_batches) / total)


@exercise_check
def check_window_loss(fn) -> bool:
    """``fn(micro_batches) -> float | None``: each micro-batch is (token losses, label mask); the window's loss is
    the sum over every label token of the window over their number, None when there is none."""
    cases = _window_cases()
    if not attempted(fn, cases[0]):
        return False
    for micro_batches in cases:
        expected, counts = _reference_window(micro_batches), [int(m.sum()) for _, m in micro_batches]
        with case(f"label tokens per micro-batch {counts}"):
            got = fn(micro_batches)
            if expected is not None:
                got = expect_number(got, "a float", "a window with label tokens has a finite loss")
            elif got is not None:
                got = expect_number(got, "None", "there is nothing to learn")
        if expected is None:
            if got is not None:
                raise AssertionError(f"label tokens per micro-batch {counts}: there is nothing to learn, return None "
                                     f"(not {got!r}: no backward, no optimizer step, and never NaN).")
            continue
        if not math.isfinite(got):
            raise AssertionError(f"label tokens per micro-batch {counts}: you return {got!r}; a window with label "
                                 "tokens has a finite loss (skip the empty micro-batches, do not divide 0 by 0).")
        if abs(got - expected) > 1e-5:
            raise AssertionError(f"label tokens per micro-batch {counts}: you return {got:.5f}, expected {expected:.5f}. "
                                 "Sum the token losses of the whole window and divide by the window's token count: "
                                 "a mean of per-micro-batch means weighs one token as much as nine.")
    print("check_window_loss: passed - one token, one vote, across the whole accumulation window; never NaN.")
    return True


@exercise_check
def check_merged_weight(fn) -> bool:
    """``fn(weight, lora_A, lora_B, alpha, r)``: the base weight with LoRA folded in, W + (alpha / r) B A."""
    g = torch.Generator().manual_seed(1)
    cases = [(torch.randn(6, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(6, 2, generator=g), 16.0, 2),
             (torch.randn(5, 7, generator=g), torch.randn(8, 7, generator=g), torch.randn(5, 8, generator=g), 16.0, 8),
             (torch.randn(3, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(3, 4, generator=g), 4.0, 4)]
    if not attempted(fn, *(t.clone() if torch.is_tensor(t) else t for t in cases[0])):
        return False
    for weight, a, b, alpha, r in cases:
        keep = weight.clone()
        with case(f"r={r}, alpha={alpha}"):
            got = fn(weight, a, b, alpha, r)
        if not torch.equal(weight, keep):
            raise AssertionError("your function changed the base weight it was given; return a new tensor.")
        expected = weight + (alpha / r) * (b @ a)
        with case(f"r={r}, alpha={alpha}"):
            got = expect_tensor(got, tuple(expected.shape), weight.dtype,
                                hint="the base weight's shape and dtype: out x in; lora_B is out x r, lora_A is r x in")
        if not torch.allclose(got, expected, atol=1e-5):
            raise AssertionError(f"r={r}, alpha={alpha}: the merged weight differs by "
                                 f"{float((got - expected).abs().max()):.3g}. It is W + (alpha / r) * B @ A.")
    print("check_merged_weight: passed - W + (alpha / r) B A, the weight peft's merge_and_unload writes.")
    return True
