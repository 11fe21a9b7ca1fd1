"""Self-checks for the exercises of 08_cadrille.ipynb (point injection, decode positions, the RL reward).

The first two run the learner's function on a tiny random ``Cadrille`` and a mixed, left-padded
batch (text, a point cloud, a point cloud with a longer text), so a function that ignores the
padding or the rope deltas gives a different answer. The third is plain arithmetic.
"""

from __future__ import annotations

import numpy as np
import torch

from cadlab.cad.cadrille import tiny_cadrille
from cadlab.cad.cadrille_processor import CadrilleProcessor, collate, mini_tokenizer, token_ids
from cadlab.exercises import attempted, case, exercise_check, expect_number, expect_tensor


def _tiny():
    tokenizer = mini_tokenizer()
    processor = CadrilleProcessor(tokenizer)
    model = tiny_cadrille(token_ids=token_ids(tokenizer), vocab_size=len(tokenizer))
    clouds = np.random.default_rng(0).uniform(-1, 1, (2, 256, 3)).astype(np.float32)
    items = [{"description": "a disc of radius 100, 12 thick, with a centre hole of radius 20"},
             {"point_cloud": clouds[0]},
             {"description": "a plate 200 by 80 by 10 with four holes near its corners, each of radius 6, "
                             "and a slot 60 by 12 in the middle. " * 6}]         # longer than a point row
    batch = collate(items, processor, eval=True)
    pc_batch = collate([{"point_cloud": clouds[1]}, items[2]], processor, eval=True)
    return model, batch, pc_batch


@exercise_check
def check_insert_points(fn) -> bool:
    """``fn(embeds, point_embeds, is_pc, attention_mask)`` -> a copy of ``embeds`` (B, L, H) with
    ``point_embeds[i]`` (N, H) written at ``[i, s_i : s_i + N]`` for the ``is_pc`` rows, s_i = L - sum(mask_i)."""
    model, _, batch = _tiny()
    batch = {k: v for k, v in batch.items()}
    # a batch where the point row is NOT the longest: it has left pads, so s > 0
    embeds = model.model.get_input_embeddings()(batch["input_ids"]).detach()
    with torch.no_grad():
        point_embeds = model.point_encoder(batch["point_clouds"]).detach()
    keep = embeds.clone()
    if not attempted(fn, embeds.clone(), point_embeds, batch["is_pc"], batch["attention_mask"]):
        return False
    got = fn(embeds, point_embeds, batch["is_pc"], batch["attention_mask"])
    assert torch.equal(embeds, keep), "your function changed the embeddings passed in; write into a copy (clone)."
    expected = model.insert_points(keep, batch["point_clouds"], batch["is_pc"], batch["attention_mask"],
                                   batch["input_ids"])
    got = expect_tensor(got, tuple(expected.shape), expected.dtype, hint="a copy of embeds with the points written in")
    s = int(batch["input_ids"].shape[1] - batch["attention_mask"][0].sum())
    if torch.allclose(got[0, :256], point_embeds[0], atol=1e-6) and s > 0:
        raise AssertionError(f"the point row has {s} left pads: its points go at [s, s + 256), not at [0, 256).")
    if not torch.allclose(got[1], keep[1]):
        raise AssertionError("row 1 is a text row (is_pc False): it must keep its token embeddings.")
    if not torch.allclose(got, expected, atol=1e-6):
        raise AssertionError("the point embeddings must fill exactly [s_i, s_i + 256) of each is_pc row, in order.")
    print(f"check_insert_points: equal to Cadrille.insert_points (the point row starts after {s} left pads) ✓")
    return True


@exercise_check
def check_decode_positions(fn) -> bool:
    """``fn(rope_deltas, past_length, n_new)`` -> (3, B, n_new) mrope positions of a decode step."""
    model, batch, _ = _tiny()
    with torch.no_grad():
        _, deltas = model.rope_positions(batch["input_ids"], batch["attention_mask"])
    if not attempted(fn, deltas, batch["input_ids"].shape[1], 1):
        return False
    model.rope_deltas = deltas
    for past, n in ((batch["input_ids"].shape[1], 1), (batch["input_ids"].shape[1] + 5, 3)):
        expected = model.decode_positions(past, n, deltas.shape[0], deltas.device)
        with case(f"past_length {past}, {n} new token(s)"):
            got = expect_tensor(fn(deltas, past, n), tuple(expected.shape), "integer", hint="3 axes, batch, new tokens",
                                array_like=True)
        if torch.equal(got, (torch.arange(past, past + n)[None, None]).expand_as(expected)):
            raise AssertionError("those are the cache positions alone: a left-padded row's text started later, so add "
                                 "its rope delta (cache_position + rope_deltas).")
        if not torch.equal(got, expected):
            raise AssertionError("decode positions are cache_position + rope_deltas, the same on all three axes.")
    print("check_decode_positions: equal to Cadrille.decode_positions (prefill rule continued) ✓")
    return True


@exercise_check
def check_reward(fn) -> bool:
    """``fn(iou)`` -> Cadrille's RL reward: 10 * IoU for a valid program, -10 for an invalid one (iou None)."""
    if not attempted(fn, 0.5):
        return False
    cases = [(1.0, 10.0), (0.5, 5.0), (0.0, 0.0), (0.923, 9.23), (None, -10.0)]
    for iou, expected in cases:
        with case(f"reward({iou})"):
            got = expect_number(fn(iou), "a number")
        if iou is None and got == 0:
            raise AssertionError("an invalid program must be punished (-10), not scored like an empty one (0): "
                                 "else the policy learns that crashing costs nothing.")
        assert abs(got - expected) < 1e-9, f"reward({iou}) = {got}, expected {expected}"
    print("check_reward: 10 * IoU, -10 when invalid ✓")
    return True
