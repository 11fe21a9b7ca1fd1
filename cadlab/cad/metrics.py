"""How CAD reconstructions are scored: Chamfer distance, IoU, invalid ratio, best of k.

Conventions of CAD-Recode and cadrille (their evaluation scripts):

* Frame. Each mesh is normalized by its OWN bounding box before scoring: centre to the origin,
  longest side scaled to length 1 (they then shift by 0.5 into [0, 1]^3; a shift changes neither
  metric). So a prediction is not punished for a global scale or offset, only for its shape.
  ``unit_frame`` does this.
* Chamfer distance. With P, Q = 8192 area-uniform surface samples of the two meshes,

      CD(P, Q) = mean_{p in P} min_{q in Q} ||p - q||^2  +  mean_{q in Q} min_{p in P} ||p - q||^2

  (squared distances, the SUM of the two directions). ``chamfer_distance`` returns this raw
  number; papers and this course report CD x 1000 (``CD_SCALE``), e.g. "median CD 0.157"
  means a raw median of 0.000157. P and Q are independent samples, so even a perfect
  reconstruction scores above 0: on a smooth surface of area A (unit frame) the nearest of N
  uniform samples is at squared distance A / (pi N) on average, a floor of about 2A / (pi N).
* IoU. vol(A ∩ B) / vol(A ∪ B) of the two solids, here with manifold3d's exact mesh booleans.
  Needs closed (watertight) meshes.
* Invalid ratio. The share of inputs for which no valid solid came out (the code failed, timed
  out, or produced a degenerate result). With k samples per input, the best CD and best IoU over
  the valid ones count, and an input is invalid only if all k are.
"""

from __future__ import annotations

import manifold3d
import numpy as np
import trimesh
from scipy.spatial import cKDTree

from cadlab.cad.pointcloud import normalize_mesh

CD_SCALE = 1000.0  # papers report Chamfer distance x 1000


def unit_frame(mesh):
    """A copy of ``mesh``, bounding-box centre at the origin, longest side of length 1 (the papers' frame)."""
    half = normalize_mesh(mesh)       # longest side spans [-1, 1] ...
    half.apply_scale(0.5)             # ... now [-0.5, 0.5]
    return half


