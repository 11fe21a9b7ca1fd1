"""cadlab.cad.pointcloud: mesh loading errors, normalization, FPS against brute force, the CAD-Recode encoder."""

import numpy as np
import pytest
import torch
import trimesh

from cadlab.cad.pointcloud import (
    FourierPointEncoder,
    coverage_radius,
    farthest_point_sampling,
    load_mesh,
    mesh_to_point_cloud,
    normalize_mesh,
)
from cadlab.exercises import pointcloud as checks


def brute_force_fps(points: torch.Tensor, k: int, start: int = 0) -> list[int]:
    """The definition, recomputed from scratch each step: argmax_i min_{j chosen} ||p_i - p_j||^2 (first index on ties)."""
    chosen = [start]
    for _ in range(1, k):
        best, best_distance = None, -1.0
        for i in range(len(points)):
            distance = min(((points[i] - points[j]) ** 2).sum().item() for j in chosen)
            if distance > best_distance:
                best, best_distance = i, distance
        chosen.append(best)
    return chosen


# ---------------------------------------------------------------------------------------------
# Farthest-point sampling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,n,k,start", [(0, 60, 12, 0), (1, 40, 40, 0), (2, 80, 20, 17), (3, 5, 1, 3)])
def test_fps_equals_brute_force_on_random_points(seed, n, k, start):
    points = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))
    assert farthest_point_sampling(points, k, start).tolist() == brute_force_fps(points, k, start)


def test_fps_equals_brute_force_with_ties():
    # a 4x4x4 integer grid: many equal distances, both must take the lowest index
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    assert farthest_point_sampling(grid, 16).tolist() == brute_force_fps(grid, 16)


def test_fps_picks_distinct_points_and_accepts_numpy():
    points = np.random.default_rng(0).random((500, 3))
    chosen = farthest_point_sampling(points, 100)
    assert len(set(chosen.tolist())) == 100 and chosen[0] == 0
    assert torch.equal(chosen, farthest_point_sampling(torch.as_tensor(points), 100))


def test_fps_coverage_radius_is_the_next_farthest_distance():
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(4))
    order = farthest_point_sampling(points, 33)
    chosen, next_point = order[:32], order[32]
    nearest = torch.cdist(points[next_point][None].double(), points[chosen].double()).min().item()
    assert coverage_radius(points[chosen], points) == pytest.approx(nearest, rel=1e-6)


@pytest.mark.parametrize("k,start", [(0, 0), (11, 0), (3, 10), (3, -1)])
def test_fps_rejects_bad_arguments(k, start):
    with pytest.raises(ValueError):
        farthest_point_sampling(torch.rand(10, 3), k, start)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        farthest_point_sampling(torch.rand(10, 2), 3)


# ---------------------------------------------------------------------------------------------
# Meshes: loading, normalization, sampling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply"])
def test_load_mesh_round_trip(tmp_path, suffix):
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    path = tmp_path / f"box{suffix}"
    box.export(path)
    mesh = load_mesh(path)
    assert mesh.is_watertight and len(mesh.faces) == 12
    assert mesh.volume == pytest.approx(6.0) and mesh.area == pytest.approx(22.0)


def write(path, text):
    path.write_text(text)
    return path


def test_load_mesh_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mesh file"):
        load_mesh(tmp_path / "missing.stl")
    with pytest.raises(ValueError, match="not a file"):
        load_mesh(tmp_path)
    with pytest.raises(ValueError, match="unsupported suffix"):
        load_mesh(write(tmp_path / "part.step", "ISO-10303-21;"))
    with pytest.raises(ValueError, match="empty"):
        load_mesh(write(tmp_path / "empty.stl", ""))
    for name in ("notes.stl", "notes.obj"):
        with pytest.raises(ValueError, match="no triangles"):
            load_mesh(write(tmp_path / name, "this is not a mesh\n"))
    with pytest.raises(ValueError, match="could not be read"):
        load_mesh(write(tmp_path / "notes.ply", "this is not a mesh\n"))
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(cloud)
    with pytest.raises(ValueError, match="no triangles"):
        load_mesh(cloud)


