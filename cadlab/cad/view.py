"""A part you can turn around: ``view(mesh, points, ...)`` shows meshes and point clouds in one rotatable
three.js viewer inside the notebook (drag to rotate, scroll to zoom, right-drag to pan).

It is trimesh's notebook viewer (``trimesh.viewer.notebook.scene_to_html``): the scene is written as a GLB
file, base64-encoded, into a page that carries all of three.js inline, shown in an ``<iframe srcdoc=...>``.
Nothing is fetched, so it works with no network and survives an HTML export of the notebook.

Why one scene. That page is about 700 KB of three.js whatever the geometry, so each item in its own viewer
would cost 700 KB of notebook per item. Instead every item is scaled into the same unit frame (its bounding
box centred, the longest side 2, as ``cadlab.cad.pointcloud.normalize_mesh`` does) and the items are set
side by side along x, left to right in the order given, with their titles in a row under the viewer.

A point cloud is drawn as one small sphere per point (a GLB point primitive draws 1-px dots). Meshes carry
no normals in the file, so three.js shades each face flat: a flat plate stays flat.
"""

from __future__ import annotations

import html

import numpy as np
import trimesh
from IPython.display import HTML

POINTS = "#3a76c4"           # input points, blue
PREDICTION = "#f4b183"       # a predicted solid, orange
TRUTH = "#8fb8de"            # the ground truth, light blue
GAP = 0.6                    # space between two items, in the unit frame (each item is 2 wide at most)
POINT_RADIUS = 0.03


def _item(item, index: int) -> tuple[trimesh.Trimesh, bool]:
    """``item`` as a mesh in the unit frame (centred, longest side 2), and whether it was a point cloud."""
    where = f"view: item {index}"
    if isinstance(item, trimesh.Trimesh):
        if len(item.faces) == 0 or not np.isfinite(item.vertices).all():
            raise ValueError(f"{where} is an empty mesh or has non-finite vertices; pass a solid with faces "
                             "(e.g. the .mesh of a built solid).")
        vertices, cloud = np.asarray(item.vertices, dtype=float), False
    elif isinstance(item, trimesh.PointCloud | list | tuple) or hasattr(item, "__array__"):   # numpy, torch
        vertices, cloud = np.asarray(getattr(item, "vertices", item), dtype=float), True
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
            raise ValueError(f"{where} has shape {vertices.shape}; a point cloud must be an (N, 3) array "
                             "with N >= 1 (x, y, z per row).")
        if not np.isfinite(vertices).all():
            raise ValueError(f"{where} has NaN or infinite coordinates; drop those rows before viewing.")
    else:
        raise ValueError(f"{where} is a {type(item).__name__}; pass trimesh.Trimesh meshes or (N, 3) arrays "
                         "of points.")
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extent = float(np.max(high - low))
    scale = 2.0 / extent if extent > 0 else 1.0
    vertices = (vertices - (low + high) / 2) * scale
    if not cloud:
        return trimesh.Trimesh(vertices, np.asarray(item.faces), process=False), False
    ball = trimesh.creation.icosphere(subdivisions=0, radius=POINT_RADIUS)
    faces = (ball.faces[None] + len(ball.vertices) * np.arange(len(vertices))[:, None, None]).reshape(-1, 3)
    spheres = (ball.vertices[None] + vertices[:, None]).reshape(-1, 3)
    return trimesh.Trimesh(spheres, faces, process=False), True


def _camera(scene: trimesh.Scene, aspect: float, direction=(0.0, -1.0, 0.8)) -> None:
    """Look at the whole row from the front and above (z up), from the distance where the row fills the
    view's width (three.js keeps the vertical field of view and stretches the horizontal one to the frame)."""
    back = np.asarray(direction, dtype=float) / np.linalg.norm(direction)   # camera's +z points at the viewer
    right = np.cross((0.0, 0.0, 1.0), back)
    right /= np.linalg.norm(right)
    rotation = np.eye(4)
    rotation[:3, :3] = np.column_stack([right, np.cross(back, right), back])
    yfov = 45.0
    xfov = np.degrees(2 * np.arctan(np.tan(np.radians(yfov / 2)) * aspect))
    scene.camera.fov = (xfov, yfov)
    scene.camera_transform = trimesh.scene.cameras.look_at(trimesh.bounds.corners(scene.bounds), (xfov, yfov),
                                                           rotation=rotation, pad=1.1)


def view(*items, titles=None, colors=None, height: int = 360, width: int | None = None) -> HTML:
    """One rotatable viewer with ``items`` (trimesh meshes and (N, 3) point clouds) side by side, left to
    right; ``titles`` (one per item) are written under it. ``colors``: one matplotlib colour per item (default:
    points blue, the first mesh orange as a prediction, further meshes light blue as the truth). ``width``
    (px): the viewer's width, else the cell's."""
    from matplotlib.colors import to_rgb

    if not items:
        raise ValueError("view: nothing to show; pass meshes and/or (N, 3) point clouds, e.g. view(points, mesh).")
    titles = list(titles) if titles is not None else [""] * len(items)
    if len(titles) != len(items):
        raise ValueError(f"view: {len(titles)} titles for {len(items)} items; pass one title per item.")
    shapes = [_item(item, k) for k, item in enumerate(items)]
    if colors is None:
        meshes = iter([PREDICTION] + [TRUTH] * len(items))
        colors = [POINTS if cloud else next(meshes) for _, cloud in shapes]
    if len(colors) != len(items):
        raise ValueError(f"view: {len(colors)} colours for {len(items)} items; pass one colour per item.")
    scene = trimesh.Scene()
    for k, ((mesh, _), color) in enumerate(zip(shapes, colors)):
        mesh.apply_translation((k * (2.0 + GAP), 0.0, 0.0))
        try:
            rgb = np.array(to_rgb(color))
        except ValueError:
            raise ValueError(f"view: colour {color!r} of item {k} is not a colour; pass e.g. '#f4b183' or "
                             "'orange'.") from None
        # the viewer's one light (at the camera, 1.75 strong) would wash a face facing it out to white: the base
        # colour is dimmed, and a little emission keeps the faces turned away from the light readable
        mesh.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
            baseColorFactor=np.append(0.6 * rgb, 1.0), emissiveFactor=0.25 * rgb, metallicFactor=0.0,
            roughnessFactor=1.0))
        scene.add_geometry(mesh, geom_name=f"item{k}")
    _camera(scene, aspect=(width or 900) / height)
    from trimesh.viewer.notebook import scene_to_html

    page = scene_to_html(scene, escape_quotes=True)
    size, row = (f'width="{width}px"', f"width:{width}px;") if width else ('width="100%"', "")
    labels = "".join(f'<div style="flex:1;text-align:center">{html.escape(str(t))}</div>' for t in titles)
    return HTML(f'<div><iframe srcdoc="{page}" {size} height="{height}px" style="border:none;"></iframe>'
                f'<div style="display:flex;font:13px sans-serif;color:#333;{row}">'
                f'{labels}</div></div>')
