"""Notebook 04's exercise checks: the reference (cadlab's own code, and the notebook's stored solutions)
passes, a stub is "not attempted", and each plausible wrong answer fails."""


import pytest

from cadlab.exercises.babygpt import check_cached_step, check_distinct_n
from cadlab.lm.babygpt import distinct_n


def stub(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------- distinct-n


def test_distinct_n_reference_passes():
    assert check_distinct_n(distinct_n) is True


def windows_by_length(items, n):          # divides by the number of items, not of n-grams
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return len(set(grams)) / len(items) if items else 0.0


def one_window_short(items, n):           # range(len(items) - n): misses the last n-gram
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def one_when_empty(items, n):             # "no n-gram repeats" taken literally for an empty list
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def distinct_items(items, n):             # distinct tokens instead of distinct n-grams
    return len(set(items)) / (len(items) - n + 1) if len(items) >= n else 0.0


@pytest.mark.parametrize("wrong", [windows_by_length, one_window_short, one_when_empty, distinct_items])
def test_distinct_n_wrong_answers_fail(wrong):
    with pytest.raises(AssertionError, match="expected"):
        check_distinct_n(wrong)


# ----------------------------------------------------------------------------- one cached step


def reference_step(model, idx, cache):
    return model.step(idx, cache)


def test_cached_step_reference_passes():
    assert check_cached_step(reference_step) is True


def no_cache(model, idx, cache):          # exact, but recomputes the window at every step
    logits, cache = model(idx[:, -model.block_size:])
    return logits[:, -1, :], cache


def drop_oldest_row(model, idx, cache):   # keeps stale K/V after the slide
    if cache is None:
        logits, cache = model(idx[:, -model.block_size:])
    else:
        if cache[0][0].shape[2] == model.block_size:
            cache = [(k[:, :, 1:], v[:, :, 1:]) for k, v in cache]
        logits, cache = model(idx[:, -1:], cache)
    return logits[:, -1, :], cache


def refill_one_early(model, idx, cache):  # exact, but rebuilds the cache one step before it is full
    if cache is None or cache[0][0].shape[2] + 2 > model.block_size:
        logits, cache = model(idx[:, -model.block_size:])
    else:
        logits, cache = model(idx[:, -1:], cache)
    return logits[:, -1, :], cache


def never_refill(model, idx, cache):      # runs into the end of the position table
    logits, cache = model(idx[:, -model.block_size:] if cache is None else idx[:, -1:], cache)
    return logits[:, -1, :], cache


def test_cached_step_without_a_cache_fails():
    with pytest.raises(AssertionError, match="fed 4 tokens to the model, a cached step feeds 1"):
        check_cached_step(no_cache)


def test_cached_step_with_stale_cache_fails():
    with pytest.raises(AssertionError, match="the window slides"):
        check_cached_step(drop_oldest_row)


def test_cached_step_rebuilding_too_early_fails():
    with pytest.raises(AssertionError, match="fed 8 tokens to the model, a cached step feeds 1"):
        check_cached_step(refill_one_early)


def test_cached_step_that_never_rebuilds_fails(capsys):
    assert check_cached_step(never_refill) is False   # the model raises inside the learner's step
    assert "your function raised ValueError" in capsys.readouterr().out
