"""The model-free baselines of notebook 07: the cloud's bounding box as a program, and retrieval of the
nearest training program; and the two ways of counting a pool of programs."""

import numpy as np
import pytest
import trimesh

from cadlab.cad.baselines import (
    LIBRARY_PATH,
    RetrievalLibrary,
    bounding_box_program,
    cloud_chamfer_many,
    load_library,
)
from cadlab.cad.metrics import chamfer_distance_points, iou
from cadlab.cad.part_sets import TEST_START
from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.sandbox import closed_solid, run_cadquery
from cadlab.train.cadrecode import count_pool


def test_the_bounding_box_program_builds_the_box_around_the_cloud():
    box = trimesh.creation.box(extents=(2.0, 1.2, 0.6))
    box.apply_translation((0.0, -0.3, 0.2))
    points = mesh_to_point_cloud(box, n_points=256, seed=0)
    solid = closed_solid(run_cadquery(bounding_box_program(points)))
    assert solid is not None
    np.testing.assert_allclose(solid.bounds, [points.min(axis=0) * 100, points.max(axis=0) * 100], atol=0.5 + 1e-6)
    assert iou(box, solid) > 0.98          # a box's own bounding box is the box (up to the grid)


def test_the_bounding_box_of_an_l_shape_scores_its_fill_ratio():
    l_shape = trimesh.boolean.union([trimesh.creation.box(extents=(2, 1, 1), transform=trimesh.transformations.translation_matrix((0, -0.5, 0))),
                                     trimesh.creation.box(extents=(1, 1, 1), transform=trimesh.transformations.translation_matrix((-0.5, 0.5, 0)))],
                                    engine="manifold")
    points = mesh_to_point_cloud(l_shape, n_points=256, seed=0)
    solid = closed_solid(run_cadquery(bounding_box_program(points)))
    assert iou(l_shape, solid) == pytest.approx(l_shape.volume / (2 * 2 * 1), abs=0.03)   # 3 of 4 cells: 0.75


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros((5, 2)), np.full((4, 3), np.nan), [[1, 2]]])
def test_the_bounding_box_program_refuses_what_is_not_a_cloud(bad):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        bounding_box_program(bad)


def test_the_batched_chamfer_equals_the_reference_one():
    rng = np.random.default_rng(0)
    query, clouds = rng.uniform(-1, 1, (50, 3)), rng.uniform(-1, 1, (7, 40, 3))
    got = cloud_chamfer_many(query, clouds, batch=3)
    want = [chamfer_distance_points(query, c) for c in clouds]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_retrieval_finds_a_library_cloud_itself_and_survives_a_save(tmp_path):
    rng = np.random.default_rng(1)
    library = RetrievalLibrary(np.arange(20), np.array([f"program {i}" for i in range(20)]),
                               rng.uniform(-1, 1, (20, 64, 3)).astype(np.float32))
    seed, code, distance = library.nearest(library.clouds[13])[0]
    assert (seed, code, distance) == (13, "program 13", pytest.approx(0.0, abs=1e-6))   # float32 round-off
    assert [s for s, _, _ in library.nearest(library.clouds[4], k=3)][0] == 4
    library.save(tmp_path / "lib.npz", n_points=64)
    loaded = load_library(tmp_path / "lib.npz")
    assert np.abs(loaded.clouds - library.clouds).max() <= 1 / 255 + 1e-6
    library.save(tmp_path / "short.npz", n_points=16)
    assert load_library(tmp_path / "short.npz").clouds.shape == (20, 16, 3)
    assert loaded.codes.tolist() == library.codes.tolist() and loaded.seeds.tolist() == library.seeds.tolist()
    assert loaded.nearest(library.clouds[13])[0][0] == 13


def test_a_missing_library_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--build-library"):
        load_library(tmp_path / "none.npz")


def test_the_shipped_library_holds_training_programs_only():
    library = load_library(LIBRARY_PATH)
    assert len(library) > 1000
    assert library.seeds.min() >= 0 and library.seeds.max() < TEST_START
    assert library.clouds.shape[1:] == (128, 3)
    from cadlab.cad.synth import normalized_program
    for i in (0, len(library) // 2, len(library) - 1):
        assert normalized_program(int(library.seeds[i]))[0] == library.codes[i]


def test_the_shortlist_finds_what_the_exhaustive_search_finds():
    from cadlab.cad.part_sets import held_out_set
    library, clouds = load_library(LIBRARY_PATH), held_out_set(progress=False)["points"]
    for cloud in clouds[::40]:
        fast, full = library.nearest(cloud, k=3), library.nearest(cloud, k=3, shortlist=None)
        assert [seed for seed, _, _ in fast] == [seed for seed, _, _ in full]
        assert [d for _, _, d in fast] == pytest.approx([d for _, _, d in full], rel=1e-5)


def test_a_pool_is_counted_both_ways():
    rows = [
        {"pool": [{"cloud_cd": 0.2, "iou": 0.5, "cd_x1000": 1}, {"cloud_cd": 0.1, "iou": 0.4, "cd_x1000": 1},
                  {"cloud_cd": 0.3, "iou": 0.9, "cd_x1000": 1}]},
        {"pool": [None, None, None]},                                                      # nothing valid
        {"pool": [None, {"cloud_cd": 0.5, "iou": 0.6, "cd_x1000": 1}, None]},
    ]
    counted = count_pool(rows, ks=(1, 3))
    assert counted["k1"] == {"by_cloud_invalid_as_0": pytest.approx(0.5 / 3), "by_truth_valid_only": 0.5,
                             "invalid_ratio": pytest.approx(2 / 3)}
    assert counted["k3"] == {"by_cloud_invalid_as_0": pytest.approx((0.4 + 0 + 0.6) / 3),
                             "by_truth_valid_only": pytest.approx((0.9 + 0.6) / 2), "invalid_ratio": pytest.approx(1 / 3)}


def test_the_fill_ratio_is_the_iou_with_the_bounding_box():
    from cadlab.exercises.cadrecode import box_iou_parts
    for name, part in box_iou_parts().items():
        assert iou(part, part.bounding_box.to_mesh()) == pytest.approx(part.volume / np.prod(part.extents), abs=1e-6), name


@pytest.mark.parametrize("wrong, hint", [
    (lambda mesh: mesh.volume / np.max(mesh.extents) ** 3, "cube of its longest side"),
    (lambda mesh: np.prod(mesh.extents) / mesh.volume, "upside down"),
    (lambda mesh: mesh.volume, "three side lengths"),
])
def test_the_box_iou_exercise_fails_plausible_wrong_answers(wrong, hint):
    from cadlab.exercises.cadrecode import check_box_iou
    with pytest.raises(AssertionError, match=hint):
        check_box_iou(wrong)
