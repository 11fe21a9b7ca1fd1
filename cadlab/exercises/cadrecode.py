"""Self-checks for the exercises of 07_cad_recode.ipynb (the prefill embedding, the cached loop, the bounding-box
baseline's IoU, the grid).

The checks run the learner's function on a tiny random ``CADRecode`` (2 layers, width 64, a
320-token vocabulary, fixed seed): the plumbing is the same as the mini model's, and it takes
milliseconds.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from transformers import Qwen2Config

from cadlab.cad.cadrecode import CADRecode
from cadlab.cad.synth import to_grid
from cadlab.exercises import attempted, case, exercise_check, expect_array, expect_number, expect_tensor

PAD, START = 2, 3          # the placeholder and start ids of the tiny vocabulary


def tiny_model(seed: int = 0):
    """A tiny random CADRecode in eval mode (weights ~ N(0, 0.3^2), norms ~ 1)."""
    config = Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = CADRecode(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.3 * noise)
    return model.eval()


def tiny_inputs(batch: int = 2, n_points: int = 256, seed: int = 0) -> dict:
    """A CAD-Recode prompt for ``batch`` random clouds in [-1, 1]^3 (ids of the tiny vocabulary)."""
    points = torch.rand(batch, n_points, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return {"input_ids": torch.tensor([[PAD] * n_points + [START]] * batch),
            "attention_mask": torch.tensor([[-1] * n_points + [1]] * batch), "point_cloud": points}


@exercise_check
def check_embed_prompt(fn) -> bool:
    """``fn(model, input_ids, attention_mask, point_cloud)`` must return CADRecode's prefill embeddings."""
    model, inputs = tiny_model(), tiny_inputs()
    keep = {k: v.clone() for k, v in inputs.items()}
    with torch.no_grad():
        if not attempted(fn, model, *(v.clone() for v in inputs.values())):
            return False
        got = fn(model, *inputs.values())
        expected = model.embed_prompt(*keep.values())
    for key in inputs:
        assert torch.equal(inputs[key], keep[key]), (
            f"your function changed the caller's {key}; work on copies (clone) as CADRecode does.")
    got = expect_tensor(got, tuple(expected.shape), expected.dtype, hint="one embedding per prompt position")
    if not torch.allclose(got[:, -1], expected[:, -1], atol=1e-6):
        raise AssertionError("the last position (<|im_start|>) must keep its token embedding, embed_tokens(input_ids).")
    if not torch.allclose(got, expected, atol=1e-5):
        raise AssertionError("the 256 point positions (attention_mask == -1) must hold model.point_encoder(point_cloud), "
                             "row by row, in point order.")
    print("check_embed_prompt: equal to CADRecode.embed_prompt (2 clouds x 256 points + <|im_start|>) ✓")
    return True


@exercise_check
def check_cached_greedy(fn) -> bool:
    """``fn(model, inputs, steps)`` -> (B, steps) greedy token ids from a DynamicCache loop.

    Must equal ``model.generate(do_sample=False)`` and call the point encoder exactly once.
    """
    model, inputs, steps = tiny_model(), tiny_inputs(), 8
    calls = []
    hook = model.point_encoder.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            if not attempted(fn, model, inputs, 1):
                return False
            calls.clear()
            got = expect_tensor(fn(model, inputs, steps), (2, steps), "integer", array_like=True,
                                hint="batch x steps: only the new token ids")
    finally:
        hook.remove()
    expected = model.generate(**inputs, max_new_tokens=steps, do_sample=False, pad_token_id=PAD)[:, -steps:]
    if not torch.equal(got, expected):
        raise AssertionError(f"tokens differ from generate's: {got.tolist()} vs {expected.tolist()}. Feed only the "
                             "new token after the first step, and grow the attention mask by a 1 each step.")
    assert len(calls) == 1, (f"the point encoder ran {len(calls)} times for {steps} tokens; with a cache it must run "
                             "once, on the prefill (pass point_cloud only on the first call).")
    print(f"check_cached_greedy: same {steps} tokens as generate, point encoder called once ✓")
    return True


def box_iou_parts() -> dict:
    """Three closed meshes whose bounding boxes they fill to different degrees: name -> trimesh."""
    foot = trimesh.creation.box(extents=(2.0, 1.0, 0.6), transform=trimesh.transformations.translation_matrix((0, -0.5, 0)))
    leg = trimesh.creation.box(extents=(1.0, 1.0, 0.6), transform=trimesh.transformations.translation_matrix((-0.5, 0.5, 0)))
    plate = trimesh.creation.box(extents=(3.0, 2.0, 0.4))
    hole = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=64)
    return {"an L-shaped block": trimesh.boolean.union([foot, leg], engine="manifold"),
            "a plate with a hole": trimesh.boolean.difference([plate, hole], engine="manifold"),
            "a cylinder": trimesh.creation.cylinder(radius=1.0, height=0.5, sections=64)}


@exercise_check
def check_box_iou(fn) -> bool:
    """``fn(mesh)`` -> the IoU of a closed mesh with its own axis-aligned bounding box, a number: the part lies
    inside its box, so the intersection is the part and the union is the box: vol(mesh) / vol(box)."""
    parts = box_iou_parts()
    if not attempted(fn, parts["an L-shaped block"].copy()):
        return False
    for name, mesh in parts.items():
        with case(name):
            got = expect_number(fn(mesh.copy()), "the IoU, a number between 0 and 1")
        expected = float(mesh.volume / np.prod(mesh.extents))
        if abs(got - expected) > 1e-6:
            hint = "The box is the bounding box, with the part's own three side lengths (mesh.extents)."
            if abs(got - mesh.volume / np.max(mesh.extents) ** 3) < 1e-6:
                hint = "That is the part's volume over a cube of its longest side; its bounding box has three sides."
            elif abs(got - np.prod(mesh.extents) / mesh.volume) < 1e-6:
                hint = "That is the ratio upside down: the union (the box) is the larger volume."
            raise AssertionError(f"{name}: your function returned {got:.4f}, expected {expected:.4f}. {hint}")
    print("check_box_iou: an L-block fills 0.75 of its box, a plate with a hole and a cylinder less than 1 ✓")
    return True


@exercise_check
def check_to_grid(fn) -> bool:
    """``fn(points)`` -> integer code units: ``cadlab.cad.synth.to_grid`` of every coordinate, as ints."""
    rng = np.random.default_rng(0)
    cases = [np.array([[0.4, -0.25, 1.0], [-1.0, 0.004, 0.006]]), rng.uniform(-1, 1, size=(50, 3))]
    if not attempted(fn, cases[0]):
        return False
    for i, points in enumerate(cases):
        with case(f"case {i}"):
            got = expect_array(fn(points.copy()), points.shape, integer=True,
                               hint="one code unit per coordinate: the grid is integers")
        expected = np.vectorize(to_grid, otypes=[int])(points)
        if not np.array_equal(got, expected):
            raise AssertionError(f"case {i}: e.g. {points[0].tolist()} -> {got[0].tolist()}, expected "
                                 f"{expected[0].tolist()}. Code units are 100 x the normalized frame, rounded.")
    print("check_to_grid: 0.4 -> 40, -1.0 -> -100, 0.004 -> 0 (the grid step 0.01 is the finest detail) ✓")
    return True
