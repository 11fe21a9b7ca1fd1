"""cadlab.cad.render: Cadrille's four-view picture, rendered headless with VTK."""

import numpy as np
import pytest
import trimesh

from cadlab.cad.render import COLOUR, render_view_arrays, render_views, tile_views, unit_cube_mesh


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
