"""cadlab.cad.render: Cadrille's four-view picture, rendered headless with VTK."""

import numpy as np
import pytest
import trimesh

from cadlab.cad.render import (COLOUR, feature_edges, render_part, render_view_arrays, render_views, tile_views,
                                unit_cube_mesh)


@pytest.fixture(scope="module")
def part():
    """An L-shaped part (a plate and a peg off-centre), so the four views differ."""
    plate = trimesh.creation.box((40, 20, 6))
    peg = trimesh.creation.cylinder(radius=4, height=16)
    peg.apply_translation((14, 0, 8))
    return trimesh.util.concatenate([plate, peg])


def test_unit_cube_mesh(part):
    cube = unit_cube_mesh(part)
    assert np.allclose(cube.bounds.mean(axis=0), 0.5) and np.isclose(cube.extents.max(), 1.0)
    with pytest.raises(ValueError):
        unit_cube_mesh(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]]))


def test_tile_views_frames_and_tiles():
    views = [np.full((128, 128, 3), 50 * (k + 1), dtype=np.uint8) for k in range(4)]
    picture = np.asarray(tile_views(views))
    assert picture.shape == (268, 268, 3)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        cell = picture[134 * r:134 * (r + 1), 134 * c:134 * (c + 1)]
        assert (cell[:3] == 0).all() and (cell[-3:] == 0).all() and (cell[:, :3] == 0).all() and (cell[:, -3:] == 0).all()
        assert (cell[3:-3, 3:-3] == 50 * (k + 1)).all()
    with pytest.raises(ValueError, match="four views"):
        tile_views(views[:3])


def test_four_views_headless(part):
    shots = render_view_arrays(unit_cube_mesh(part), size=160)
    assert [s.shape for s in shots] == [(160, 160, 3)] * 4
    for shot in shots:
        assert (shot[0, 0] == 255).all()                        # white background in the corners
        assert (shot[80, 80] < 250).any()                       # the part is in the middle of the view
        inside = shot[(shot < 250).any(axis=-1)].astype(float)
        # lit faces keep the colour's ratio blue / red = 136 / 255 (shading scales all channels alike)
        bright = inside[inside[:, 0] > 100]
        assert np.allclose(bright[:, 2] / bright[:, 0], COLOUR[2] / COLOUR[0], atol=0.08)
        assert np.allclose(bright[:, 1], bright[:, 0], atol=3)
    assert all(not np.array_equal(shots[0], other) for other in shots[1:])   # four different viewpoints
    picture = render_views(part)
    assert picture.size == (268, 268) and picture.mode == "RGB"
    assert (np.asarray(picture)[:3] == 0).all()


# ---- render_part: the course's clean pictures of a part -------------------------------------------------

@pytest.fixture(scope="module")
def plate_with_hole():
    """A 40 x 40 x 6 plate with a radius-8 through hole along z, in the middle."""
    plate = trimesh.creation.box((40, 40, 6))
    return plate.difference(trimesh.creation.cylinder(radius=8, height=20, sections=48))


def test_render_part_size_and_dtype(plate_with_hole):
    full = render_part(plate_with_hole, size=160, crop=False)
    assert full.shape == (160, 160, 3) and full.dtype == np.uint8
    cropped = render_part(plate_with_hole, size=160)
    assert cropped.dtype == np.uint8 and cropped.ndim == 3 and max(cropped.shape[:2]) <= 160
    assert (cropped[0] > 245).all() and (cropped[:, 0] > 245).all()       # a white margin is kept round it
    assert (cropped < 200).any(axis=-1).mean() > 0.3                      # and the part fills the picture


def test_render_part_sees_through_a_hole(plate_with_hole):
    top = render_part(plate_with_hole, direction=(0, 0, 1), size=160, crop=False)
    assert (top[80, 80] == 255).all(), "looking down the hole's axis, its middle must show the white background"
    assert (top[80, 80 + 50] < 240).any(), "the plate round the hole must be drawn"


def test_render_part_draws_feature_edges_dark():
    box = trimesh.creation.box((30, 20, 10))
    with_edges = render_part(box, size=160, crop=False).astype(int)
    without = render_part(box, size=160, crop=False, edges=False).astype(int)
    changed = np.abs(with_edges - without).max(axis=-1) > 40
    assert changed.sum() > 100, "the box's sharp edges must be drawn"
    assert (with_edges[changed] < without[changed]).all(axis=-1).mean() > 0.95, "edge lines darken the picture"
    darkest = np.percentile(with_edges[changed].max(axis=-1), 25)
    assert darkest < 90, "edge lines are dark (their anti-aliased rims less so)"
    assert set(map(tuple, feature_edges(box).tolist())) and len(feature_edges(box)) == 12   # a box: 12 sharp edges


