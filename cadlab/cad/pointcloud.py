"""From a mesh file to the 256 point "tokens" CAD-Recode reads.

The road: ``load_mesh`` (STL/OBJ/PLY via trimesh, with clear errors; duplicate vertices merged and
zero-area triangles dropped, at the part's own scale) -> ``normalize_mesh`` (bounding-box centre at
the origin, longest side spanning [-1, 1]) -> ``mesh_to_point_cloud``
(8192 area-weighted surface samples, then farthest-point sampling down to 256) ->
``FourierPointEncoder`` (each point becomes one embedding of the language model's width).
``load_solid`` is ``load_mesh`` plus the check the reconstruction commands need: the mesh must
close a solid (every edge on exactly two triangles), with a message that names what is wrong.

The encoder matches CAD-Recode v1.5 (and cadrille) exactly: same maths, same module and key
names, so the released checkpoint's ``point_encoder.projection.*`` tensors load into it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from torch import nn

MESH_SUFFIXES = (".stl", ".obj", ".ply")


# --------------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------------
MERGE_DIGITS = 6    # vertices closer than about 1e-6 of the part's longest side are one vertex


def load_mesh(path) -> "trimesh.Trimesh":
    """Read an STL, OBJ or PLY file into a ``trimesh.Trimesh``, refusing what is not a usable surface.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unsupported suffix,
    an empty or unreadable file, a file without triangles (e.g. a PLY point cloud), non-finite
    (NaN/inf) vertex coordinates, or triangles whose total area is zero. The file is parsed
    without trimesh's clean-up first (which would silently drop NaN vertices), checked, and then
    repaired by ``repair_mesh`` (duplicate vertices merged, zero-area triangles dropped); what the
    repair changed beyond the merge is listed in ``mesh.metadata["repairs"]``. The mesh keeps the
    file's coordinates. ``load_solid`` also refuses meshes that do not close a solid.
    """
    path = Path(path)
    if not path.exists():
        hint = "" if path.is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise FileNotFoundError(f"no mesh file at {path}: check the path{hint}.")
    if not path.is_file():
        raise ValueError(f"{path} is not a file; pass the path of an .stl, .obj or .ply file.")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported suffix {path.suffix!r}; use one of {', '.join(MESH_SUFFIXES)}.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); re-export the mesh.")
    try:
        mesh = trimesh.load(path, file_type=suffix[1:], process=False)
        if isinstance(mesh, trimesh.Scene):      # several bodies (OBJ groups): one mesh, as force="mesh" does;
            mesh = mesh.to_mesh()                # forcing it for a single body costs a full copy of the mesh
    except Exception as error:  # trimesh's parsers raise many kinds of errors for broken files
        raise ValueError(f"{path} could not be read as {suffix[1:].upper()}: {error}") from error
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=float)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=int)
    if len(faces) == 0:
        raise ValueError(f"{path} contains no triangles: it is not a mesh (a point cloud, text, or "
                         "a broken export). Export the solid as a triangle mesh.")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise ValueError(f"{path} has {bad} vertex(es) with NaN or infinite coordinates; repair or re-export the mesh.")
    mesh = repair_mesh(trimesh.Trimesh(vertices, faces, process=False))
    if len(mesh.faces) == 0:
        raise ValueError(f"{path}: all {len(faces)} triangles have zero area (degenerate geometry), "
                         "so there is no surface to sample.")
    return mesh


def repair_mesh(mesh) -> "trimesh.Trimesh":
    """A copy of ``mesh`` with what is safely repairable repaired, in the input's coordinates.

    1. Vertices at the same place become one (``merge_vertices``): STL stores every triangle's
       three corners separately, so without this no two triangles share an edge.
    2. Triangles without area are dropped (``nondegenerate_faces``): CAD tessellations leave a
       few, e.g. at a sphere's or cone's pole or along a fillet, and after the merge each of them
       has a repeated corner and spoils the count of triangles per edge.
    3. Vertices no triangle uses any more are dropped (``remove_unreferenced_vertices``).

    trimesh compares positions on an absolute grid (``tol.merge`` = 1e-8 by default): a sphere
    drawn at 1e-9 scale collapses into a few dozen points, and at 1e10 scale the grid overflows
    int64. So the repair runs on a copy moved and scaled into the unit box (bounding-box centre 0,
    longest side 1), positions compared to ``MERGE_DIGITS`` decimals of it (coarse enough for
    trimesh's fast one-integer-per-row path, fine enough for any tessellation the models can use),
    and the zero-area test at trimesh's default height, 1e-8 of the box. The kept vertices take
    back their original coordinates, carried through the repair as a vertex attribute, so nothing
    moves. ``metadata["repairs"]`` lists the dropped triangles (an empty list if none).
    """
    vertices = np.asarray(mesh.vertices, dtype=float)
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    size = float(np.max(vertices.max(axis=0) - vertices.min(axis=0))) or 1.0   # 0: one point, nothing to keep
    scaled = vertices - centre
    scaled /= size
    unit = trimesh.Trimesh(scaled, mesh.faces, process=False, vertex_attributes={"original": vertices})
    unit.merge_vertices(digits_vertex=MERGE_DIGITS)
    keep = unit.nondegenerate_faces()
    repairs = []
    if not keep.all():
        dropped = int((~keep).sum())
        repairs.append(f"dropped {dropped} zero-area triangle{'s' if dropped != 1 else ''}")
        unit.update_faces(keep)
    unit.remove_unreferenced_vertices()
    return trimesh.Trimesh(unit.vertex_attributes["original"], unit.faces, process=False,
                           metadata={"repairs": repairs})


def solid_problem(mesh) -> str | None:
    """Why ``mesh`` does not bound a solid, or None if every edge joins exactly two triangles.

    Counts the triangles on each edge: an edge with one triangle is a border of an opening (a hole,
    or a surface rather than a solid); an edge with three or more is non-manifold (bodies touching
    along an edge, internal walls), where inside and outside are ambiguous. Run on a repaired mesh
    (``load_mesh`` does that), so leftovers of the tessellation are not mistaken for either.
    """
    if mesh.is_watertight:
        return None
    per_edge = np.bincount(mesh.edges_unique_inverse)
    open_edges, shared = int((per_edge == 1).sum()), int((per_edge > 2).sum())
    problems = []
    if open_edges:
        edges = "1 edge borders" if open_edges == 1 else f"{open_edges} edges border"
        problems.append(f"its surface is open ({edges} a single triangle), so it has no inside")
    if shared:
        edges = "1 edge is" if shared == 1 else f"{shared} edges are"
        problems.append(f"it is not manifold ({edges} shared by more than two triangles: bodies that touch along "
                        "an edge or internal walls), so its inside is ambiguous")
    return "; ".join(problems)


def load_solid(path) -> "trimesh.Trimesh":
    """``load_mesh``, then refuse a mesh that does not close a solid (``solid_problem``), with ``ValueError``.

    The one input check of the reconstruction models: what they rebuild is a solid, and its IoU
    needs an inside. ``mesh.metadata["repairs"]`` says what the loader repaired.
    """
    mesh = load_mesh(path)
    problem = solid_problem(mesh)
    if problem:
        raise ValueError(f"{path} is not a closed solid: {problem}. Export the part as a closed solid body (in "
                         "your CAD tool: the solid, not a surface, sheet or single face), e.g. STL of the body, "
                         "then try again.")
    return mesh


def normalize_mesh(mesh) -> "trimesh.Trimesh":
    """A copy of ``mesh`` moved and scaled as CAD-Recode's inputs are: p' = (p - c) * 2 / max(extents).

    c is the bounding-box centre, so afterwards the box is centred at the origin and its longest
    side spans exactly [-1, 1] (the other sides are shorter; proportions are kept). The vertices are
    computed directly: trimesh's ``apply_translation`` / ``apply_scale`` skip any transform within 1e-8
    of the identity, so a part drawn in tiny units (a shift of 1e-12) would not be centred.
    """
    extent = float(np.max(mesh.extents)) if len(mesh.vertices) else 0.0
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("cannot normalize a mesh whose bounding box has no size (empty, a single point, "
                         "or non-finite coordinates); check it with load_mesh first.")
    centre = mesh.bounds.mean(axis=0)
    normalized = mesh.copy()
    normalized.vertices = (np.asarray(mesh.vertices, dtype=float) - centre) * (2.0 / extent)
    return normalized


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def farthest_point_sampling(points, k: int, start: int = 0) -> torch.Tensor:
    """Indices (k,) of a greedy farthest-point subset of ``points`` (N, 3), beginning at ``start``.

    Step 1 picks ``start``; step t picks argmax_i min_{j chosen} ||p_i - p_j||^2, i.e. the point
    farthest from everything chosen so far (ties -> the lowest index). Keeping the running
    minimum d_i = min_j ||p_i - p_j||^2 makes each step O(N), so the whole is O(kN) instead of
    the O(k^2 N) of recomputing it. Same rule as pytorch3d's ``sample_farthest_points`` with
    ``random_start_point=False``, which the CAD-Recode demo uses.
    """
    points = torch.as_tensor(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(points.shape)}.")
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}.")
    if not 0 <= start < n:
        raise ValueError(f"start must be a valid index into the {n} points, got {start}.")
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = start
    nearest = ((points - points[start]) ** 2).sum(dim=1)   # squared distance to the chosen set
    for t in range(1, k):
        chosen[t] = torch.argmax(nearest)
        nearest = torch.minimum(nearest, ((points - points[chosen[t]]) ** 2).sum(dim=1))
    return chosen


def mesh_to_point_cloud(mesh, n_points: int = 256, n_pre_points: int = 8192, seed: int = 0,
                        normalize: bool = True) -> np.ndarray:
    """CAD-Recode's input: (n_points, 3) float32 array of points on the (normalized) surface.

    ``n_pre_points`` samples are drawn uniformly by area (``trimesh.sample.sample_surface`` with
    ``seed``), then ``farthest_point_sampling`` keeps ``n_points`` of them, starting at index 0.
    The same mesh and seed always give the same points. With ``normalize`` (default) the mesh
    first goes through ``normalize_mesh``; that is idempotent, so passing an already normalized
    mesh is fine. (The demo seeds NumPy's global generator instead of passing a seed: same
    distribution, different individual samples.)
    """
    if n_pre_points < n_points:
        raise ValueError(f"n_pre_points ({n_pre_points}) must be at least n_points ({n_points}).")
    if normalize:
        mesh = normalize_mesh(mesh)
    samples, _ = trimesh.sample.sample_surface(mesh, n_pre_points, seed=seed)
    samples = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    return samples[farthest_point_sampling(samples, n_points)].numpy()


def coverage_radius(cloud, surface) -> float:
    """max over ``surface`` points of the distance to the nearest ``cloud`` point (one-sided Hausdorff).

    Every surface point lies within this radius of some chosen point, so smaller means the cloud
    covers the shape more evenly. Farthest-point sampling greedily minimizes it (within a factor 2
    of the best possible subset of the same size); uniform random choice leaves gaps.
    """
    distances, _ = cKDTree(np.asarray(cloud, dtype=float)).query(np.asarray(surface, dtype=float), k=1)
    return float(distances.max())


# --------------------------------------------------------------------------------------------
# Encoder (``model.point_encoder`` in cadlab.cad.cadrecode)
# --------------------------------------------------------------------------------------------
class FourierPointEncoder(nn.Module):
    """Points (B, N, 3) -> embeddings (B, N, hidden_size), as in CAD-Recode v1.5.

    With frequencies f_j = 2**j, j = 0..7 (1 ... 128, no factor pi), each point p = (x, y, z) gets

        features(p) = [x, y, z,
                       sin(x f_0) .. sin(x f_7), sin(y f_0) .. sin(y f_7), sin(z f_0) .. sin(z f_7),
                       cos(x f_0) .. cos(x f_7), cos(y f_0) .. cos(y f_7), cos(z f_0) .. cos(z f_7)]

    (3 + 24 + 24 = 51 numbers), and the embedding is ``projection(features) = W features + b``
    with ``W`` of shape (hidden_size, 51). ``frequencies`` is a non-persistent buffer, so the
    only checkpoint keys are ``projection.weight`` and ``projection.bias``.
    """

    n_frequencies = 8
    in_features = 3 + 2 * 3 * 8  # 51

    def __init__(self, hidden_size: int):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(self.n_frequencies), persistent=False)
        self.projection = nn.Linear(self.in_features, hidden_size)

    def fourier_features(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, N, 51): ``cat(points, sin(x), cos(x))`` with x ordered x·f0..x·f7, y·f0.., z·f0.."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (batch, n_points, 3), got {tuple(points.shape)}; "
                             "add a batch dimension with points[None] for a single cloud.")
        x = points[..., None] * self.frequencies.to(points.dtype)      # (B, N, 3, 8)
        x = x.reshape(*points.shape[:-1], 3 * self.n_frequencies)      # (B, N, 24)
        return torch.cat((points, x.sin(), x.cos()), dim=-1)           # (B, N, 51)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, N, hidden_size).

        The sines and cosines are computed in at least float32 (x·128 in bfloat16 would lose the
        fine frequencies), then cast to the projection's dtype, so the module works in fp32 and bf16.
        """
        if points.dtype in (torch.float16, torch.bfloat16):
            points = points.float()
        features = self.fourier_features(points)
        return self.projection(features.to(self.projection.weight.dtype))


# --------------------------------------------------------------------------------------------
# Explorer (notebook 06): one cloud, its coverage and one Fourier feature, for a widget
# --------------------------------------------------------------------------------------------
SAMPLING_METHODS = ("farthest-point", "random")
AXES = "xyz"


def fourier_feature_column(axis: str, j: int, kind: str = "sin") -> int:
    """Column of ``FourierPointEncoder.fourier_features`` holding ``kind(axis * 2**j)``.

    Layout (51 columns): 0-2 xyz, then 24 sines ordered x f_0..x f_7, y f_0.., z f_0..z f_7,
    then 24 cosines in the same order: column = 3 + 24 * (kind == "cos") + 8 * axis + j.
    """
    if axis not in AXES or kind not in ("sin", "cos"):
        raise ValueError(f"axis must be one of {tuple(AXES)} and kind 'sin' or 'cos', got {axis!r}, {kind!r}.")
    n = FourierPointEncoder.n_frequencies
    if not 0 <= j < n:
        raise ValueError(f"j must be between 0 and {n - 1} (frequencies 2**0 .. 2**{n - 1}), got {j}.")
    return 3 + 3 * n * (kind == "cos") + n * AXES.index(axis) + j


def explore_cloud(surface, n_points: int, method: str = "farthest-point", axis: str = "x", j: int = 0,
                  kind: str = "sin", seed: int = 0) -> dict:
    """Keep ``n_points`` of the surface samples ``surface`` (N, 3) and describe the result.

    ``method``: "farthest-point" (``farthest_point_sampling`` from index 0, as CAD-Recode) or
    "random" (a uniform subset without replacement, ``numpy.random.default_rng(seed)``).
    Returns ``points`` (n_points, 3), their ``coverage`` radius over ``surface`` (smaller = fewer
    gaps), and ``feature``: the values of kind(axis * 2**j) at the points (column
    ``fourier_feature_column(axis, j, kind)`` of the encoder's features), with ``frequency`` 2**j.
    """
    surface = np.asarray(surface, dtype=np.float32)
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}.")
    if not 1 <= n_points <= len(surface):
        raise ValueError(f"n_points must be between 1 and the {len(surface)} surface samples, got {n_points}.")
    column = fourier_feature_column(axis, j, kind)
    if method == "farthest-point":
        order = farthest_point_sampling(torch.from_numpy(surface), n_points).numpy()
    else:
        order = np.random.default_rng(seed).choice(len(surface), n_points, replace=False)
    points = surface[order]
    angle = points[:, AXES.index(axis)] * np.float32(2.0 ** j)         # the encoder's float32 angle
    feature = np.sin(angle) if kind == "sin" else np.cos(angle)
    return {"points": points, "coverage": coverage_radius(points, surface), "feature": feature,
            "column": column, "frequency": 2 ** j}
