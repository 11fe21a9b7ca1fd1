"""Cadrille's image input: four shaded views of a mesh, tiled 2 x 2 into one 268 x 268 picture.

Cadrille renders each training and test mesh (normalized into the unit cube [0, 1]^3) four times,
looking at the cube's centre (0.5, 0.5, 0.5) from the directions (1, 1, 1), (-1, -1, -1),
(-1, 1, -1) and (1, -1, 1), with up = (0, 1, 0), the mesh painted (255, 255, 136) / 255 and shaded
with its vertex normals; each shot is shrunk to 128 x 128, framed by a 3-px black border, and the
four are tiled [[v0, v1], [v2, v3]] (``tile_views``): 2 * (128 + 6) = 268 px.

Renderer. Measured on our machines (Linux, no display, 2 CPU cores, Mesa's software EGL): VTK,
which CadQuery already installs (vtk 9.6), renders off screen through EGL, about 1.3 s for the
four 500-px views once warm. open3d 0.20 (the renderer Cadrille used) also renders headless here,
its legacy ``Visualizer`` falling back to an EGL off-screen context, but it is a ~900 MB wheel with
some fifteen further packages (dash, flask, plotly, ...) and it does not import without the system
library libusb-1.0 (a Debian package, not on PyPI). pyrender pins PyOpenGL 3.1.0 and needs EGL or
OSMesa chosen by hand. So this module uses VTK: on Linux without a display it asks for an EGL
window directly (no X connection attempt), elsewhere VTK's default window, off screen.

What differs from Cadrille's Open3D legacy renderer:

* framing: Open3D fits its view to the geometry and Cadrille then moves the camera by a fixed
  amount; here the camera stands on the direction's ray at the distance where the unit cube's
  bounding sphere (radius sqrt(3)/2) just fills the 60-degree view, whatever the part, so the
  scale of a part in the picture says how large it is in the unit cube;
* lights and material: VTK's default headlight with diffuse shading (no specular highlight);
  Open3D's legacy default lighting differs, so shades of grey-yellow are not the same numbers;
* the shrink from the 500 px window to 128 px is PIL's Lanczos filter, where Cadrille used
  scikit-image's order-2 spline with anti-aliasing; both average the pixels of the larger image;
* the background is white in both, and the vertex normals are area-weighted face normals
  (trimesh's), smoothed across edges as Open3D's ``compute_vertex_normals`` does.

A model trained on our renders (the mini Cadrille) sees only our renders, so these differences
matter only when feeding our pictures to the published checkpoint.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import trimesh
import vtk
from PIL import Image
from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy

DIRECTIONS = ((1, 1, 1), (-1, -1, -1), (-1, 1, -1), (1, -1, 1))
COLOUR = (255 / 255, 255 / 255, 136 / 255)
CENTRE = (0.5, 0.5, 0.5)
UP = (0, 1, 0)
VIEW_ANGLE = 60.0            # degrees (Open3D's default field of view)
WINDOW = 500                 # px, as Cadrille's hidden Open3D window
VIEW_SIZE, BORDER = 128, 3
SHADINGS = ("smooth", "flat")  # vertex normals smoothed across edges (Cadrille's), or one normal per face


def tile_views(views, border: int = BORDER):
    """Four renders (PIL or arrays, any equal size s) -> one (2(s+2b)) x (2(s+2b)) RGB picture,
    each view framed by a black ``border`` px wide, tiled [[0, 1], [2, 3]] (128 px views -> 268 px)."""
    arrays = [np.asarray(v.convert("RGB") if isinstance(v, Image.Image) else v, dtype=np.uint8) for v in views]
    if len(arrays) != 4:
        raise ValueError(f"tile_views needs four views, got {len(arrays)}.")
    framed = [np.pad(a, ((border, border), (border, border), (0, 0))) for a in arrays]
    grid = np.concatenate([np.concatenate(framed[:2], axis=1), np.concatenate(framed[2:], axis=1)], axis=0)
    return Image.fromarray(grid)


def unit_cube_mesh(mesh):
    """A copy of ``mesh`` scaled and moved so its bounding box is centred at (0.5, 0.5, 0.5) with the longest
    side 1, i.e. it fits [0, 1]^3 as Cadrille's rendered meshes do (code units / 200 + 0.5 for -100..100)."""
    extent = float(np.max(mesh.extents))
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("cannot render a mesh whose bounding box has no size.")
    out = mesh.copy()
    out.apply_translation(-mesh.bounds.mean(axis=0))
    out.apply_scale(1.0 / extent)
    out.apply_translation(CENTRE)
    return out


