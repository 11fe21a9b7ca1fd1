"""Procedural CadQuery programs of mechanical parts, in CAD-Recode v1.5's style, and the dataset built from them.

A program is a *part* from one of the families in ``FAMILIES``: plates with hole patterns (rows,
grids, corners, bolt circles), discs and flanges, tubes and rings, polygon prisms and nuts, L/T/U/I/C
sections, stepped shafts, plates with bosses, counterbored plates, slotted plates, ribbed L-brackets,
links with round ends (``arc``), and, as a minority share, random unions of boxes and cylinders. Its
vocabulary is CAD-Recode v1.5's: ``cq.Workplane('XY'|'YZ'|'ZX', origin=...)``, ``.workplane(offset=...)``,
``sketch()`` with ``segment``/``arc``/``circle``/``rect``/``push``/``mode='s'``, ``close().assemble()``,
``finalize().extrude()``, ``box``, ``cylinder``, ``union``; the solid is bound to ``r``.

**Canonical form: one shape, one program.** A model that reads 256 points can only learn numbers the
points determine, so every program obeys these rules (``tests/test_synth.py`` checks them):

1. *Normalized frame.* The solid's bounding box is centred at the origin (to one unit) and its longest
   side spans -100..100, the frame of CAD-Recode's normalized inputs: code units = 100 x point-cloud
   units. Every number is an integer.
2. *One workplane.* A part has one workplane ``w0`` on the plane whose normal is the part's extrusion
   direction. Its origin is the centre of the bounding box's lower face along that normal, so in-plane
   (0, 0) is the part's centre. (The random-union family is the exception: each box or cylinder has its
   own workplane at its own centre, as ``box`` and ``cylinder`` are centred on their workplane.)
3. *Bodies stacked along the normal.* A body starts on ``w0`` or on ``w0.workplane(offset=o)`` and is
   extruded by a positive depth; bodies are listed by increasing offset, then by their text.
4. *Sketches.* Coordinates are relative to the workplane origin. An outer ``rect`` or ``circle``
   centred on it is written without ``push``. Cut-outs of one size share one ``push`` with their points
   sorted by (u, v). A closed polyline starts at its lowest vertex (smallest v, then smallest u) and runs
   counter-clockwise.

Within a family, then, the parameters that shape the solid are the only freedom, so two seeds that
draw the same parameters write the same text, and ``normalize_program`` leaves a generated program
unchanged (normalize -> run -> normalize is a fixed point).

``generate_program(seed)`` is a pure function of the seed (``generate_part`` also names the family).
``validate`` runs a program through ``cadlab.cad.sandbox.run_cadquery`` (the sandbox) and accepts it only if
it gives one watertight body inside the grid. ``build_dataset`` turns seeds into (program, 256-point
cloud) pairs, with a progress bar, an on-disk cache and a count of the rejected programs.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.sandbox import closed_solid, run_cadquery, why_invalid
from cadlab.paths import cache_dir

GRID = 100                 # the normalized frame: coordinates live in [-GRID, GRID]
GENERATOR_VERSION = 3      # bump when generate_program or normalize_program changes: part of the cache key
PLANES = ("XY", "YZ", "ZX")

# Operation name -> a regular expression that finds it in a program's text.
OPERATIONS = {
    "XY": r"Workplane\('XY'", "YZ": r"Workplane\('YZ'", "ZX": r"Workplane\('ZX'",
    "workplane(offset)": r"\.workplane\(offset=",
    "segment": r"\.segment\(", "arc": r"\.arc\(", "circle": r"\.circle\(", "rect": r"\.rect\(",
    "push": r"\.push\(", "cut-out": r"mode='s'", "close": r"\.close\(\)\.assemble\(\)",
    "extrude": r"\.finalize\(\)\.extrude\(", "box": r"\.box\(", "cylinder": r"\.cylinder\(",
    "union": r"\.union\(",
}


# --------------------------------------------------------------------------------------------
# Sketch text, in the canonical form
# --------------------------------------------------------------------------------------------
def _pt(p) -> str:
    return f"({p[0]},{p[1]})"


def even(rng: random.Random, lo: int, hi: int) -> int:
    """An even integer in [lo, hi] (even sizes keep half-sizes, and so every coordinate, integer)."""
    lo, hi = lo + (lo % 2), hi - (hi % 2)
    return rng.randrange(lo, hi + 1, 2) if hi >= lo else lo


def _outer_rect(w: int, h: int) -> str:
    return f".rect({w},{h})"


def _outer_circle(radius: int) -> str:
    return f".circle({radius})"


def _cut_circles(points, radius: int) -> str:
    """Holes of one radius: one ``push`` of the sorted points (rule 4)."""
    return f".push([{','.join(_pt(p) for p in sorted(set(points)))}]).circle({radius},mode='s')" if points else ""


def _cut_rects(points, w: int, h: int) -> str:
    return f".push([{','.join(_pt(p) for p in sorted(set(points)))}]).rect({w},{h},mode='s')" if points else ""


def canonical_loop(points):
    """The vertices counter-clockwise, starting at the lowest (smallest v, then u) one (rule 4)."""
    pts = [tuple(p) for p in points]
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, pts[1:] + pts[:1]))
    if area < 0:
        pts = pts[::-1]
    start = min(range(len(pts)), key=lambda i: (pts[i][1], pts[i][0]))
    return pts[start:] + pts[:start]


def _polyline(points) -> str:
    """A closed polygon of ``segment``s (the last edge is added by ``close``)."""
    pts = canonical_loop(points)
    return (f".segment({_pt(pts[0])},{_pt(pts[1])})" + "".join(f".segment({_pt(p)})" for p in pts[2:])
            + ".close().assemble()")


def _rotate(points, quarter_turns: int):
    """Rotate integer points by 90 degrees ``quarter_turns`` times about the origin (stays on the grid)."""
    out = [tuple(p) for p in points]
    for _ in range(quarter_turns % 4):
        out = [(-v, u) for u, v in out]
    return out


def local_to_global(plane: str, u: int, v: int, w: int):
    """'XY': local x, y, normal = X, Y, Z; 'YZ': Y, Z, X; 'ZX': Z, X, Y (CadQuery's named planes)."""
    return {"XY": (u, v, w), "YZ": (w, u, v), "ZX": (v, w, u)}[plane]


def _assemble(plane: str, height: int, bodies) -> str:
    """The program text of a part: ``w0`` at the centre of the lower face (rule 2), the bodies
    ``(offset, sketch, depth)`` sorted by offset then text (rule 3), unioned into ``r``."""
    origin = local_to_global(plane, 0, 0, -height // 2)
    lines = ["import cadquery as cq", f"w0=cq.Workplane('{plane}',origin=({origin[0]},{origin[1]},{origin[2]}))"]
    exprs = []
    for offset, sketch, depth in sorted(bodies):
        base = "w0" if offset == 0 else f"w0.workplane(offset={offset})"
        exprs.append(f"{base}.sketch(){sketch}.finalize().extrude({depth})")
    lines.append(f"r={exprs[0]}")
    lines += [f"r=r.union({e})" for e in exprs[1:]]
    return "\n".join(lines) + "\n"


def _extents(rng: random.Random, long_axis_weights=(1, 1, 1)):
    """Which local axis (u, v or w) carries the longest side (200 units)."""
    return rng.choices(("u", "v", "w"), weights=long_axis_weights)[0]


# --------------------------------------------------------------------------------------------
# Hole patterns inside a w x h rectangle (or a circle) centred at the origin
# --------------------------------------------------------------------------------------------
def hole_pattern(rng: random.Random, w: int, h: int):
    """(points, radius) of 1-6 holes: a row, two rows, a grid, the four corners or a bolt circle,
    each hole at least ``radius + 4`` from the edges and from the other holes."""
    short = min(w, h)
    radius = rng.randint(3, max(3, short // 6))
    margin = radius + max(4, short // 10)
    half_w, half_h = w // 2 - margin, h // 2 - margin
    if half_w < 2 or half_h < 0:
        return [(0, 0)], min(radius, short // 4)
    kind = rng.choice(("row", "rows", "corners", "grid", "circle", "single"))
    if kind == "single":
        return [(0, 0)], rng.randint(3, max(3, short // 3))
    if kind == "circle":
        k = rng.randint(3, 6)
        ring = rng.randint(radius * 2 + 4, max(radius * 2 + 4, min(half_w, half_h) + radius))
        if ring + radius > min(w, h) // 2 - 3:
            ring = min(w, h) // 2 - 3 - radius
        if ring < 2 * radius + 2:
            return [(0, 0)], radius
        pts = [(round(ring * math.cos(2 * math.pi * i / k)), round(ring * math.sin(2 * math.pi * i / k)))
               for i in range(k)]
        return pts, radius
    along_u = w >= h
    length, across = (half_w, half_h) if along_u else (half_h, half_w)
    if kind == "corners":
        pts = [(sx * half_w, sy * half_h) for sx in (-1, 1) for sy in (-1, 1)]
        return (pts if half_h > radius else [(-half_w, 0), (half_w, 0)]), radius
    if kind == "grid" and across > radius:
        cols = rng.randint(2, 3)
        xs = [round(-length + 2 * length * i / (cols - 1)) for i in range(cols)]
        pts = [(x, sy * across) for x in xs for sy in (-1, 1)]
    elif kind == "rows" and across > radius:
        n = rng.randint(2, 3)
        xs = [round(-length + 2 * length * i / (n - 1)) for i in range(n)]
        pts = [(x, sy * across) for x in xs for sy in (-1, 1)]
    else:
        n = rng.randint(1, 6)
        while n > 1 and 2 * length / (n - 1) < 2 * radius + 4:
            n -= 1
        xs = [0] if n == 1 else [round(-length + 2 * length * i / (n - 1)) for i in range(n)]
        pts = [(x, 0) for x in xs]
    return (pts if along_u else [(v, u) for u, v in pts]), radius


# --------------------------------------------------------------------------------------------
# The families: each returns (plane, height along the normal, bodies)
# --------------------------------------------------------------------------------------------
def _plate(rng):
    """A rectangular plate with a hole pattern."""
    long_side, short_side = 200, even(rng, 40, 200)
    w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    t = even(rng, 6, min(60, short_side))
    pts, radius = hole_pattern(rng, w, h)
    return rng.choice(PLANES), t, [(0, _outer_rect(w, h) + _cut_circles(pts, radius), t)]


def _disc(rng):
    """A disc or flange (diameter 200) with an optional centre bore and 3-8 bolt holes on a circle."""
    t = even(rng, 6, 80)
    sketch = _outer_circle(100)
    bore = rng.choice((0, rng.randint(10, 50)))
    if bore:
        sketch += _cut_circles([(0, 0)], bore)
    k = rng.randint(3, 8)
    hole = rng.randint(4, 12)
    ring_lo = max(bore + hole + 6, 30, math.ceil((hole + 2) / math.sin(math.pi / k)))
    ring_hi = 100 - hole - 6
    if ring_hi >= ring_lo:
        ring = rng.randint(ring_lo, ring_hi)
        pts = [(round(ring * math.cos(2 * math.pi * i / k)), round(ring * math.sin(2 * math.pi * i / k))) for i in range(k)]
        sketch += _cut_circles(pts, hole)
    return rng.choice(PLANES), t, [(0, sketch, t)]


def _tube(rng):
    """A tube (length 200) or a ring (diameter 200): two concentric circles, extruded."""
    if rng.random() < 0.5:
        length, outer = 200, rng.randint(15, 100)
    else:
        outer, length = 100, even(rng, 10, 200)
    inner = rng.randint(max(3, outer // 4), outer - max(3, outer // 8))
    return rng.choice(PLANES), length, [(0, _outer_circle(outer) + _cut_circles([(0, 0)], inner), length)]


def regular_polygon(n: int, size: int, quarter: int = 0):
    """A regular n-gon with integer vertices, scaled so its bounding box's longest side is ``size``
    and shifted so the box is centred at the origin (to half a unit)."""
    phase = math.pi / 2 if n % 2 else (0.0 if n % 4 else math.pi / n)   # a flat edge at the bottom
    raw = [(math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]
    us, vs = [p[0] for p in raw], [p[1] for p in raw]
    scale = size / max(max(us) - min(us), max(vs) - min(vs))
    cu, cv = (max(us) + min(us)) / 2, (max(vs) + min(vs)) / 2
    pts = [(round(scale * (u - cu)), round(scale * (v - cv))) for u, v in raw]
    return _rotate(pts, quarter)


def _prism(rng):
    """A polygon prism (3, 5, 6 or 8 sides): a bar, a hexagon nut (with a bore) or a thick plate."""
    n = rng.choice((3, 5, 6, 6, 8))
    if rng.random() < 0.5:
        size, length = 200, even(rng, 10, 200)
    else:
        length, size = 200, even(rng, 30, 200)
    pts = regular_polygon(n, size, rng.randint(0, 3))
    sketch = _polyline(pts)
    if n >= 5 and rng.random() < 0.6:                          # a nut: bored through its centre
        sketch += _cut_circles([(0, 0)], rng.randint(4, max(4, size // 4)))
    return rng.choice(PLANES), length, [(0, sketch, length)]


def section_points(rng, kind: str, w: int, h: int):
    """An L, T, U, I or C profile inside a w x h box centred at the origin (even sizes)."""
    a, b = w // 2, h // 2
    t1 = even(rng, 6, max(6, min(h // 3, 60)))       # horizontal thickness (flange)
    t2 = even(rng, 6, max(6, min(w // 3, 60)))       # vertical thickness (web)
    if kind == "L":
        return [(-a, -b), (a, -b), (a, -b + t1), (-a + t2, -b + t1), (-a + t2, b), (-a, b)]
    if kind == "T":
        c = t2 // 2
        return [(-c, -b), (c, -b), (c, b - t1), (a, b - t1), (a, b), (-a, b), (-a, b - t1), (-c, b - t1)]
    if kind == "U":
        return [(-a, -b), (a, -b), (a, b), (a - t2, b), (a - t2, -b + t1), (-a + t2, -b + t1), (-a + t2, b), (-a, b)]
    if kind == "C":
        return [(-a, -b), (a, -b), (a, -b + t1), (-a + t2, -b + t1), (-a + t2, b - t1), (a, b - t1), (a, b), (-a, b)]
    c = t2 // 2   # I
    return [(-a, -b), (a, -b), (a, -b + t1), (c, -b + t1), (c, b - t1), (a, b - t1), (a, b), (-a, b),
            (-a, b - t1), (-c, b - t1), (-c, -b + t1), (-a, -b + t1)]


def _section(rng):
    """An extruded L, T, U, C or I section (a beam, a channel, an angle)."""
    kind = rng.choice(("L", "T", "U", "C", "I"))
    axis = _extents(rng)
    w = 200 if axis == "u" else even(rng, 40, 200)
    h = 200 if axis == "v" else even(rng, 40, 200)
    length = 200 if axis == "w" else even(rng, 20, 200)
    pts = _rotate(section_points(rng, kind, w, h), rng.randint(0, 3))
    return rng.choice(PLANES), length, [(0, _polyline(pts), length)]


def _shaft(rng):
    """A stepped shaft: 2-4 coaxial cylinders along the normal, optionally with a through bore."""
    steps = rng.randint(2, 4)
    if rng.random() < 0.7:
        length, top = 200, rng.randint(20, 100)
    else:
        length, top = even(rng, 40, 200), 100
    cuts = sorted(rng.sample(range(10, length - 9, 2), steps - 1)) if length >= 20 * steps else None
    if cuts is None or any(b - a < 10 for a, b in zip([0] + cuts, cuts + [length])):
        cuts = [round(length * i / steps / 2) * 2 for i in range(1, steps)]
    radii = [top]
    while len(radii) < steps:
        r = rng.randint(max(8, top // 5), top)
        if abs(r - radii[-1]) >= 4:
            radii.append(r)
    rng.shuffle(radii)
    bore = rng.choice((0, 0, rng.randint(3, max(3, min(radii) - 5))))
    bodies = []
    for start, end, radius in zip([0] + cuts, cuts + [length], radii):
        sketch = _outer_circle(radius) + (_cut_circles([(0, 0)], bore) if bore else "")
        bodies.append((start, sketch, end - start))
    return rng.choice(PLANES), length, bodies


def _boss(rng):
    """A plate (rectangular or round) with 1-2 cylindrical bosses on top, optionally bored through."""
    round_base = rng.random() < 0.3
    w, h = (200, 200) if round_base else ((200, even(rng, 60, 200)) if rng.random() < 0.5 else (even(rng, 60, 200), 200))
    t = even(rng, 6, 40)
    n = rng.choice((1, 1, 2))
    radius = rng.randint(8, max(8, min(w, h) // (4 if n == 1 else 6)))
    if n == 1:
        centres = [(0, 0)]
    else:
        d = min(w, h) // 2 - radius - 6 if round_base else (max(w, h) // 2 - radius - 8)
        d = max(d, radius + 2)
        centres = [(-d, 0), (d, 0)] if (w >= h or round_base) else [(0, -d), (0, d)]
    boss_h = even(rng, 10, 100)
    bore = rng.choice((0, rng.randint(3, max(3, radius - 4))))
    base = (_outer_circle(100) if round_base else _outer_rect(w, h)) + (_cut_circles(centres, bore) if bore else "")
    tops = _outer_circle(radius) if centres == [(0, 0)] else f".push([{','.join(_pt(c) for c in sorted(centres))}]).circle({radius})"
    tops += _cut_circles(centres, bore) if bore else ""
    return rng.choice(PLANES), t + boss_h, [(0, base, t), (t, tops, boss_h)]


def _counterbore(rng):
    """A plate of two layers: through holes in the lower one, wider holes at the same places in the upper."""
    w, h = (200, even(rng, 60, 200)) if rng.random() < 0.5 else (even(rng, 60, 200), 200)
    t1, t2 = even(rng, 6, 40), even(rng, 4, 24)
    pts, radius = hole_pattern(rng, w, h)
    wide = radius + rng.randint(3, max(3, radius))
    pts = [p for p in pts if abs(p[0]) + wide < w // 2 - 2 and abs(p[1]) + wide < h // 2 - 2] or [(0, 0)]
    lower = _outer_rect(w, h) + _cut_circles(pts, radius)
    upper = _outer_rect(w, h) + _cut_circles(pts, wide)
    return rng.choice(PLANES), t1 + t2, [(0, lower, t1), (t1, upper, t2)]


def _slotted(rng):
    """A plate with 1-2 slots: rounded (a rectangle and two circles) or rectangular."""
    w, h = 200, even(rng, 60, 200)
    t = even(rng, 6, 40)
    n = rng.choice((1, 2))
    half = rng.randint(4, max(4, h // (6 * n)))                # slot half-width
    length = even(rng, 20, max(20, w - 4 * half - 40))
    ys = [0] if n == 1 else [-(h // 4), h // 4]
    rounded = rng.random() < 0.6
    sketch = _outer_rect(w, h) + _cut_rects([(0, y) for y in ys], length, 2 * half)
    if rounded:
        sketch += _cut_circles([(sx * length // 2, y) for y in ys for sx in (-1, 1)], half)
    if rng.random() < 0.5:                                     # mounting holes at the ends
        r = rng.randint(3, 8)
        x = w // 2 - r - 8
        if x > length // 2 + half + r + 4:
            sketch += _cut_circles([(-x, 0), (x, 0)], r)
    if rng.random() < 0.5:                                     # turn the plate a quarter
        sketch = _swap_uv(sketch)
    return rng.choice(PLANES), t, [(0, sketch, t)]


def _swap_uv(sketch: str) -> str:
    """The same sketch turned a quarter (u, v) -> (v, u), rect sizes swapped, points re-sorted."""
    def points(match):
        pts = [(int(b), int(a)) for a, b in re.findall(r"\((-?\d+),(-?\d+)\)", match.group(1))]
        return f".push([{','.join(_pt(p) for p in sorted(pts))}])"
    out = re.sub(r"\.push\(\[(.*?)\]\)", points, sketch)
    return re.sub(r"\.rect\((\d+),(\d+)", lambda m: f".rect({m.group(2)},{m.group(1)}", out)


def _bracket(rng):
    """An L angle with 1-3 triangular ribs (gussets) in its inner corner."""
    w, h = even(rng, 60, 200), even(rng, 60, 200)
    if max(w, h) < 200 and rng.random() < 0.6:
        w, h = (200, h) if rng.random() < 0.5 else (w, 200)
    length = even(rng, 40, 200) if max(w, h) == 200 else 200
    a, b = w // 2, h // 2
    t1, t2 = even(rng, 6, min(30, h // 3)), even(rng, 6, min(30, w // 3))
    profile = [(-a, -b), (a, -b), (a, -b + t1), (-a + t2, -b + t1), (-a + t2, b), (-a, b)]
    cu, cv = -a + t2, -b + t1
    ru, rv = even(rng, 10, max(10, (w - t2) * 3 // 4)), even(rng, 10, max(10, (h - t1) * 3 // 4))
    rib = [(cu - 1, cv - 1), (cu + ru, cv - 1), (cu - 1, cv + rv)]       # overlaps the angle by one unit
    g = even(rng, 4, 12)
    n = rng.choice((1, 2, 3)) if length >= 60 else 1
    offsets = [(length - g) // 2] if n == 1 else [round(((length - g) * i / (n - 1)) / 2) * 2 for i in range(n)]
    if n > 1:
        inset = even(rng, 0, max(0, length // 6))
        offsets = [min(max(o, inset), length - g - inset) for o in offsets]
    quarter = rng.randint(0, 3)
    bodies = [(0, _polyline(_rotate(profile, quarter)), length)]
    bodies += [(o, _polyline(_rotate(rib, quarter)), g) for o in sorted(set(offsets))]
    return rng.choice(PLANES), length, bodies


def _link(rng):
    """A link (two round ends drawn with ``arc``, a hole at each end) or a D-shaped tab with one hole,
    lying along u or along v. Rule 4 for outlines with arcs: start at the lowest vertex where a
    straight ``segment`` begins, counter-clockwise."""
    t = even(rng, 6, 60)
    radius = rng.randint(15, 60)
    c = 100 - radius                           # centre of a round end: the part is 200 long
    hole = rng.randint(3, radius - 5)
    along_u = rng.random() < 0.5
    if rng.random() < 0.6:
        if along_u:
            outline = (f".segment(({-c},{-radius}),({c},{-radius})).arc((100,0),({c},{radius}))"
                       f".segment(({-c},{radius})).arc((-100,0),({-c},{-radius})).assemble()")
            holes = [(-c, 0), (c, 0)]
        else:
            outline = (f".segment(({radius},{-c}),({radius},{c})).arc((0,100),({-radius},{c}))"
                       f".segment(({-radius},{-c})).arc((0,-100),({radius},{-c})).assemble()")
            holes = [(0, -c), (0, c)]
    elif along_u:
        outline = (f".segment((-100,{-radius}),({c},{-radius})).arc((100,0),({c},{radius}))"
                   f".segment((-100,{radius})).close().assemble()")
        holes = [(c, 0)]
    else:
        outline = (f".segment(({-radius},-100),({radius},-100)).segment(({radius},{c}))"
                   f".arc((0,100),({-radius},{c})).close().assemble()")
        holes = [(0, c)]
    return rng.choice(PLANES), t, [(0, outline + _cut_circles(holes, hole), t)]


def _union(rng):
    """The minority family: 2-3 boxes and cylinders through a common centre, each on its own workplane
    at its own centre (rule 2's exception), then normalized."""
    lines, bodies = ["import cadquery as cq"], []
    for i in range(rng.choice((2, 2, 3))):
        plane = rng.choice(PLANES)
        if rng.random() < 0.5:
            a, b, c = (even(rng, 10, 120) for _ in range(3))
            u, v, w = (rng.randint(-(n // 2 - 4), n // 2 - 4) for n in (a, b, c))
            expr = f".box({a},{b},{c})"
        else:
            height, radius = even(rng, 10, 120), rng.randint(6, 60)
            u, v = (rng.randint(-(radius // 2), radius // 2) for _ in range(2))
            w = rng.randint(-(height // 2 - 4), height // 2 - 4)
            expr = f".cylinder({height},{radius})"
        x, y, z = local_to_global(plane, u, v, w)
        bodies.append(f"cq.Workplane('{plane}',origin=({x},{y},{z})){expr}")
    bodies.sort()
    lines.append(f"r={bodies[0]}")
    lines += [f"r=r.union({b})" for b in bodies[1:]]
    return "\n".join(lines) + "\n"


# name -> (builder, weight): the weights are the family mix of the training data.
FAMILIES = {
    "plate": (_plate, 14), "disc": (_disc, 8), "tube": (_tube, 7), "prism": (_prism, 7),
    "section": (_section, 12), "shaft": (_shaft, 9), "boss": (_boss, 9), "counterbore": (_counterbore, 7),
    "slotted": (_slotted, 7), "bracket": (_bracket, 8), "link": (_link, 6), "union": (_union, 6),
}


def generate_part(seed: int, family: str | None = None) -> tuple[str, str]:
    """``(family, program)`` for ``seed``: a pure function of the seed (and of ``family`` if given).
    Programs of the union family are raw (``normalized_program`` normalizes them); every other
    family writes its program directly in the canonical, normalized form."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = random.Random(int(seed))
    names = list(FAMILIES)
    name = family or rng.choices(names, weights=[FAMILIES[n][1] for n in names])[0]
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    built = FAMILIES[name][0](rng)
    return name, built if isinstance(built, str) else _assemble(*built)


def generate_program(seed: int) -> str:
    """A CadQuery program (str) of a mechanical part in CAD-Recode v1.5's style, a pure function of ``seed``."""
    return generate_part(seed)[1]


def to_grid(x: float) -> int:
    """A point-cloud coordinate (the [-1, 1] frame) as a code number on the grid: ``round(100 * x)``.
    One grid step, 0.01 of the frame, is the finest detail a program writes."""
    return int(round(GRID * float(x)))


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")      # a number literal of a program (not part of a name)
_ORIGIN = re.compile(r"origin=\((-?\d+),(-?\d+),(-?\d+)\)")


def is_normalized(bounds, tolerance: float = 1.0) -> bool:
    """Rule 1: the bounding box is centred at the origin and its longest side is 200, each to ``tolerance``."""
    lo, hi = np.asarray(bounds, dtype=float)
    return bool(np.all(np.abs((lo + hi) / 2) <= tolerance) and abs((hi - lo).max() - 2 * GRID) <= 2 * tolerance)


def normalize_program(code: str, bounds, half_extent: int = GRID) -> str:
    """``code`` rescaled and recentred so that its solid's bounding box is centred at the origin
    with its longest side spanning [-half_extent, half_extent] (``bounds``: the solid's (2, 3)
    [min, max] corners, e.g. ``mesh.bounds`` from ``validate``). A program that is already
    normalized (``is_normalized``) is returned unchanged, so normalizing is idempotent.

    With centre c and scale s = 2 * half_extent / (longest side): every workplane origin o
    becomes round(s * (o - c)), every other number x (sketch coordinates, sizes, depths, offsets,
    all local to a workplane) becomes round(s * x). Sketches, extrusions, boxes and cylinders all
    scale with their numbers, so the new solid is s * (solid - c) up to rounding (< 1 unit);
    run it through ``validate`` again to be sure.
    """
    lo, hi = np.asarray(bounds, dtype=float)
    extent = float((hi - lo).max())
    if not np.all(np.isfinite([lo, hi])) or extent <= 0:
        raise ValueError(f"bounds must be finite with a positive size, got {np.asarray(bounds).tolist()}")
    if half_extent == GRID and is_normalized(bounds):
        return code
    centre, scale = (lo + hi) / 2, 2 * half_extent / extent

    def scaled(match) -> str:
        return str(round(float(match.group()) * scale))

    head, body = code.split("\n", 1)
    lines = []
    for line in body.splitlines():
        origin = _ORIGIN.search(line)
        if origin and "Workplane(" in line:
            new = [round(scale * (int(v) - c)) for v, c in zip(origin.groups(), centre)]
            line = (NUMBER.sub(scaled, line[:origin.start()]) + f"origin=({new[0]},{new[1]},{new[2]})"
                    + NUMBER.sub(scaled, line[origin.end():]))
        else:
            line = NUMBER.sub(scaled, line)
        lines.append(line)
    return head + "\n" + "\n".join(lines) + "\n"


def program_numbers(code: str) -> list[int]:
    """Every numeric literal in a program after the import line (not the digits of names like ``w0``)."""
    body = code.split("\n", 1)[1]
    return [int(float(n)) if float(n).is_integer() else float(n) for n in NUMBER.findall(body)]


def operations(code: str) -> set[str]:
    """The names in ``OPERATIONS`` that a program uses."""
    return {name for name, pattern in OPERATIONS.items() if re.search(pattern, code)}


def validate(code: str, timeout: float = 3.0):
    """Run ``code`` in the sandbox; return ``(mesh, None)`` if it is one watertight body inside the
    grid (to one unit), else ``(None, reason)``."""
    result = run_cadquery(code, timeout=timeout)
    if result.kind in ("crash", "timeout"):          # a busy or disturbed machine's fault more often than the program's:
        result = run_cadquery(code, timeout=timeout)  # one more try, so the data do not depend on the load
    mesh = closed_solid(result)
    if mesh is None:
        return None, why_invalid(result)
    if mesh.body_count != 1:
        return None, f"{mesh.body_count} separate bodies (the union did not connect them)"
    if np.abs(mesh.bounds).max() > GRID + 1:
        return None, f"solid leaves the [-{GRID}, {GRID}] grid"
    return mesh, None


def normalized_program(seed: int, timeout: float = 3.0):
    """One training example's program: ``generate_program(seed)`` -> ``validate`` ->
    ``normalize_program`` (a no-op for every family but the random unions) -> ``validate``, and the
    solid must then be normalized (rule 1). Returns ``(code, mesh, None)``, or ``(None, None, reason)``."""
    raw = generate_program(seed)
    mesh, reason = validate(raw, timeout=timeout)
    if mesh is None:
        return None, None, reason
    code = normalize_program(raw, mesh.bounds)
    if code != raw:
        mesh, reason = validate(code, timeout=timeout)
        if mesh is None:
            return None, None, f"after normalize_program: {reason}"
    if not is_normalized(mesh.bounds):
        return None, None, f"not in the normalized frame: bounds {np.round(mesh.bounds, 1).tolist()}"
    return code, mesh, None


def cache_path(cache_dir, start: int, n: int, n_points: int) -> Path:
    key = hashlib.sha1(f"v{GENERATOR_VERSION}-{start}-{n}-{n_points}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"synth_{start}_{n}_{n_points}_{key}.npz"


DEFAULT_CACHE = cache_dir() / "synth"


def build_dataset(n: int, start: int = 0, n_points: int = 256, cache_dir=DEFAULT_CACHE, timeout: float = 3.0,
                  progress: bool = True) -> dict:
    """Programs for seeds ``start .. start+n-1`` -> sandbox -> ``normalize_program`` -> sandbox
    -> mesh -> normalized point cloud.

    Returns a dict: ``codes`` (accepted, normalized programs), ``seeds`` (their seeds), ``families``
    (each program's family), ``points``
    (len(codes), n_points, 3) float32 point clouds of the meshes normalized as CAD-Recode's
    inputs (``cadlab.cad.pointcloud.mesh_to_point_cloud``, sampling seed = program seed),
    ``rejected`` (how many seeds gave no valid program) and ``reasons`` (seed -> why). The
    result is cached in ``cache_dir`` (default ``$CADLAB_CACHE/synth``, else ``~/.cache/cadlab/synth``;
    an .npz per (start, n, n_points, generator version));
    pass ``cache_dir=None`` to neither read nor write a cache.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    path = None if cache_dir is None else cache_path(cache_dir, start, n, n_points)
    if path is not None and path.exists():
        data = np.load(path, allow_pickle=False)
        reasons = dict(zip(data["rejected_seeds"].tolist(), data["reasons"].tolist()))
        seeds = data["seeds"].tolist()
        return {"codes": data["codes"].tolist(), "seeds": seeds, "families": [generate_part(s)[0] for s in seeds],
                "points": data["points"], "rejected": len(reasons), "reasons": reasons}
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
        partial = path.with_suffix(".partial.npz")              # written, then renamed: readers never see half a file
        np.savez_compressed(partial, codes=np.array(codes, dtype=str), seeds=np.array(seeds, dtype=np.int64),
                            points=points, rejected_seeds=np.array(list(reasons), dtype=np.int64),
                            reasons=np.array(list(reasons.values()), dtype=str))
        partial.replace(path)
    return {"codes": codes, "seeds": seeds, "families": [generate_part(s)[0] for s in seeds], "points": points,
            "rejected": len(reasons), "reasons": reasons}
