"""Pictures of meshes and point clouds with matplotlib: a solid, a cloud, a reconstruction beside the
input (and the truth), and the PNG preview ``cadlab reconstruct`` writes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from cadlab.cad.pointcloud import normalize_mesh


def draw_mesh(ax, mesh, title: str = "", color: str = "#8fb8de") -> None:
    """A trimesh on a matplotlib 3-D axis, equal aspect, no axes."""
    v = mesh.vertices
    ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=mesh.faces, color=color, edgecolor="#33333322",
                    linewidth=0.2, shade=True)
    ax.set_box_aspect(np.maximum(np.ptp(v, axis=0), 1e-3))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_points(ax, points, title: str = "") -> None:
    """A point cloud on a matplotlib 3-D axis, coloured by height."""
    points = np.asarray(points)
    ax.scatter(*points.T, s=5, c=points[:, 2], cmap="viridis")
    ax.set_box_aspect(np.maximum(np.ptp(points, axis=0), 1e-3))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_reconstruction(fig, points, prediction=None, truth=None, title: str = "prediction") -> None:
    """Side by side on ``fig``: the input points, the predicted solid, and (if given) the ground truth.

    Meshes are shown in the normalized frame (``normalize_mesh``), the frame of the points.
    """
    panels = 2 + (truth is not None)
    draw_points(fig.add_subplot(1, panels, 1, projection="3d"), points, f"input: {len(points)} points")
    ax = fig.add_subplot(1, panels, 2, projection="3d")
    if prediction is None:
        ax.text2D(0.5, 0.5, "no valid solid", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    else:
        draw_mesh(ax, normalize_mesh(prediction), title, color="#f4b183")
    if truth is not None:
        draw_mesh(fig.add_subplot(1, panels, 3, projection="3d"), normalize_mesh(truth), "ground truth")


def save_preview(path, points, prediction=None, title: str = "prediction") -> None:
    """Write a PNG of ``draw_reconstruction`` (the Agg canvas: no display, no pyplot state)."""
    fig = Figure(figsize=(8, 4), dpi=100)
    draw_reconstruction(fig, points, prediction, title=title)
    fig.tight_layout()
    fig.savefig(path)
