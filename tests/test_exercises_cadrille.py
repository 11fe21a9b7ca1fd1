"""The self-checks of notebook 08: the reference passes, a stub is "not attempted", and the plausible
wrong answers fail (points written from position 0 whatever the padding; decode positions without the
rope deltas; an invalid program rewarded 0 instead of -10)."""

import pytest
import torch

from cadlab.exercises.cadrille import check_decode_positions, check_insert_points, check_reward


def _stub(*_args):
    raise NotImplementedError


def insert_points(embeds, point_embeds, is_pc, attention_mask, from_zero=False, all_rows=False):
    out = embeds.clone()
    starts = embeds.shape[1] - attention_mask.long().sum(dim=1)
    for i in range(embeds.shape[0]):
        if is_pc[i] or all_rows:
            s = 0 if from_zero else int(starts[i])
            out[i, s:s + point_embeds.shape[1]] = point_embeds[i]
    return out


def decode_positions(rope_deltas, past_length, n_new, with_deltas=True):
    cache_position = torch.arange(past_length, past_length + n_new)
    positions = cache_position[None, :] + (rope_deltas if with_deltas else 0 * rope_deltas)
    return positions[None].expand(3, -1, -1)


def reward(iou, invalid=-10.0):
    return invalid if iou is None else 10.0 * iou


def test_references_pass():
    assert check_insert_points(insert_points)
    assert check_decode_positions(decode_positions)
    assert check_reward(reward)


@pytest.mark.parametrize("check", [check_insert_points, check_decode_positions, check_reward])
def test_a_stub_is_not_attempted(check, capsys):
    assert check(_stub) is False
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong", [
    (check_insert_points, lambda *a: insert_points(*a, from_zero=True)),
    (check_insert_points, lambda *a: insert_points(*a, all_rows=True)),
    (check_insert_points, lambda *a: _in_place(*a)),
    (check_decode_positions, lambda d, p, n: decode_positions(d, p, n, with_deltas=False)),
    (check_decode_positions, lambda d, p, n: decode_positions(d, p - 1, n)),
    (check_reward, lambda iou: reward(iou, invalid=0.0)),
    (check_reward, lambda iou: -10.0 if iou is None else iou),
])
def test_plausible_wrong_answers_fail(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)


def _in_place(embeds, point_embeds, is_pc, attention_mask):
    """Right numbers, but written into the caller's tensor."""
    out = insert_points(embeds, point_embeds, is_pc, attention_mask)
    embeds.copy_(out)
    return embeds
