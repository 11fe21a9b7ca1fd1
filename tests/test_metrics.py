"""cadlab.cad.metrics on analytic cases: identical shapes, overlapping boxes, offset planes, open meshes."""

import numpy as np
import pytest
import trimesh

from cadlab.cad.metrics import (
    CD_SCALE,
    best_chamfer,
    best_iou,
    chamfer_distance,
    chamfer_distance_points,
    invalid_ratio,
    iou,
    summarize,
    unit_frame,
)


def box(low, high):
    return trimesh.creation.box(bounds=[low, high])


def square(z=0.0):
    """The unit square [0, 1]^2 at height z, as two triangles (an open surface)."""
    return trimesh.Trimesh([[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]], [[0, 1, 2], [0, 2, 3]])


# ---------------------------------------------------------------------------------------------
# Chamfer distance
# ---------------------------------------------------------------------------------------------
def test_chamfer_points_by_hand():
    # p -> q: 1^2 = 1; q -> p: (1^2 + 3^2) / 2 = 5; sum 6
    assert chamfer_distance_points([[0, 0, 0]], [[1, 0, 0], [3, 0, 0]]) == 6.0
    assert chamfer_distance_points([[1, 2, 3]], [[1, 2, 3]]) == 0.0
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        chamfer_distance_points(np.zeros((0, 3)), np.zeros((2, 3)))


def test_chamfer_of_a_shape_with_itself_is_the_sampling_floor():
    # the same samples: exactly 0
    p, _ = trimesh.sample.sample_surface(trimesh.creation.icosphere(3), 8192, seed=0)
    assert chamfer_distance_points(p, p) == 0.0
    # independent samples (as the papers): 2 * A / (pi * N), A = area in the unit frame
    for mesh, frame_area in [(square(), 1.0), (box([0, 0, 0], [1, 1, 1]), 6.0),
                             (trimesh.creation.icosphere(5), np.pi * 0.5 ** 2 * 4)]:
        floor = 2 * frame_area / (np.pi * 8192)
        assert chamfer_distance(mesh, mesh) == pytest.approx(floor, rel=0.05)
    assert chamfer_distance(square(), square(), seed=3) == chamfer_distance(square(), square(), seed=3)


def test_chamfer_ignores_scale_and_offset_in_the_unit_frame():
    mesh = box([0, 0, 0], [1, 2, 3])
    moved = mesh.copy()
    moved.apply_scale(7.0)
    moved.apply_translation([10, -4, 2])
    # the same random draws land on corresponding points: identical to the mesh against itself
    assert chamfer_distance(mesh, moved) == pytest.approx(chamfer_distance(mesh, mesh), rel=1e-9)
    assert chamfer_distance(mesh, moved, normalize=False) > 1.0


@pytest.mark.parametrize("h", [0.05, 0.1, 0.3])
def test_chamfer_of_offset_planes_is_2h_squared_plus_the_floor(h):
    # every pair of points is at least h apart, so CD >= 2 h^2 exactly; the in-plane gaps add the
    # floor 2 / (pi N) of a unit square on top
    cd = chamfer_distance(square(0.0), square(h), normalize=False)
    assert 2 * h * h <= cd
    assert cd == pytest.approx(2 * h * h + 2 / (np.pi * 8192), rel=0.01)


def test_chamfer_of_concentric_spheres():
    inner, outer = trimesh.creation.icosphere(5, radius=1.0), trimesh.creation.icosphere(5, radius=1.1)
    # radial gap 0.1 both ways: 2 * 0.1^2 = 0.02, plus a little of the in-surface floor
    cd = chamfer_distance(inner, outer, normalize=False)
    assert 0.02 < cd < 0.02 + 2 * 4 * np.pi * 1.1 ** 2 / (np.pi * 8192)
    # in the unit frame both are the same sphere: only the floor is left
    assert chamfer_distance(inner, outer) == pytest.approx(chamfer_distance(inner, inner), rel=0.05)


def test_chamfer_sees_shape_differences_in_the_unit_frame():
    cube, slab = box([0, 0, 0], [1, 1, 1]), box([0, 0, 0], [1, 1, 0.5])
    cd = chamfer_distance(cube, slab)
    assert cd * CD_SCALE > 10  # a shape change of a quarter of the size is a large CD x 1000
    assert chamfer_distance(slab, cube) == pytest.approx(cd, rel=0.05)  # symmetric up to sampling


# ---------------------------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------------------------
def test_iou_of_a_shape_with_itself_is_one():
    for mesh in (box([0, 0, 0], [1, 2, 3]), trimesh.creation.icosphere(2), trimesh.creation.torus(1.0, 0.3)):
        assert iou(mesh, mesh) == pytest.approx(1.0, abs=1e-9)


