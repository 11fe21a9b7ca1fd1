"""Notebook 05's exercise checks: the reference (cadlab's own code, and the notebook's stored solutions)
passes, a stub is "not attempted", and each plausible wrong answer fails."""


import pytest
import torch

from cadlab.exercises.parallel import check_jacobi_step, check_verified_prefix
from cadlab.lm.parallel_decoding import jacobi_step, verified_prefix


def stub(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------- one Jacobi pass


def test_jacobi_step_reference_passes():
    assert check_jacobi_step(jacobi_step) is True


@torch.no_grad()
def feeds_whole_guess(model, prefix_ids, guess):      # no next-token shift: reads the logits one place late
    m = guess.shape[0]
    hidden = model.model(input_ids=torch.cat([prefix_ids, guess])[None]).last_hidden_state
    return model.lm_head(hidden[0, -m:]).argmax(dim=-1)


@torch.no_grad()
def greedy_instead(model, prefix_ids, guess):         # decodes m tokens one by one and ignores the guess
    ids = prefix_ids
    for _ in range(guess.shape[0]):
        hidden = model.model(input_ids=ids[None]).last_hidden_state
        ids = torch.cat([ids, model.lm_head(hidden[0, -1:]).argmax(dim=-1)])
    return ids[prefix_ids.shape[0]:]


@pytest.mark.parametrize("wrong", [feeds_whole_guess, greedy_instead])
def test_jacobi_step_wrong_answers_fail(wrong):
    with pytest.raises(AssertionError, match="one Jacobi pass gives"):
        check_jacobi_step(wrong)


def test_jacobi_step_shifted_slice_is_also_right():
    """Feeding the whole guess and reading positions P-1 .. P+m-2 is the same pass (causal attention)."""
    @torch.no_grad()
    def shifted(model, prefix_ids, guess):
        m = guess.shape[0]
        hidden = model.model(input_ids=torch.cat([prefix_ids, guess])[None]).last_hidden_state
        return model.lm_head(hidden[0, -m - 1:-1]).argmax(dim=-1)

    assert check_jacobi_step(shifted) is True


# ----------------------------------------------------------------------------- the verified prefix


def test_verified_prefix_reference_passes():
    assert check_verified_prefix(verified_prefix) is True


def all_matches(guess, predicted):        # counts matches after a mismatch too
    return 1 + int((guess[:-1] == predicted[:-1]).sum())


def without_the_free_token(guess, predicted):   # forgets that predicted token 1 is always exact
    return int((guess[:-1] == predicted[:-1]).long().cumprod(0).sum())


def checks_the_last_token(guess, predicted):    # compares all m positions, the last one too
    return 1 + int((guess == predicted).long().cumprod(0).sum())


@pytest.mark.parametrize("wrong", [all_matches, without_the_free_token, checks_the_last_token])
def test_verified_prefix_wrong_answers_fail(wrong):
    with pytest.raises(AssertionError, match="a pass commits"):
        check_verified_prefix(wrong)


def test_verified_prefix_batched_matches_rows():
    guess = torch.tensor([[1, 2, 9, 9], [9, 2, 3, 4], [1, 2, 3, 4]])
    predicted = torch.tensor([1, 2, 3, 4]).expand(3, 4)
    assert verified_prefix(guess, predicted).tolist() == [verified_prefix(g, p) for g, p in zip(guess, predicted)]
    assert verified_prefix(guess, predicted).tolist() == [3, 1, 4]