def test_render_part_shades_each_flat_face_in_one_shade():
    plate = trimesh.creation.box((40, 40, 4))
    top = render_part(plate, direction=(0.3, -0.3, 1), size=160, crop=False, edges=False)
    middle = top[60:100, 60:100].reshape(-1, 3)
    # flat shading: the top face is one shade; smoothed vertex normals (tilted at the plate's rim) would
    # shade it as a gradient, which is how a flat plate comes to look like a pyramid
    assert (middle < 250).any(axis=-1).all() and (middle == middle[0]).all()
    box = trimesh.creation.box((30, 20, 10))
    picture = render_part(box, size=160, crop=False, edges=False)
    inside = picture[(picture < 250).any(axis=-1)].astype(int)
    shades, counts = np.unique(inside, axis=0, return_counts=True)
    three = shades[np.argsort(counts)[-3:]]
    assert np.sort(counts)[-3:].min() > 0.05 * len(inside), "three visible faces, each in its own shade"
    assert np.abs(three[:, None] - three[None]).max(axis=-1)[~np.eye(3, dtype=bool)].min() > 20, \
        "the three faces differ in shade (the light is not at the camera)"


def test_render_part_merges_vertices_first():
    box = trimesh.creation.box((30, 20, 10))
    unmerged = box.copy()
    unmerged.unmerge_vertices()                     # every face its own vertices: edges must still be found
    a, b = render_part(unmerged, size=96).astype(int), render_part(box, size=96).astype(int)
    assert a.shape == b.shape and (np.abs(a - b).max(axis=-1) > 60).sum() < 10   # no face diagonals drawn


def test_draw_mesh_puts_a_picture_on_a_2d_axis(plate_with_hole):
    from matplotlib.figure import Figure

    from cadlab.cad.plots import draw_mesh

    fig = Figure()
    ax3d = fig.add_subplot(1, 2, 2, projection="3d")
    ax = draw_mesh(ax3d, plate_with_hole, "plate")
    assert ax.name == "rectilinear" and ax.get_subplotspec().colspan == ax3d.get_subplotspec().colspan
    assert len(fig.axes) == 1 and len(ax.images) == 1 and ax.get_title() == "plate"


def test_the_reconstruct_preview_draws_the_solid_as_a_picture(plate_with_hole, tmp_path):
    from PIL import Image

    from cadlab.cad.plots import save_preview

    points = plate_with_hole.sample(256)
    for name, prediction in (("solid.png", plate_with_hole), ("none.png", None)):
        save_preview(tmp_path / name, points, prediction)
        picture = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert picture.shape == (400, 800, 3)
    solid, none = (np.asarray(Image.open(tmp_path / n).convert("RGB")).astype(int) for n in ("solid.png", "none.png"))
    right = (solid[:, 400:] < 200).any(axis=-1).mean()
    assert right > 0.2 and (none[:, 400:] < 200).any(axis=-1).mean() < 0.02   # a filled part, or just "no valid solid"


def test_flat_views_give_each_face_of_a_box_one_shade_and_its_own():
    """Seen along its diagonal, as all four of Cadrille's views see it, a box shows three faces; smooth
    shading (vertex normals) paints each as a gradient, flat shading each in one shade, and the three
    differ because the flat views are lit from off the camera's axis."""
    box = unit_cube_mesh(trimesh.creation.box((30, 20, 10)))
    for shading, one_shade in (("flat", True), ("smooth", False)):
        shot = render_view_arrays(box, directions=[(1, 1, 1)], size=200, shading=shading)[0]
        inside = shot[(shot < 250).any(axis=-1)].astype(int)
        shades, counts = np.unique(inside, axis=0, return_counts=True)
        top3 = np.sort(counts)[-3:].sum() / len(inside)
        assert (top3 > 0.8) == one_shade, f"{shading}: the three most common shades cover {top3:.0%}"
    flat = render_view_arrays(box, directions=[(1, 1, 1)], size=200, shading="flat")[0]
    inside = flat[(flat < 250).any(axis=-1)].astype(int)
    shades, counts = np.unique(inside, axis=0, return_counts=True)
    three = shades[np.argsort(counts)[-3:]]
    assert np.abs(three[:, None] - three[None]).max(axis=-1)[~np.eye(3, dtype=bool)].min() > 10
    assert render_views(box, shading="flat").size == (268, 268)
    with pytest.raises(ValueError, match="smooth, flat"):
        render_views(box, shading="glossy")
