"""Procedural CadQuery programs in CAD-Recode v1.5's style, and the dataset built from them.

A program is 1-3 bodies on workplanes ``'XY'``, ``'YZ'`` or ``'ZX'`` with integer origins; each
body is either a sketch (an outer profile: rectangle, circle, or a closed polyline of
``segment``s, possibly with one ``arc``; then 0-2 cut-outs placed with ``push`` and
``mode='s'``; ``.finalize().extrude(d)``), or a ``box``, or a ``cylinder``. Every body is
placed so that it contains the global origin (up to its cut-outs), so the bodies overlap and
their ``union`` is one solid; the solid is bound to ``r``. Every number is an integer and
every coordinate of the solid lies on the -100..100 grid.

``generate_program(seed)`` is a pure function of the seed. ``validate`` runs a program through
``cadlab.cadexec.run_cadquery`` (the sandbox) and accepts it only if it gives one watertight
body inside the grid. ``normalize_program`` rescales and recentres a program so that its solid
fills the grid the way CAD-Recode's normalized inputs fill [-1, 1]: bounding-box centre at the
origin, longest side spanning [-99, 99]. After it, code units = 100 x point-cloud units (to 1%),
so the numbers the model must write are a function of the points it sees — without it the same
normalized cloud would stand for programs of every size and position. ``build_dataset`` turns
seeds into (normalized program, 256-point cloud) pairs, with a progress bar, an on-disk cache
and a count of the rejected programs.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
from pathlib import Path

import numpy as np

GRID = 100                 # coordinates live in [-GRID, GRID]
GENERATOR_VERSION = 2      # bump when generate_program or normalize_program changes: part of the cache key
PLANES = ("XY", "YZ", "ZX")

# Operation name -> a regular expression that finds it in a program's text.
OPERATIONS = {
    "XY": r"Workplane\('XY'", "YZ": r"Workplane\('YZ'", "ZX": r"Workplane\('ZX'",
    "segment": r"\.segment\(", "arc": r"\.arc\(", "circle": r"\.circle\(", "rect": r"\.rect\(",
    "push": r"\.push\(", "cut-out": r"mode='s'", "close": r"\.close\(\)\.assemble\(\)",
    "extrude": r"\.finalize\(\)\.extrude\(", "box": r"\.box\(", "cylinder": r"\.cylinder\(",
    "union": r"\.union\(",
}


def _pt(p) -> str:
    return f"({p[0]},{p[1]})"


def _outer_profile(rng: random.Random):
    """An outer sketch profile: (code, centre, inner radius) where a disk of ``inner radius``
    around ``centre`` lies inside the profile (cut-outs are placed inside that disk)."""
    cx, cy = rng.randint(-20, 20), rng.randint(-20, 20)
    kind = rng.choice(("rect", "circle", "polyline", "polyline_arc"))
    if kind == "rect":
        w, h = rng.randint(6, 60), rng.randint(6, 60)
        return f".push([{_pt((cx, cy))}]).rect({w},{h})", (cx, cy), min(w, h) / 2
    if kind == "circle":
        radius = rng.randint(4, 35)
        return f".push([{_pt((cx, cy))}]).circle({radius})", (cx, cy), radius
    # A convex polygon: k vertices at sorted angles (each gap < 180 degrees) around the centre.
    k = rng.randint(3, 6)
    while True:
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(k))
        gaps = [b - a for a, b in zip(angles, angles[1:] + [angles[0] + 2 * math.pi])]
        if max(gaps) < 0.8 * math.pi and min(gaps) > 0.3:
            break
    radius = rng.randint(10, 35)
    pts = [(cx + round(radius * math.cos(a)), cy + round(radius * math.sin(a))) for a in angles]
    # Distance from the centre to each edge's line: the inscribed disk of the polygon.
    inner = min(abs((bx - ax) * (ay - cy) - (ax - cx) * (by - ay)) / max(math.dist((ax, ay), (bx, by)), 1e-9)
                for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]))
    code = f".segment({_pt(pts[0])},{_pt(pts[1])})"
    arc_at = rng.randrange(1, k) if kind == "polyline_arc" else None
    for i in range(1, k - 1):
        a, b = pts[i], pts[i + 1]
        if i == arc_at:
            # Bulge the edge a-b outward (away from the centre) through an integer mid-point.
            mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            nx, ny = mx - cx, my - cy
            norm = math.hypot(nx, ny) or 1.0
            bulge = rng.randint(2, max(2, int(math.dist(a, b) / 3)))
            mid = (round(mx + bulge * nx / norm), round(my + bulge * ny / norm))
            cross = (b[0] - a[0]) * (mid[1] - a[1]) - (b[1] - a[1]) * (mid[0] - a[0])
            if cross != 0:
                code += f".arc({_pt(mid)},{_pt(b)})"
                continue
        code += f".segment({_pt(b)})"
    return code + ".close().assemble()", (cx, cy), inner


def _cutouts(rng: random.Random, centre, inner: float) -> str:
    """0-2 holes (circles or rectangles, ``mode='s'``) that stay inside the inscribed disk."""
    code = ""
    for _ in range(rng.choice((0, 1, 1, 2))):
        if inner < 6:
            break
        size = rng.randint(1, max(1, int(inner / 3)))                  # hole radius / half-size
        reach = int(inner - size * math.sqrt(2)) - 1                    # keep the hole's corners inside
        if reach < 0:
            continue
        x = centre[0] + rng.randint(-reach // 2, reach // 2)
        y = centre[1] + rng.randint(-reach // 2, reach // 2)
        if rng.random() < 0.5:
            code += f".push([{_pt((x, y))}]).circle({size},mode='s')"
        else:
            code += f".push([{_pt((x, y))}]).rect({2 * size},{max(2, size)},mode='s')"
    return code


def _workplane(plane: str, u: int, v: int, w: int) -> str:
    """``cq.Workplane`` whose origin has in-plane coordinates (u, v) and normal coordinate w.

    'XY': local x, y, normal = X, Y, Z; 'YZ': Y, Z, X; 'ZX': Z, X, Y (CadQuery's named planes).
    """
    x, y, z = {"XY": (u, v, w), "YZ": (w, u, v), "ZX": (v, w, u)}[plane]
    return f"cq.Workplane('{plane}',origin=({x},{y},{z}))"


def _body(rng: random.Random, name: str):
    """One body as (workplane line, expression). Every body contains the global origin (up to its
    cut-outs), so the bodies of a program overlap and their union is one solid."""
    plane = rng.choice(PLANES)
    kind = rng.choices(("sketch", "box", "cylinder"), weights=(6, 2, 2))[0]
    if kind == "sketch":
        profile, (cx, cy), inner = _outer_profile(rng)
        reach = max(0, int(inner / 2) - 1)
        depth = rng.randint(2, 40)
        u, v = -cx + rng.randint(-reach, reach), -cy + rng.randint(-reach, reach)
        expr = f"{name}.sketch(){profile}{_cutouts(rng, (cx, cy), inner)}.finalize().extrude({depth})"
        return _workplane(plane, u, v, -rng.randint(1, depth - 1)), expr
    if kind == "box":
        a, b, c = rng.randint(4, 60), rng.randint(4, 60), rng.randint(4, 60)
        u, v, w = (rng.randint(-(n // 2 - 1), n // 2 - 1) for n in (a, b, c))
        return _workplane(plane, u, v, w), f"{name}.box({a},{b},{c})"
    height, radius = rng.randint(4, 60), rng.randint(3, 30)
    u, v = (rng.randint(-(radius // 2), radius // 2) for _ in range(2))
    return _workplane(plane, u, v, rng.randint(-(height // 2 - 1), height // 2 - 1)), f"{name}.cylinder({height},{radius})"


def generate_program(seed: int) -> str:
    """A CadQuery program (str) in CAD-Recode v1.5's style, a pure function of ``seed``."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = random.Random(int(seed))
    lines, bodies = ["import cadquery as cq"], []
    for i in range(rng.choice((1, 1, 2, 2, 3))):
        workplane, expr = _body(rng, f"w{i}")
        lines.append(f"w{i}={workplane}")
        bodies.append(expr)
    lines.append(f"r={bodies[0]}")
    lines += [f"r=r.union({body})" for body in bodies[1:]]
    return "\n".join(lines) + "\n"


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_ORIGIN = re.compile(r"origin=\((-?\d+),(-?\d+),(-?\d+)\)")


def normalize_program(code: str, bounds, half_extent: int = GRID - 1) -> str:
    """``code`` rescaled and recentred so that its solid's bounding box is centred at the origin
    with its longest side spanning [-half_extent, half_extent] (``bounds``: the solid's (2, 3)
    [min, max] corners, e.g. ``mesh.bounds`` from ``validate``).

    With centre c and scale s = 2 * half_extent / (longest side): every workplane origin o
    becomes round(s * (o - c)), every other number x (sketch coordinates, sizes, depths, all
    local to a workplane) becomes round(s * x). Sketches, extrusions, boxes and cylinders all
    scale with their numbers, so the new solid is s * (solid - c) up to rounding (< 1 unit);
    run it through ``validate`` again to be sure.
    """
    lo, hi = np.asarray(bounds, dtype=float)
    extent = float((hi - lo).max())
    if not np.all(np.isfinite([lo, hi])) or extent <= 0:
        raise ValueError(f"bounds must be finite with a positive size, got {np.asarray(bounds).tolist()}")
    centre, scale = (lo + hi) / 2, 2 * half_extent / extent

    def scaled(match) -> str:
        return str(round(float(match.group()) * scale))

    head, body = code.split("\n", 1)
    lines = []
    for line in body.splitlines():
        origin = _ORIGIN.search(line)
        if origin and "Workplane(" in line:
            new = [round(scale * (int(v) - c)) for v, c in zip(origin.groups(), centre)]
            line = line[:origin.start()] + f"origin=({new[0]},{new[1]},{new[2]})" + line[origin.end():]
        else:
            line = _NUMBER.sub(scaled, line)
        lines.append(line)
    return head + "\n" + "\n".join(lines) + "\n"


def program_numbers(code: str) -> list[int]:
    """Every numeric literal in a program after the import line (not the digits of names like ``w0``)."""
    body = code.split("\n", 1)[1]
    return [int(float(n)) if float(n).is_integer() else float(n) for n in _NUMBER.findall(body)]


def operations(code: str) -> set[str]:
    """The names in ``OPERATIONS`` that a program uses."""
    return {name for name, pattern in OPERATIONS.items() if re.search(pattern, code)}


def validate(code: str, timeout: float = 3.0):
    """Run ``code`` in the sandbox; return ``(mesh, None)`` if it is one watertight body inside the
    grid, else ``(None, reason)``."""
    from cadlab.cadexec import run_cadquery

    result = run_cadquery(code, timeout=timeout)
    if not result.ok:
        return None, f"{result.kind}: {result.message}"
    mesh = result.mesh
    if not mesh.is_watertight:
        return None, "mesh is not watertight"
    if mesh.body_count != 1:
        return None, f"{mesh.body_count} separate bodies (the union did not connect them)"
    if np.abs(mesh.bounds).max() > GRID + 1e-6:
        return None, f"solid leaves the [-{GRID}, {GRID}] grid"
    return mesh, None


def normalized_program(seed: int, timeout: float = 3.0):
    """One training example's program: ``generate_program(seed)`` -> ``validate`` ->
    ``normalize_program`` -> ``validate``. Returns ``(code, mesh, None)``, or ``(None, None, reason)``."""
    raw = generate_program(seed)
    mesh, reason = validate(raw, timeout=timeout)
    if mesh is None:
        return None, None, reason
    code = normalize_program(raw, mesh.bounds)
    mesh, reason = validate(code, timeout=timeout)
    if mesh is None:
        return None, None, f"after normalize_program: {reason}"
    return code, mesh, None


def _cache_path(cache_dir, start: int, n: int, n_points: int) -> Path:
    key = hashlib.sha1(f"v{GENERATOR_VERSION}-{start}-{n}-{n_points}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"synth_{start}_{n}_{n_points}_{key}.npz"


DEFAULT_CACHE = Path(os.environ.get("CADLAB_CACHE", "~/.cache/cadlab")).expanduser() / "synth"


def build_dataset(n: int, start: int = 0, n_points: int = 256, cache_dir=DEFAULT_CACHE, timeout: float = 3.0,
                  progress: bool = True) -> dict:
    """Programs for seeds ``start .. start+n-1`` -> sandbox -> ``normalize_program`` -> sandbox
    -> mesh -> normalized point cloud.

    Returns a dict: ``codes`` (accepted, normalized programs), ``seeds`` (their seeds), ``points``
    (len(codes), n_points, 3) float32 point clouds of the meshes normalized as CAD-Recode's
    inputs (``cadlab.pointcloud.mesh_to_point_cloud``, sampling seed = program seed),
    ``rejected`` (how many seeds gave no valid program) and ``reasons`` (seed -> why). The
    result is cached in ``cache_dir`` (default ``$CADLAB_CACHE/synth``, else ``~/.cache/cadlab/synth``;
    an .npz per (start, n, n_points, generator version));
    pass ``cache_dir=None`` to neither read nor write a cache.
    """
    from tqdm.auto import tqdm

    from cadlab.pointcloud import mesh_to_point_cloud

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    path = None if cache_dir is None else _cache_path(cache_dir, start, n, n_points)
    if path is not None and path.exists():
        data = np.load(path, allow_pickle=False)
        reasons = dict(zip(data["rejected_seeds"].tolist(), data["reasons"].tolist()))
        return {"codes": data["codes"].tolist(), "seeds": data["seeds"].tolist(), "points": data["points"],
                "rejected": len(reasons), "reasons": reasons}
    codes, seeds, clouds, reasons = [], [], [], {}
    bar = tqdm(range(start, start + n), desc="synth programs", disable=not progress)
    for seed in bar:
        code, mesh, reason = normalized_program(seed, timeout=timeout)
        if mesh is None:
            reasons[seed] = reason
        else:
            codes.append(code)
            seeds.append(seed)
            clouds.append(mesh_to_point_cloud(mesh, n_points=n_points, seed=seed))
        bar.set_postfix(rejected=len(reasons))
    points = np.stack(clouds).astype(np.float32) if clouds else np.zeros((0, n_points, 3), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, codes=np.array(codes, dtype=str), seeds=np.array(seeds, dtype=np.int64),
                            points=points, rejected_seeds=np.array(list(reasons), dtype=np.int64),
                            reasons=np.array(list(reasons.values()), dtype=str))
    return {"codes": codes, "seeds": seeds, "points": points, "rejected": len(reasons), "reasons": reasons}
