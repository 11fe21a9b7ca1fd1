"""Self-checks for the exercises of 06_point_clouds.ipynb (Fourier features, normalization, Chamfer)."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from cadlab.cad.metrics import chamfer_distance_points
from cadlab.cad.pointcloud import FourierPointEncoder, normalize_mesh
from cadlab.exercises import attempted, case, exercise_check, expect_array, expect_number, expect_tensor


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
