"""Pictures of meshes and point clouds with matplotlib: a solid, a cloud, a reconstruction beside the
input (and the truth), and the PNG preview ``cadlab reconstruct`` writes.

A solid is drawn as an image from ``cadlab.cad.render.render_part`` (VTK: a depth buffer, flat faces, its
sharp edges as lines) on a plain 2-D axis; a cloud stays a matplotlib 3-D scatter.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

# matplotlib's default 3-D view (elevation 30 degrees, azimuth -60), as a direction towards the camera
MPL_VIEW = (np.cos(np.radians(-60)) * np.cos(np.radians(30)), np.sin(np.radians(-60)) * np.cos(np.radians(30)),
            np.sin(np.radians(30)))


def draw_mesh(ax, mesh, title: str = "", color: str = "#8fb8de", direction=MPL_VIEW, size: int = 400):
    """A trimesh as a ``render_part`` picture on a 2-D matplotlib axis (no axes), seen from ``direction``
    (default: the direction matplotlib's 3-D axes look from). A 3-D axis is replaced by a 2-D one in the
    same place. Returns the axis drawn on."""
    from cadlab.cad.render import render_part        # deferred: VTK loads only when a solid is drawn

    if getattr(ax, "name", "") == "3d":
        fig, spec = ax.figure, ax.get_subplotspec()
        ax.remove()
        ax = fig.add_subplot(spec)
    ax.imshow(render_part(mesh, direction=direction, size=size, colour=color))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def draw_points(ax, points, title: str = "") -> None:
    """A point cloud on a matplotlib 3-D axis, coloured by height."""
    points = np.asarray(points)
    ax.scatter(*points.T, s=5, c=points[:, 2], cmap="viridis")
    ax.set_box_aspect(np.maximum(np.ptp(points, axis=0), 1e-3))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_reconstruction(fig, points, prediction=None, truth=None, title: str = "prediction") -> None:
    """Side by side on ``fig``: the input points, the predicted solid, and (if given) the ground truth.

    The points are a 3-D scatter; the solids are ``render_part`` pictures seen from the scatter's viewpoint.
    """
    panels = 2 + (truth is not None)
    draw_points(fig.add_subplot(1, panels, 1, projection="3d"), points, f"input: {len(points)} points")
    ax = fig.add_subplot(1, panels, 2)
    if prediction is None:
        ax.text(0.5, 0.5, "no valid solid", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    else:
        draw_mesh(ax, prediction, title, color="#f4b183")
    if truth is not None:
        draw_mesh(fig.add_subplot(1, panels, 3), truth, "ground truth")


def save_preview(path, points, prediction=None, title: str = "prediction") -> None:
    """Write a PNG of ``draw_reconstruction`` (the Agg canvas: no display, no pyplot state)."""
    fig = Figure(figsize=(8, 4), dpi=100)
    draw_reconstruction(fig, points, prediction, title=title)
    fig.tight_layout()
    fig.savefig(path)
