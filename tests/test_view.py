"""cadlab.cad.view: meshes and point clouds side by side in one rotatable, offline three.js viewer."""

import base64
import html
import re

import numpy as np
import pytest
import trimesh

from cadlab.cad.view import view


@pytest.fixture(scope="module")
def box():
    return trimesh.creation.box((40, 20, 6))


def _page(output) -> str:
    """The viewer page inside the iframe's srcdoc."""
    frames = re.findall(r'<iframe srcdoc="([^"]*)"', output.data)
    assert len(frames) == 1
    return html.unescape(frames[0])


def _glb(page: str) -> trimesh.Scene:
    encoded = re.search(r'base64_data="([A-Za-z0-9+/=]+)"', page).group(1)
    return trimesh.load(trimesh.util.wrap_as_stream(base64.b64decode(encoded)), file_type="glb")


def test_a_mesh_and_a_cloud_in_one_viewer(box):
    points = box.sample(100)
    output = view(points, box, titles=["input: 100 points", "prediction"])
    assert output.data.count("<iframe") == 1 and output.data.count("new THREE.WebGLRenderer(") == 1
    assert "input: 100 points" in output.data and "prediction" in output.data
    scene = _glb(_page(output))
    assert len(scene.geometry) == 2
    cloud, solid = (scene.geometry[name] for name in sorted(scene.geometry))
    assert len(cloud.faces) == 100 * 20            # one small sphere (an icosahedron) per point
    # each item fits the unit frame (longest side 2), set side by side along x, left to right
    assert np.isclose(solid.extents.max(), 2.0) and cloud.bounds[1, 0] < solid.bounds[0, 0]


def test_three_js_is_inline_nothing_is_fetched(box):
    page = _page(view(box))
    assert not re.search(r'<script[^>]+src=|<link[^>]+href=|@import', page, re.I)
    assert not re.search(r'(src|href)\s*=\s*["\']?https?://', page, re.I)
    assert "three.js" in page.lower()[:2000]         # the library itself is in the page


def test_several_items_make_exactly_one_viewer(box):
    single, triple = view(box), view(box, box.sample(50), box)
    assert triple.data.count("<iframe") == 1
    assert triple.data.count("Three.js Authors") == single.data.count("Three.js Authors") == 1
    assert len(triple.data) < len(single.data) + 300_000     # the second and third items add geometry only


@pytest.mark.parametrize("bad, words", [
    ("a string", "pass trimesh.Trimesh meshes or (N, 3)"),
    (None, "is a NoneType"),
    (np.zeros((10, 2)), "(N, 3) array"),
    (np.zeros((0, 3)), "N >= 1"),
    (np.array([[0.0, 0.0, np.nan], [1.0, 1.0, 1.0]]), "NaN"),
    (trimesh.Trimesh(), "empty mesh"),
])
def test_bad_items_say_what_to_pass(bad, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        view(bad)


def test_clouds_as_tensors_lists_and_point_clouds(box):
    import torch

    points = box.sample(20)
    for cloud in (torch.from_numpy(points), points.tolist(), trimesh.PointCloud(points)):
        assert len(_glb(_page(view(cloud, colors=["orange"]))).geometry) == 1


def test_titles_and_colours_one_per_item(box):
    with pytest.raises(ValueError, match="one title per item"):
        view(box, box, titles=["only one"])
    with pytest.raises(ValueError, match="one colour per item"):
        view(box, colors=["#ff0000", "#00ff00"])
    with pytest.raises(ValueError, match="not a colour"):
        view(box, colors=["#12345"])
    with pytest.raises(ValueError, match="nothing to show"):
        view()
    assert "&lt;b&gt;" in view(box, titles=["<b>"]).data          # titles are text, not markup