def chamfer_distance_points(p, q) -> float:
    """Raw (not x1000) Chamfer distance of two point sets (n, 3), (m, 3): sum of both mean squared NN distances."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    for name, x in (("p", p), ("q", q)):
        if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0:
            raise ValueError(f"{name} must be a non-empty (n, 3) array of points, got shape {x.shape}.")
    p_to_q, _ = cKDTree(q).query(p, k=1)
    q_to_p, _ = cKDTree(p).query(q, k=1)
    return float(np.mean(p_to_q ** 2) + np.mean(q_to_p ** 2))


def chamfer_distance(a, b, n_points: int = 8192, seed: int = 0, normalize: bool = True) -> float:
    """Raw Chamfer distance between two trimesh meshes (multiply by ``CD_SCALE`` to report it).

    Both meshes go into the unit frame (``unit_frame``; skip with ``normalize=False`` to compare
    them where they are), then ``n_points`` area-uniform surface samples are drawn from ``a`` and
    then from ``b`` with one random generator seeded by ``seed`` -- independent samples, as in the
    papers, but reproducible -- and ``chamfer_distance_points`` is applied. A mesh against itself
    therefore gives the sampling floor (about 2A / (pi n_points)), not 0.
    """
    if normalize:
        a, b = unit_frame(a), unit_frame(b)
    generator = np.random.default_rng(seed)
    p, _ = trimesh.sample.sample_surface(a, n_points, seed=generator)
    q, _ = trimesh.sample.sample_surface(b, n_points, seed=generator)
    return chamfer_distance_points(p, q)


def to_manifold(mesh):
    """A ``manifold3d.Manifold`` of a closed trimesh mesh, or a ``ValueError`` that says why not."""
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)  # merge duplicated vertices
    if not mesh.is_watertight:
        open_edges = len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1))
        raise ValueError(f"the mesh is not watertight ({open_edges} edges belong to a single triangle), so it "
                         "has no inside and no volume: IoU needs closed solids. Tessellate a valid CadQuery "
                         "solid, or repair the mesh (e.g. trimesh.repair.fill_holes).")
    if not mesh.is_winding_consistent:
        raise ValueError("the mesh's triangles are not consistently oriented, so its inside is undefined; "
                         "repair it with trimesh.repair.fix_normals before computing IoU.")
    if mesh.volume < 0:  # closed but inside-out: flip it
        mesh.invert()
    solid = manifold3d.Manifold(manifold3d.Mesh(vert_properties=np.asarray(mesh.vertices, dtype=np.float32),
                                                tri_verts=np.asarray(mesh.faces, dtype=np.uint32)))
    if solid.status() != manifold3d.Error.NoError:
        raise ValueError(f"manifold3d rejected the mesh ({solid.status().name}): it is not a clean closed "
                         "2-manifold (self-touching or duplicated geometry); repair it before computing IoU.")
    return solid


def iou(a, b, normalize: bool = True) -> float:
    """Volume IoU = vol(A ∩ B) / vol(A ∪ B) of two closed trimesh meshes, in [0, 1].

    Intersection and union are exact mesh booleans (manifold3d). Both meshes first go into the
    unit frame, as in the papers (``normalize=False`` compares them where they are).
    """
    if normalize:
        a, b = unit_frame(a), unit_frame(b)
    solid_a, solid_b = to_manifold(a), to_manifold(b)
    union = (solid_a + solid_b).volume()
    if not union > 0:
        raise ValueError("both solids have zero volume, so IoU is undefined.")
    return float((solid_a ^ solid_b).volume() / union)


def invalid_ratio(meshes) -> float:
    """Share of entries that are ``None`` (no valid result for that input), e.g. ``[r.mesh if r.ok else None ...]``."""
    meshes = list(meshes)
    if not meshes:
        raise ValueError("invalid_ratio of an empty list is undefined; pass one entry per input.")
    return sum(m is None for m in meshes) / len(meshes)


def best_chamfer(target, candidates, **kwargs) -> float | None:
    """Smallest raw Chamfer distance from ``target`` over the valid (non-None) candidates; None if none is valid."""
    scores = [chamfer_distance(target, c, **kwargs) for c in candidates if c is not None]
    return min(scores) if scores else None


def best_iou(target, candidates, **kwargs) -> float | None:
    """Largest IoU with ``target`` over the valid (non-None) candidates; None if none is valid."""
    scores = [iou(target, c, **kwargs) for c in candidates if c is not None]
    return max(scores) if scores else None


def summarize(targets, candidate_lists, n_points: int = 8192, seed: int = 0) -> dict:
    """The papers' table row for a test set: best-of-k per input, then aggregated.

    ``candidate_lists[i]`` holds the k predictions (meshes, None where invalid) for ``targets[i]``.
    Returns ``median_cd_x1000`` and ``mean_cd_x1000`` (best CD x 1000 over the valid inputs),
    ``mean_iou`` (best IoU over the valid inputs) and ``invalid_ratio`` (inputs whose k
    candidates are all invalid).
    """
    targets, candidate_lists = list(targets), list(candidate_lists)
    if len(targets) != len(candidate_lists) or not targets:
        raise ValueError(f"need one candidate list per target, got {len(targets)} targets and "
                         f"{len(candidate_lists)} lists.")
    cds, ious, best = [], [], []
    for target, candidates in zip(targets, candidate_lists):
        cd = best_chamfer(target, candidates, n_points=n_points, seed=seed)
        best.append(cd)
        if cd is not None:
            cds.append(cd)
            ious.append(best_iou(target, candidates))
    return {
        "median_cd_x1000": float(np.median(cds)) * CD_SCALE if cds else None,
        "mean_cd_x1000": float(np.mean(cds)) * CD_SCALE if cds else None,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "invalid_ratio": invalid_ratio(best),
    }