def test_load_mesh_rejects_degenerate_and_non_finite_geometry(tmp_path):
    faces = [[0, 1, 2]]
    flat = tmp_path / "flat.stl"
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], faces, process=False).export(flat)
    with pytest.raises(ValueError, match="zero area"):
        load_mesh(flat)
    for suffix in (".stl", ".obj"):
        path = tmp_path / f"nan{suffix}"
        trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], faces, process=False).export(path)
        with pytest.raises(ValueError, match="NaN or infinite"):
            load_mesh(path)


def test_normalize_mesh_bounds():
    box = trimesh.creation.box(bounds=[[3.0, -2.0, 10.0], [7.0, 0.0, 11.0]])  # extents 4, 2, 1
    normalized = normalize_mesh(box)
    np.testing.assert_allclose(normalized.bounds, [[-1, -0.5, -0.25], [1, 0.5, 0.25]], atol=1e-12)
    np.testing.assert_allclose(box.bounds, [[3, -2, 10], [7, 0, 11]])  # the input is untouched
    np.testing.assert_allclose(normalize_mesh(normalized).vertices, normalized.vertices, atol=1e-12)
    with pytest.raises(ValueError, match="no size"):
        normalize_mesh(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False))


def test_mesh_to_point_cloud_is_deterministic_and_normalized():
    mesh = trimesh.creation.cylinder(radius=3.0, height=10.0, sections=32)
    mesh.apply_translation([5, 5, 5])
    cloud = mesh_to_point_cloud(mesh)
    assert cloud.shape == (256, 3) and cloud.dtype == np.float32
    np.testing.assert_array_equal(cloud, mesh_to_point_cloud(mesh, seed=0))
    assert not np.array_equal(cloud, mesh_to_point_cloud(mesh, seed=1))
    assert np.abs(cloud).max() <= 1 + 1e-6 and cloud[:, 2].max() - cloud[:, 2].min() > 1.9
    # the points lie on the normalized surface: radius 3 -> 0.6, caps at z = ±1 (sides are 32 flat chords)
    radius, on_cap = np.hypot(cloud[:, 0], cloud[:, 1]), np.abs(np.abs(cloud[:, 2]) - 1) < 1e-5
    on_side = (radius > 0.6 * np.cos(np.pi / 32) - 1e-5) & (radius < 0.6 + 1e-5)
    assert (on_cap | on_side).all() and (radius < 0.6 + 1e-5).all()
    assert mesh_to_point_cloud(mesh, n_points=64, n_pre_points=64).shape == (64, 3)
    with pytest.raises(ValueError, match="at least n_points"):
        mesh_to_point_cloud(mesh, n_points=300, n_pre_points=200)


def test_fps_covers_better_than_random():
    mesh = normalize_mesh(trimesh.creation.box((1.0, 0.5, 2.0)))
    surface, _ = trimesh.sample.sample_surface(mesh, 8192, seed=0)
    fps = mesh_to_point_cloud(mesh, normalize=False)
    random = surface[np.random.default_rng(0).choice(8192, 256, replace=False)]
    assert coverage_radius(fps, surface) < 0.75 * coverage_radius(random, surface)


# ---------------------------------------------------------------------------------------------
# FourierPointEncoder (CAD-Recode v1.5 layout)
# ---------------------------------------------------------------------------------------------
def test_encoder_keys_and_buffer():
    encoder = FourierPointEncoder(32)
    assert list(encoder.state_dict()) == ["projection.weight", "projection.bias"]
    assert "frequencies" not in encoder.state_dict()
    assert [name for name, _ in encoder.named_buffers()] == ["frequencies"]
    torch.testing.assert_close(encoder.frequencies, torch.tensor([1.0, 2, 4, 8, 16, 32, 64, 128]))
    assert encoder.projection.weight.shape == (32, 51) and encoder.projection.bias.shape == (32,)
    # a checkpoint saved from it loads strictly into a fresh one
    FourierPointEncoder(32).load_state_dict(encoder.state_dict(), strict=True)


