"""Self-checks for the exercises of 06_point_clouds.ipynb (a CadQuery part, Fourier features, normalization, Chamfer)."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from cadlab.cad.metrics import chamfer_distance_points
from cadlab.cad.pointcloud import FourierPointEncoder, normalize_mesh
from cadlab.exercises import (Failed, attempted, case, describe, exercise_check, expect_array, expect_number,
                              expect_tensor)


@exercise_check
def check_fourier_features(fn) -> bool:
    """``fn(points)`` must map (B, N, 3) to CAD-Recode's 51 features, in FourierPointEncoder's order."""
    points = torch.rand(2, 7, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if not attempted(fn, points):
        return False
    expected = FourierPointEncoder(1).fourier_features(points)
    got = expect_tensor(fn(points), (2, 7, 51), points.dtype, hint="xyz + 24 sines + 24 cosines, in the points' dtype")
    torch.testing.assert_close(got[..., :3], points, msg="the first 3 features must be the coordinates themselves")
    for name, part in (("sines", slice(3, 27)), ("cosines", slice(27, 51))):
        if not torch.allclose(got[..., part], expected[..., part], atol=1e-5):
            raise AssertionError(f"the {name} are wrong or in the wrong order. Expected x·1, x·2, ... x·128, then "
                                 "y·1 ... y·128, then z·1 ... z·128 (axis-major): points[..., None] * freqs, "
                                 "reshaped to (B, N, 24).")
    print("check_fourier_features: equal to FourierPointEncoder.fourier_features (51 features, axis-major) ✓")
    return True


@exercise_check
def check_normalize_points(fn) -> bool:
    """``fn(points)`` (N, 3) array -> points with bbox centre at 0 and the longest side spanning [-1, 1]."""
    rng = np.random.default_rng(0)
    clouds = [rng.random((50, 3)) * [4, 2, 1] + [3, -2, 10], rng.normal(size=(80, 3)) * [1, 5, 2],
              np.array([[0.0, 0, 0], [0, 0, 3], [1, 1, 1]])]
    if not attempted(fn, clouds[0]):
        return False
    for i, cloud in enumerate(clouds):
        expected = normalize_mesh(trimesh.PointCloud(cloud)).vertices
        with case(f"cloud {i}"):
            got = expect_array(fn(cloud.copy()), cloud.shape, hint="the normalized points")
        if not np.allclose(got, expected, atol=1e-9):
            low, high = got.min(axis=0), got.max(axis=0)
            raise AssertionError(f"cloud {i}: your box is {np.round(low, 3)} .. {np.round(high, 3)}. Subtract the "
                                 "bounding-box CENTRE (min+max)/2 (not the mean of the points), then scale ALL axes "
                                 "by the same 2 / longest side.")
    print("check_normalize_points: equal to normalize_mesh on 3 point sets ✓")
    return True


@exercise_check
def check_chamfer(fn) -> bool:
    """``fn(p, q)`` on torch tensors (n, 3), (m, 3) must equal metrics.chamfer_distance_points (raw, not x1000)."""
    generator = torch.Generator().manual_seed(0)
    cases = [(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[1.0, 0, 0], [3, 0, 0]], dtype=torch.float64)),
             (torch.rand(200, 3, generator=generator, dtype=torch.float64),
              torch.rand(150, 3, generator=generator, dtype=torch.float64))]
    if not attempted(fn, *cases[0]):
        return False
    for i, (p, q) in enumerate(cases):
        expected = chamfer_distance_points(p.numpy(), q.numpy())
        with case(f"case {i}"):
            got = expect_number(fn(p, q), "a number, the Chamfer distance")
        assert abs(got - expected) <= 1e-9 * max(1.0, expected), (
            f"case {i}: got {got:.6f}, expected {expected:.6f}. Square the nearest-neighbour distances, average "
            "each direction separately (the sets may differ in size), and ADD the two means.")
    print("check_chamfer: equal to metrics.chamfer_distance_points (6.0 for the hand example) ✓")
    return True


PRIMER_HOLES = [(-70, -35), (-70, 35), (70, -35), (70, 35)]


def primer_part(bore: int = 15, through: bool = False):
    """The part of 06's CadQuery primer: a 200 x 120 x 20 plate with four holes and a boss on top, bored with a
    circle of radius ``bore``; ``through`` cuts the bore through the plate as well (the exercise's answer)."""
    import cadquery as cq   # deferred: the other checks of this module do not need CadQuery

    w0 = cq.Workplane("ZX", origin=(0, -30, 0))
    sketch = w0.sketch().rect(200, 120).push(PRIMER_HOLES).circle(10, mode="s")
    if through:
        sketch = sketch.push([(0, 0)]).circle(bore, mode="s")
    plate = sketch.finalize().extrude(20)
    return plate.union(w0.workplane(offset=20).sketch().circle(30).circle(bore, mode="s").finalize().extrude(40))


def expect_solid(got, hint: str = ""):
    """``got`` (a CadQuery Workplane holding a shape, or a Shape) as a CadQuery Shape; anything else raises ``Failed``."""
    import cadquery as cq

    shape = got
    if isinstance(got, cq.Workplane):
        if not got.vals():
            raise Failed("your function returned a Workplane with nothing on its stack; return the Workplane "
                         "that holds the part (the result of .extrude(...) or .union(...)).")
        values = got.vals()
        others = [v for v in values if not isinstance(v, cq.Shape)]
        # several shapes on the stack (two bodies never unioned) are checked together, as one compound
        shape = others[0] if others else values[0] if len(values) == 1 else cq.Compound.makeCompound(values)
    if not isinstance(shape, cq.Shape) or not shape.Solids():
        what = describe(got) if shape is got else f"a Workplane holding {describe(shape)}"
        raise Failed(f"your function returned {what}; return a CadQuery Workplane holding the solid part"
                     f"{f' ({hint})' if hint else ''}.")
    return shape


@exercise_check
def check_through_bore(fn) -> bool:
    """``fn(radius)`` must return the primer's part, its boss bored with a circle of ``radius`` and the bore cut
    through the plate too: one solid, equal to ``primer_part(radius, through=True)`` (no volume missing or extra)."""
    if not attempted(fn, 15):
        return False
    for radius in (15, 8):
        with case(f"radius {radius}"):
            got = expect_solid(fn(radius), "a Sketch becomes a solid with .finalize().extrude(depth)")
        expected, before = primer_part(radius, through=True).val(), primer_part(radius).val()
        n_solids = len(got.Solids())
        assert n_solids == 1, (f"radius {radius}: your part is {n_solids} separate solids; join the plate and the "
                               "boss with plate.union(boss).")
        volume = got.Volume()
        if abs(volume - before.Volume()) < 1e-3 * before.Volume():
            raise AssertionError(f"radius {radius}: volume {volume:.0f}, the primer's part unchanged - nothing was cut "
                                 "from the plate. Add .push([(0, 0)]).circle(radius, mode='s') to the plate's sketch "
                                 "(mode='s' subtracts; without it the circle is added, and changes nothing).")
        extra, missing = got.cut(expected).Volume(), expected.cut(got).Volume()
        assert extra < 1e-3 * expected.Volume() and missing < 1e-3 * expected.Volume(), (
            f"radius {radius}: your part has {extra:.0f} cubic units the expected part does not, and lacks "
            f"{missing:.0f} it has (volume {volume:.0f}, expected {expected.Volume():.0f}). The bore is a circle of "
            "this radius at (0, 0) of both sketches, the plate's and the boss's, cut with mode='s'; the rest of the "
            "part is unchanged.")
    print("check_through_bore: one solid, equal to the expected part for bore radius 15 and 8 ✓")
    return True