def _render_window(size: int):
    headless_linux = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                               or os.environ.get("WAYLAND_DISPLAY"))
    window = None
    if headless_linux:
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow  # deferred: EGL exists on Linux builds only

        window = vtkEGLRenderWindow()
    else:
        window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    window.SetSize(size, size)
    return window


def _grab_rgb(window) -> np.ndarray:
    """The rendered window as an (H, W, 3) uint8 array, top row first (VTK's rows start at the bottom)."""
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    return np.ascontiguousarray(pixels)


def _polydata(mesh):
    points = vtk.vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(mesh.vertices, dtype=np.float64), deep=True))
    faces = np.asarray(mesh.faces, dtype=np.int64)
    cells = vtk.vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces.reshape(-1)), deep=True))
    data = vtk.vtkPolyData()
    data.SetPoints(points)
    data.SetPolys(cells)
    normals = numpy_to_vtk(np.ascontiguousarray(mesh.vertex_normals, dtype=np.float64), deep=True)
    normals.SetName("Normals")
    data.GetPointData().SetNormals(normals)
    return data


# A key light above left of the camera (so the faces of a box differ), a weaker one on the right and one at
# the camera (so that no face turned towards the viewer falls dark): (position in camera coordinates, intensity).
PART_LIGHTS = (((-0.5, 0.8, 1.0), 0.6), ((0.8, 0.3, 1.0), 0.15), ((0.0, 0.0, 1.0), 0.3))


def add_part_lights(renderer) -> None:
    """``PART_LIGHTS`` into ``renderer``, each fixed to the camera (so every view is lit the same way)."""
    for position, intensity in PART_LIGHTS:
        light = vtk.vtkLight()
        light.SetLightTypeToCameraLight()
        light.SetPosition(*position)
        light.SetFocalPoint(0.0, 0.0, 0.0)
        light.SetIntensity(intensity)
        renderer.AddLight(light)


def render_view_arrays(mesh, directions=DIRECTIONS, size: int = WINDOW, shading: str = "smooth") -> list[np.ndarray]:
    """(size, size, 3) uint8 renders of ``mesh`` (already in the unit cube) from each direction, looking at
    (0.5, 0.5, 0.5) with up (0, 1, 0), the camera at the distance where the unit cube's bounding sphere
    fills the view angle. ``shading`` "smooth" interpolates the vertex normals across each triangle
    (Gouraud) under VTK's headlight, as Cadrille's renderer does, so a sharp edge's shade bleeds into both
    faces; "flat" shades each triangle by its own normal, so every planar face has one shade, under
    ``PART_LIGHTS`` (a headlight alone would give the three faces of a box seen along its diagonal, as
    every one of the four views sees it, the same shade)."""
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {', '.join(SHADINGS)}, got {shading!r}")
    data = _polydata(mesh)
    if shading == "flat":
        data.GetPointData().SetNormals(None)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(data)
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*COLOUR)
    if shading == "flat":
        actor.GetProperty().SetInterpolationToFlat()
    else:
        actor.GetProperty().SetInterpolationToGouraud()
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.AddActor(actor)
    if shading == "flat":
        add_part_lights(renderer)
    window = _render_window(size)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    distance = (3 ** 0.5 / 2) / np.sin(np.radians(VIEW_ANGLE / 2))
    shots = []
    try:
        for direction in directions:
            unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
            camera.SetFocalPoint(*CENTRE)
            camera.SetPosition(*(np.asarray(CENTRE) + distance * unit))
            camera.SetViewUp(*UP)
            camera.SetViewAngle(VIEW_ANGLE)
            renderer.ResetCameraClippingRange()
            window.Render()
            shots.append(_grab_rgb(window))
    finally:
        window.Finalize()
    return shots


def render_views(mesh, normalize: bool = True, view_size: int = VIEW_SIZE, border: int = BORDER,
                 shading: str = "smooth"):
    """Cadrille's picture of ``mesh``: four 128-px views, each with a 3-px black border, tiled 2 x 2 (268 x 268 PIL).
    ``shading``: "smooth" as Cadrille (see ``render_view_arrays``), or "flat"."""
    if normalize:
        mesh = unit_cube_mesh(mesh)
    views = [Image.fromarray(a).resize((view_size, view_size), Image.Resampling.LANCZOS)
             for a in render_view_arrays(mesh, shading=shading)]
    return tile_views(views, border=border)