def test_encoder_feature_layout():
    encoder = FourierPointEncoder(8)
    points = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = encoder.fourier_features(points)
    assert features.shape == (2, 5, 51)
    torch.testing.assert_close(features[..., :3], points)
    for axis in range(3):
        for j in range(8):
            angle = points[..., axis] * 2.0 ** j
            torch.testing.assert_close(features[..., 3 + 8 * axis + j], torch.sin(angle))
            torch.testing.assert_close(features[..., 27 + 8 * axis + j], torch.cos(angle))


def test_encoder_forward_is_the_projection_of_the_features():
    torch.manual_seed(0)
    encoder = FourierPointEncoder(16)
    points = torch.rand(3, 256, 3) * 2 - 1
    out = encoder(points)
    assert out.shape == (3, 256, 16)
    expected = encoder.fourier_features(points) @ encoder.projection.weight.T + encoder.projection.bias
    torch.testing.assert_close(out, expected)
    # each point is encoded independently: permuting points permutes the outputs
    permutation = torch.randperm(256)
    torch.testing.assert_close(encoder(points[:, permutation]), out[:, permutation])


def test_encoder_in_bfloat16_and_bad_shapes():
    encoder = FourierPointEncoder(16)
    points = torch.rand(1, 10, 3)
    reference = encoder(points)
    half = FourierPointEncoder(16).to(torch.bfloat16)
    half.load_state_dict(encoder.state_dict())
    out = half(points)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=5e-2, rtol=5e-2)
    assert half.frequencies.tolist() == [1, 2, 4, 8, 16, 32, 64, 128]  # powers of two survive bf16
    with pytest.raises(ValueError, match="points\\[None\\]"):
        encoder(torch.rand(10, 3))


# ---------------------------------------------------------------------------------------------
# Exercise checks: the reference solutions pass, stubs are "not attempted"
# ---------------------------------------------------------------------------------------------
def test_exercise_checks_accept_reference_and_flag_stubs():
    def stub(*args):
        raise NotImplementedError

    def normalize_points(points):
        low, high = points.min(axis=0), points.max(axis=0)
        return (points - (low + high) / 2) * 2 / (high - low).max()

    def chamfer(p, q):
        squared = torch.cdist(p, q) ** 2
        return squared.min(dim=1).values.mean() + squared.min(dim=0).values.mean()

    assert checks.check_fourier_features(lambda p: FourierPointEncoder(1).fourier_features(p))
    assert checks.check_normalize_points(normalize_points)
    assert checks.check_chamfer(chamfer)
    assert not checks.check_fourier_features(stub)
    assert not checks.check_normalize_points(stub)
    assert not checks.check_chamfer(stub)
    with pytest.raises(AssertionError):
        checks.check_fourier_features(  # frequency-major order (f0: x, y, z; f1: ...) is the classic mistake
            lambda p: torch.cat((p, *[torch.sin(p * 2.0 ** j) for j in range(8)], *[torch.cos(p * 2.0 ** j) for j in range(8)]), -1))
    with pytest.raises(AssertionError):
        checks.check_chamfer(lambda p, q: torch.cdist(p, q).min(dim=1).values.mean() + torch.cdist(p, q).min(dim=0).values.mean())
    with pytest.raises(AssertionError):   # one direction only
        checks.check_chamfer(lambda p, q: (torch.cdist(p, q) ** 2).min(dim=1).values.mean())
    with pytest.raises(AssertionError, match="bounding-box CENTRE"):   # the mean of the points, not the box centre
        checks.check_normalize_points(lambda p: (p - p.mean(axis=0)) * (2.0 / np.ptp(p, axis=0).max()))
    with pytest.raises(AssertionError, match="same 2 / longest side"):   # each axis scaled on its own
        checks.check_normalize_points(lambda p: (p - (p.min(0) + p.max(0)) / 2) * (2.0 / np.ptp(p, axis=0)))
