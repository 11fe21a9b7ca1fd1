"""Self-checks for the exercises of 05_parallel_decoding.ipynb: one Jacobi pass (``cadlab.lm.parallel_decoding.jacobi_step``)
and the verified prefix (``cadlab.lm.parallel_decoding.verified_prefix``). The references are the library's own functions,
the ones ``jacobi_trajectory`` and ``jacobi_generate`` are built from."""

from __future__ import annotations

import torch

from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_tensor
from cadlab.lm.models import tiny_qwen2
from cadlab.lm.parallel_decoding import jacobi_step, verified_prefix


@exercise_check
def check_jacobi_step(fn) -> bool:
    """``fn(model, prefix_ids [P], guess [m])`` must return the block after one Jacobi pass [m]."""
    model = tiny_qwen2()
    generator = torch.Generator().manual_seed(5)
    prefix = torch.randint(3, 256, (7,), generator=generator)
    if not attempted(fn, model, prefix, torch.full((4,), 2)):
        return False
    with torch.no_grad():
        for m in (1, 4, 9):
            guess = torch.randint(3, 256, (m,), generator=generator)
            with case(f"block of {m}"):
                got = expect_tensor(fn(model, prefix, guess), (m,), "integer", hint="the block's token ids after one pass")
            expected = jacobi_step(model, prefix, guess)
            assert torch.equal(got, expected), (
                f"block of {m}: you returned {got.tolist()}, one Jacobi pass gives {expected.tolist()}. Feed "
                "prefix + guess[:-1] (the last guess token predicts nothing inside the block) and take the argmax "
                "of the logits at the last m positions: position P-1 predicts block token 1 (next-token shift). "
                "One pass, from the guess you were given: not greedy decoding, which ignores the guess.")
        # Iterated from any start, the pass reaches the greedy continuation within m passes.
        guess = torch.full((6,), 2)
        for _ in range(6):
            with case("block of 6, iterated"):
                guess = expect_tensor(fn(model, prefix, guess), (6,), "integer",
                                      hint="the block's token ids after one pass")
        assert torch.equal(jacobi_step(model, prefix, guess), guess), "6 passes on 6 tokens must reach the fixed point."
    print("check_jacobi_step: equal to cadlab.lm.parallel_decoding.jacobi_step for blocks of 1, 4 and 9; the fixed point "
          "is reached ✓")
    return True


@exercise_check
def check_verified_prefix(fn) -> bool:
    """``fn(guess [m], predicted [m])`` must return how many predicted tokens a pass may commit."""
    t = torch.tensor
    if not attempted(fn, t([5, 6, 7]), t([5, 6, 7])):
        return False
    cases = [
        ("guess all wrong", t([9, 9, 9, 9]), t([1, 2, 3, 4])),
        ("first two right", t([1, 2, 9, 9]), t([1, 2, 3, 4])),
        ("all right", t([1, 2, 3, 4]), t([1, 2, 3, 4])),
        ("last guess wrong, all others right", t([1, 2, 3, 9]), t([1, 2, 3, 4])),
        ("a match after a mismatch does not count", t([9, 2, 3, 4]), t([1, 2, 3, 4])),
        ("a block of one", t([9]), t([4])),
    ]
    for name, guess, predicted in cases:
        with case(name):
            got = expect_number(fn(guess, predicted), "an int, the number of tokens to commit")
        expected = verified_prefix(guess, predicted)
        assert got == expected, (
            f"{name}: guess {guess.tolist()}, predicted {predicted.tolist()}: you said {got}, a pass commits "
            f"{expected}. Predicted token 1 is always right; predicted token i+1 is right when guess tokens 1..i "
            "all equal the predictions (it was computed from exact context). The last guess token is never "
            "checked: nothing in the block was predicted from it.")
    print("check_verified_prefix: equal to cadlab.lm.parallel_decoding.verified_prefix for wrong, partial, full and one-token "
          "blocks ✓")
    return True