# --------------------------------------------------------------------------------------------------------
# The course's pictures of a part (not Cadrille's input): flat faces, sharp edges drawn, white background
# --------------------------------------------------------------------------------------------------------

PART_COLOUR = "#8fb8de"
FEATURE_ANGLE = 30.0         # degrees: an edge between faces bent more than this is drawn as a line
EDGE_COLOUR = (0.15, 0.15, 0.18)
PART_VIEW_ANGLE = 25.0       # degrees: a narrow view, so that perspective does not taper a straight part


def feature_edges(mesh, angle: float = FEATURE_ANGLE) -> np.ndarray:
    """(E, 2) vertex indices of ``mesh``'s sharp edges (faces meeting at more than ``angle`` degrees) and its
    boundary edges (edges of one face only). ``mesh`` must have merged vertices, or every edge is a boundary."""
    sharp = mesh.face_adjacency_edges[mesh.face_adjacency_angles > np.radians(angle)]
    edges = mesh.edges_sorted
    boundary = edges[trimesh.grouping.group_rows(edges, require_count=1)]
    return np.concatenate([sharp, boundary]).reshape(-1, 2)


def _edge_actor(vertices, edges, width: float):
    points = vtk.vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, dtype=np.float64), deep=True))
    lines = vtk.vtkCellArray()
    lines.SetData(numpy_to_vtkIdTypeArray(np.arange(0, 2 * len(edges) + 1, 2, dtype=np.int64), deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(edges, dtype=np.int64).reshape(-1), deep=True))
    data = vtk.vtkPolyData()
    data.SetPoints(points)
    data.SetLines(lines)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(data)
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*EDGE_COLOUR)
    actor.GetProperty().SetLineWidth(width)
    actor.GetProperty().LightingOff()
    return actor


def render_part(mesh, direction=(1, -1, 1), size: int = 400, colour=PART_COLOUR, edges: bool = True,
                crop: bool = True, supersample: int = 2) -> np.ndarray:
    """A clean picture of ``mesh`` as an (H, W, 3) uint8 array (H, W <= ``size``): flat-shaded faces (each
    face one shade, so a flat plate stays flat), its sharp and boundary edges as thin dark lines, a white
    background. The mesh is normalized into the unit cube and seen from ``direction`` (z up) through a narrow
    25-degree view, from a little further than where its bounding sphere fills the view; ``crop`` trims the
    empty margin. ``supersample``: rendered that many times larger, then shrunk (smooth edges and lines)."""
    from matplotlib.colors import to_rgb

    part = unit_cube_mesh(mesh)
    part.merge_vertices()                       # shared vertices: so edges know both of their faces
    data = _polydata(part)
    data.GetPointData().SetNormals(None)        # no vertex normals: VTK shades each face by its own normal
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(data)
    mapper.SetResolveCoincidentTopologyToPolygonOffset()   # the edge lines stay in front of their faces
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*to_rgb(colour))
    prop.SetInterpolationToFlat()
    prop.SetAmbient(0.25)
    prop.SetDiffuse(0.85)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.AddActor(actor)
    big = size * supersample
    if edges:
        renderer.AddActor(_edge_actor(part.vertices, feature_edges(part), width=1.5 * supersample))
    add_part_lights(renderer)
    low, high = part.bounds
    centre, radius = (low + high) / 2, float(np.linalg.norm(high - low)) / 2
    unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    up = (0.0, 0.0, 1.0) if abs(unit[2]) < 0.99 else (0.0, 1.0, 0.0)
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + 1.08 * radius / np.sin(np.radians(PART_VIEW_ANGLE / 2)) * unit))  # a margin
    camera.SetViewUp(*up)
    camera.SetViewAngle(PART_VIEW_ANGLE)
    renderer.ResetCameraClippingRange()
    window = _render_window(big)
    window.AddRenderer(renderer)
    try:
        window.Render()
        pixels = _grab_rgb(window)
    finally:
        window.Finalize()
    picture = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((size, size), Image.Resampling.LANCZOS))
    if crop:
        rows, cols = np.nonzero((picture < 250).any(axis=-1))
        if len(rows):
            pad = max(2, size // 40)
            picture = picture[max(rows.min() - pad, 0):rows.max() + pad + 1,
                              max(cols.min() - pad, 0):cols.max() + pad + 1]
    return np.ascontiguousarray(picture)