def test_iou_of_overlapping_boxes():
    a, b = box([0, 0, 0], [2, 2, 2]), box([1, 0, 0], [3, 2, 2])
    assert iou(a, b, normalize=False) == pytest.approx(4 / 12)  # overlap 1x2x2 = 4, union 8 + 8 - 4
    c = box([1, 1, 1], [3, 3, 3])
    assert iou(a, c, normalize=False) == pytest.approx(1 / 15)  # overlap 1, union 8 + 8 - 1
    assert iou(a, box([5, 5, 5], [6, 6, 6]), normalize=False) == 0.0
    # in the unit frame the offset disappears, a change of shape does not: cube vs half-height slab
    assert iou(a, b) == pytest.approx(1.0)
    assert iou(box([0, 0, 0], [1, 1, 1]), box([0, 0, 0], [1, 1, 0.5])) == pytest.approx(0.5)


def test_iou_handles_inside_out_meshes_and_nested_solids():
    a = box([0, 0, 0], [2, 2, 2])
    flipped = a.copy()
    flipped.invert()
    assert iou(a, flipped, normalize=False) == pytest.approx(1.0)
    inner = box([0.5, 0.5, 0.5], [1.5, 1.5, 1.5])
    assert iou(a, inner, normalize=False) == pytest.approx(1 / 8)


def test_iou_of_a_cadquery_part_matches_its_volumes():
    cq = pytest.importorskip("cadquery")

    def mesh_of(shape):
        vertices, faces = shape.val().tessellate(0.001, 0.1)
        return trimesh.Trimesh([(v.x, v.y, v.z) for v in vertices], faces)

    plate = cq.Workplane("XY").box(40, 30, 10)
    holed = plate.faces(">Z").workplane().hole(12)
    exact = holed.val().Volume() / plate.val().Volume()   # the hole is inside the plate
    assert iou(mesh_of(plate), mesh_of(holed)) == pytest.approx(exact, rel=1e-3)


def test_iou_explains_open_meshes():
    a = box([0, 0, 0], [1, 1, 1])
    open_box = a.copy()
    open_box.update_faces(np.arange(10))  # drop the last two triangles: a missing face
    with pytest.raises(ValueError, match="not watertight .*4 edges"):
        iou(a, open_box)
    with pytest.raises(ValueError, match="not watertight"):
        iou(square(), a)


# ---------------------------------------------------------------------------------------------
# Invalid ratio, best of k, the summary row
# ---------------------------------------------------------------------------------------------
def test_invalid_ratio():
    mesh = box([0, 0, 0], [1, 1, 1])
    assert invalid_ratio([mesh, None, mesh, None]) == 0.5
    assert invalid_ratio([mesh]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        invalid_ratio([])


def test_best_of_k_picks_the_best_valid_candidate():
    target = box([0, 0, 0], [1, 1, 1])
    half, exact = box([0, 0, 0], [1, 1, 0.5]), box([3, 3, 3], [5, 5, 5])  # exact after normalization
    assert best_iou(target, [None, half, exact]) == pytest.approx(1.0)
    assert best_iou(target, [half, None]) == pytest.approx(0.5)
    assert best_chamfer(target, [half, exact, None]) == chamfer_distance(target, exact)
    assert best_chamfer(target, [half, exact, None]) < chamfer_distance(target, half) / 10
    assert best_chamfer(target, [None, None]) is None and best_iou(target, []) is None


def test_summarize():
    target = box([0, 0, 0], [1, 1, 1])
    half = box([0, 0, 0], [1, 1, 0.5])
    tenth = box([0, 0, 0], [1, 1, 0.1])
    row = summarize([target] * 4, [[target], [half, None], [None, None], [tenth, half]])
    assert row["invalid_ratio"] == pytest.approx(1 / 4)
    # best of k per input: IoU 1, 0.5 and (best of 0.1 and 0.5) 0.5 -> mean 2/3
    assert row["mean_iou"] == pytest.approx(2 / 3)
    cds = sorted([chamfer_distance(target, target), chamfer_distance(target, half),
                  min(chamfer_distance(target, tenth), chamfer_distance(target, half))])
    assert cds[0] < cds[1] == cds[2] or cds[0] < cds[1] < cds[2]
    # three values: the median is the middle one, not the mean (as two inputs would allow)
    assert row["median_cd_x1000"] == pytest.approx(cds[1] * CD_SCALE)
    assert row["mean_cd_x1000"] == pytest.approx(np.mean(cds) * CD_SCALE)
    assert row["median_cd_x1000"] != pytest.approx(row["mean_cd_x1000"])
    with pytest.raises(ValueError, match="one candidate list per target"):
        summarize([target], [])


def test_unit_frame():
    mesh = box([3, -2, 10], [7, 0, 11])
    np.testing.assert_allclose(unit_frame(mesh).bounds, [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], atol=1e-12)
