"""Self-checks for the exercises of 10_constrained_decoding.ipynb (the mask of one step, a grammar of an
integer range, the masked distribution)."""

from __future__ import annotations

import numpy as np
import torch

from cadlab.exercises import _failed, attempted, case, exercise_check, expect_number, expect_pair, expect_tensor
from cadlab.lm.grammar import Alt, Automaton, Chars, Repeat, Seq, Text, TokenTrie, integers


def _toy():
    """A small grammar and vocabulary where checking only a token's first character is wrong."""
    automaton = Automaton(Seq("f(", integers(0, 99), Repeat(Seq(",", integers(0, 99))), ")"))
    texts = {0: "f", 1: "f(", 2: "f(1", 3: "f(12", 4: "f(123", 5: "(", 6: "1", 7: "12", 8: "123", 9: "0", 10: "01",
             11: ",", 12: ",1", 13: ")", 14: "),", 15: ",)", 16: "x", 17: "", 18: "9)", 19: "7,7"}
    return automaton, texts


@exercise_check
def check_allowed(fn) -> bool:
    """``fn(automaton, texts, state)`` must return the sorted ids of the tokens whose whole text keeps the
    automaton alive from ``state`` (``automaton.walk(state, text) != DEAD``), empty texts left out."""
    automaton, texts = _toy()
    if not attempted(fn, automaton, texts, automaton.start):
        return False
    trie = TokenTrie(texts)
    for prefix in ("", "f", "f(", "f(1", "f(12", "f(0", "f(12,", "f(12,3"):
        state = automaton.walk(automaton.start, prefix)
        expected = sorted(trie.allowed(automaton, state)[0])
        with case(f"after {prefix!r}"):
            got = fn(automaton, texts, state)
            if not isinstance(got, (list, tuple, set)) or not all(
                    isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in got):
                raise _failed(got, "a list of token ids (ints)", "the ids, not the texts")
        got = sorted(int(i) for i in got)
        if got == expected:
            continue
        extra = [texts[i] for i in got if i not in expected]
        missing = [texts[i] for i in expected if i not in got]
        hint = ""
        if "" in extra:
            hint = " The empty token writes nothing: leave it out."
        elif extra:
            hint = (" Every character of the token must keep the text in the grammar (walk the whole token, not "
                    "only its first character).")
        elif missing:
            hint = (" A token only has to keep the text a prefix of some sentence, not finish one (DEAD is the "
                    "only state to refuse).")
        raise AssertionError(f"after {prefix!r}: allowed {[texts[i] for i in expected]}; yours adds {extra} and "
                             f"misses {missing}.{hint}")
    print("check_allowed: equal to the trie walk after 8 prefixes ✓")
    return True


@exercise_check
def check_integer_grammar(fn) -> bool:
    """``fn(hi)`` must return a grammar (``cadlab.lm.grammar``'s blocks) of the integers 0 .. hi as Python
    writes them (no leading zeros, no sign), for 9 <= hi <= 999."""
    if not attempted(fn, 255):
        return False
    for hi in (255, 9, 100, 999, 42):
        with case(f"hi = {hi}"):
            grammar = fn(hi)
            if not isinstance(grammar, (Text, Chars, Seq, Alt, Repeat)):
                raise _failed(grammar, "a grammar built from Text, Chars, Seq, Alt and Repeat", "")
        automaton = Automaton(grammar)
        for n in range(0, 1200):
            if automaton.matches(str(n)) != (n <= hi):
                side = "refuses" if n <= hi else "accepts"
                raise AssertionError(f"hi = {hi}: your grammar {side} {n}." + (
                    " Check the last range: the numbers with as many digits as hi, up to hi itself." if n > 9 else ""))
        for text in ("00", "007", "-1", "", "1a", "+3"):
            if automaton.matches(text):
                raise AssertionError(f"hi = {hi}: your grammar accepts {text!r}; Python writes integers without a sign"
                                     " and without leading zeros (only 0 itself starts with 0).")
    print("check_integer_grammar: exactly 0 .. hi for 5 values of hi ✓")
    return True


@exercise_check
def check_masked_distribution(fn) -> bool:
    """``fn(logits, allowed)`` (1-D logits, a boolean mask of the same size) must return ``(p, kept)``: the
    next-token distribution the constrained decoder samples from, softmax over the allowed tokens only, and
    the share of the model's own probability that the allowed tokens had."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, generator=generator, dtype=torch.float64) * 2
    allowed = torch.tensor([True, False, True, False, False, True, False, False, True, False, False, False])
    if not attempted(fn, logits.clone(), allowed.clone()):
        return False
    probs = torch.softmax(logits, -1)
    expected = torch.where(allowed, probs, torch.zeros_like(probs))
    kept_expected = float(expected.sum())
    expected = expected / kept_expected
    got = expect_pair(fn(logits.clone(), allowed.clone()), "(p, kept)")
    with case("p"):
        p = expect_tensor(got[0], (12,), hint="the distribution over the whole vocabulary, 0 where not allowed",
                          array_like=True).to(torch.float64)
    with case("kept"):
        kept = expect_number(got[1], "a number between 0 and 1")
    if bool((p[~allowed].abs() > 1e-9).any()):
        raise AssertionError("a forbidden token still has probability: set its logit to -inf before the softmax.")
    if abs(float(p.sum()) - 1) > 1e-6:
        raise AssertionError(f"your distribution sums to {float(p.sum()):.4f}: after removing the forbidden tokens "
                             "the rest must be renormalized (a softmax over the allowed logits does it).")
    if not torch.allclose(p, expected, atol=1e-6):
        raise AssertionError("your distribution is not softmax over the allowed logits.")
    if abs(kept - kept_expected) > 1e-6:
        hint = (" That is the forbidden share: the kept share is the sum of the model's probabilities of the allowed "
                "tokens." if abs(kept - (1 - kept_expected)) < 1e-6 else
                " Use the model's own probabilities (softmax over all logits), summed over the allowed tokens.")
        raise AssertionError(f"kept = {kept:.4f}, expected {kept_expected:.4f}.{hint}")
    print(f"check_masked_distribution: the masked softmax, and the kept share {kept_expected:.3f} ✓")
    return True
