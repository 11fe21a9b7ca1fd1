"""DeepCAD-format CAD sequences: building them, their CadQuery program, their truncations, their text.

``sample_sequence(seed) -> (caption, full)`` builds a part (a plate with holes, a flange, a
stepped shaft, a channel, a link, a slotted plate, a nut, a plate with bosses; the hole patterns and
profiles come from ``cadlab.cad.synth``) as a dict in DeepCAD / Omni-CAD's JSON layout:

* ``entities``: id -> ``Sketch`` (``transform`` {origin, x_axis, z_axis}; ``profiles`` {pid: {loops:
  [{is_outer, profile_curves}]}}, curves of type ``Line3D`` {start_point, end_point}, ``Arc3D``
  {start_point, end_point, center_point, normal} or ``Circle3D`` {center_point, radius}) or
  ``ExtrudeFeature`` (``profiles`` [{profile, sketch}], ``operation`` NewBody/Join/Cut/Intersect +
  ``FeatureOperation``, ``extent_type`` OneSide/Symmetric/TwoSides + ``FeatureExtentType``,
  ``extent_one`` {distance {value}}, and ``extent_two`` for TwoSides);
* ``properties.bounding_box`` {min_point, max_point};
* ``sequence``: [{index, type, entity}], one item per operation (a sketch or an extrude).

To keep sequences short we dropped what the converter does not read: entity names and Fusion's long
ids (ours are ``S0``, ``E1`` ... after their index, profiles ``P0``, ``P1`` ...), the sketch's
``y_axis`` (it is z x x), the z of curve points (0 in sketch coordinates), an arc's radius, angles and
reference vector (the centre, the end points and the normal's sign fix it), a circle's normal (+z),
``extent_two`` unless the extent is TwoSides, ``start_extent`` (always the profile plane), taper
angles and the curve ids. Numbers are integers in the course's normalized frame (parts span about
-100..100, like ``cadlab.cad.synth``'s). Semantics follow DeepCAD's ``cadlib``: Symmetric extrudes
``extent_one`` to each side, TwoSides ``extent_one`` along the normal and ``extent_two`` against it,
NewBody and Join fuse, and Sketch items only matter through the extrudes that use them.

``truncate(full, kept)`` / ``truncations(full)`` write the truncated files as the public truncation
script does (``*_tr_01`` ... ``_tr_05``, kept counts round(1 + i(N-2)/(k-1)), k = min(N-1, 5), the
entities filtered to those referenced, ``truncation_metadata``). ``to_cadquery(doc)`` turns a
sequence into a CadQuery program and ``build_solid(doc)`` runs it, always through the sandbox
(``cadlab.cad.sandbox.run_cadquery``).

``serialize(full, kept)`` is a true string prefix of ``serialize(full)`` (see there), so
the text of kept operations followed by the completion is the full text, and the boundary between
them falls between two tokens; ``parse`` reads a text back.
"""

from __future__ import annotations

import copy
import json
import math
import random

from cadlab.cad.sandbox import run_cadquery
from cadlab.cad.synth import canonical_loop, even, hole_pattern, local_to_global, regular_polygon, section_points

PLANES = ("XY", "YZ", "ZX")
OPERATIONS = ("NewBody", "Join", "Cut", "Intersect")
EXTENT_TYPES = ("OneSide", "Symmetric", "TwoSides")


# --------------------------------------------------------------------------------------------
# Building a sequence
# --------------------------------------------------------------------------------------------
def _p(x, y) -> dict:
    return {"x": x, "y": y}


def _v(x, y, z) -> dict:
    return {"x": x, "y": y, "z": z}


def line(a, b) -> dict:
    """A ``Line3D`` from point a to point b (sketch coordinates)."""
    return {"type": "Line3D", "start_point": _p(*a), "end_point": _p(*b)}


def arc(start, end, center, ccw: bool = True) -> dict:
    """An ``Arc3D`` around ``center`` from ``start`` to ``end``, counter-clockwise when the normal is +z."""
    return {"type": "Arc3D", "start_point": _p(*start), "end_point": _p(*end), "center_point": _p(*center),
            "normal": _v(0, 0, 1 if ccw else -1)}


def circle(center, radius) -> dict:
    """A ``Circle3D``."""
    return {"type": "Circle3D", "center_point": _p(*center), "radius": radius}


def loop(curves, outer: bool = True) -> dict:
    return {"is_outer": outer, "profile_curves": list(curves)}


def polygon(points, outer: bool = True) -> dict:
    """A closed loop of ``Line3D``s, counter-clockwise from its lowest vertex."""
    pts = canonical_loop(points)
    return loop([line(a, b) for a, b in zip(pts, pts[1:] + pts[:1])], outer)


def rect(w, h, cx=0, cy=0, outer: bool = True) -> dict:
    a, b = w // 2, h // 2
    return polygon([(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx - a, cy + b)], outer)


def rounded_rect(w, h, rr, outer: bool = True) -> dict:
    """A w x h rectangle centred at the origin whose corners are quarter arcs of radius rr."""
    a, b = w // 2, h // 2
    return loop([line((-a + rr, -b), (a - rr, -b)), arc((a - rr, -b), (a, -b + rr), (a - rr, -b + rr)),
                 line((a, -b + rr), (a, b - rr)), arc((a, b - rr), (a - rr, b), (a - rr, b - rr)),
                 line((a - rr, b), (-a + rr, b)), arc((-a + rr, b), (-a, b - rr), (-a + rr, b - rr)),
                 line((-a, b - rr), (-a, -b + rr)), arc((-a, -b + rr), (-a + rr, -b), (-a + rr, -b + rr))], outer)


def stadium(c, half_length, radius, along_u: bool = True, outer: bool = True) -> dict:
    """A slot (two straight sides and two half circles) centred at c."""
    cu, cv = c
    if along_u:
        p, q = (cu - half_length, cv), (cu + half_length, cv)
        return loop([line((p[0], cv - radius), (q[0], cv - radius)), arc((q[0], cv - radius), (q[0], cv + radius), q),
                     line((q[0], cv + radius), (p[0], cv + radius)), arc((p[0], cv + radius), (p[0], cv - radius), p)],
                    outer)
    p, q = (cu, cv - half_length), (cu, cv + half_length)
    return loop([line((cu + radius, p[1]), (cu + radius, q[1])), arc((cu + radius, q[1]), (cu - radius, q[1]), q),
                 line((cu - radius, q[1]), (cu - radius, p[1])), arc((cu - radius, p[1]), (cu + radius, p[1]), p)], outer)


class SequenceBuilder:
    """Appends sketches and extrudes to a DeepCAD-format dict (``doc()``)."""

    def __init__(self):
        self.entities, self.sequence = {}, []

    def sketch(self, plane: str, offset: int, profiles) -> str:
        """A sketch on the named plane ('XY', 'YZ', 'ZX' as CadQuery's) moved ``offset`` along its
        normal; ``profiles`` is a list of profiles, each a list of loops. Returns the sketch id."""
        sid = f"S{len(self.sequence)}"
        self.entities[sid] = {
            "type": "Sketch",
            "transform": {"origin": _v(*local_to_global(plane, 0, 0, offset)),
                          "x_axis": _v(*local_to_global(plane, 1, 0, 0)),
                          "z_axis": _v(*local_to_global(plane, 0, 0, 1))},
            "profiles": {f"P{i}": {"loops": list(loops)} for i, loops in enumerate(profiles)},
        }
        self.sequence.append({"index": len(self.sequence), "type": "Sketch", "entity": sid})
        return sid

    def extrude(self, sketch: str, operation: str = "NewBody", extent_type: str = "OneSide",
                extent_one: int = 10, extent_two: int | None = None, profiles=None) -> str:
        """Extrude ``profiles`` (default: all) of ``sketch``; returns the feature's id."""
        eid = f"E{len(self.sequence)}"
        pids = profiles if profiles is not None else list(self.entities[sketch]["profiles"])
        feature = {"type": "ExtrudeFeature", "profiles": [{"profile": p, "sketch": sketch} for p in pids],
                   "operation": f"{operation}FeatureOperation", "extent_type": f"{extent_type}FeatureExtentType",
                   "extent_one": {"distance": {"value": extent_one}}}
        if extent_type == "TwoSides":
            feature["extent_two"] = {"distance": {"value": extent_two}}
        self.entities[eid] = feature
        self.sequence.append({"index": len(self.sequence), "type": "ExtrudeFeature", "entity": eid})
        return eid

    def doc(self) -> dict:
        doc = {"entities": self.entities, "properties": {}, "sequence": self.sequence}
        lo, hi = bounding_box(doc)
        doc["properties"] = {"bounding_box": {"min_point": _v(*lo), "max_point": _v(*hi)}}
        return doc


# --------------------------------------------------------------------------------------------
# Part families (their hole patterns, sections and polygons come from cadlab.cad.synth)
# --------------------------------------------------------------------------------------------
def _count(n: int, word: str) -> str:
    """``n`` and ``word``, plural when n != 1: "1 hole", "2 holes", "2 cylindrical bosses"."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}" + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def _plate(rng, b):
    w, h = 200, even(rng, 40, 200)
    if rng.random() < 0.5:
        w, h = h, w
    t = even(rng, 6, 40)
    pts, radius = hole_pattern(rng, w, h)
    short = min(w, h)
    rounded = rng.random() < 0.4
    outline = rounded_rect(w, h, even(rng, 4, max(4, short // 10))) if rounded else rect(w, h)
    plane = rng.choice(PLANES)
    s = b.sketch(plane, 0, [[outline] + [loop([circle(p, radius)], False) for p in sorted(set(pts))]])
    b.extrude(s, "NewBody", "OneSide", t)
    caption = f"a {'rounded ' if rounded else ''}rectangular plate {w} x {h} x {t} with {_count(len(set(pts)), 'hole')}"
    if rng.random() < 0.4 and t >= 10:
        depth = even(rng, 2, t // 2)
        s = b.sketch(plane, t - depth, [[rect(even(rng, 20, w // 2), even(rng, 10, h // 2))]])
        b.extrude(s, "Cut", "OneSide", depth)
        caption += f" and a rectangular pocket {depth} deep"
    return caption


def _bolt_circle(k, ring):
    return [(round(ring * math.cos(2 * math.pi * i / k)), round(ring * math.sin(2 * math.pi * i / k))) for i in range(k)]


def _flange(rng, b):
    plane, t = rng.choice(PLANES), even(rng, 6, 30)
    bore = rng.choice((0, rng.randint(8, 30)))
    hub = rng.randint(max(bore + 8, 20), 55)
    hub_h = even(rng, 6, 60)
    loops = [loop([circle((0, 0), 100)])] + ([loop([circle((0, 0), bore)], False)] if bore else [])
    s = b.sketch(plane, 0, [loops])
    b.extrude(s, "NewBody", "OneSide", t)
    s = b.sketch(plane, t, [[loop([circle((0, 0), hub)])]])
    b.extrude(s, "Join", "OneSide", hub_h)
    caption = f"a round flange of diameter 200 with a hub of diameter {2 * hub}"
    if bore:
        s = b.sketch(plane, 0, [[loop([circle((0, 0), bore)])]])
        b.extrude(s, "Cut", "OneSide", t + hub_h)
        caption += f", a centre bore of diameter {2 * bore}"
    k, hole = rng.randint(3, 8), rng.randint(4, 10)
    lo, hi = max(hub + hole + 4, math.ceil((hole + 3) / math.sin(math.pi / k))), 100 - hole - 5
    if hi >= lo:
        ring = rng.randint(lo, hi)
        s = b.sketch(plane, 0, [[loop([circle(p, hole)])] for p in _bolt_circle(k, ring)])
        b.extrude(s, "Cut", "OneSide", t)
        caption += f" and {_count(k, 'bolt hole')}"
    return caption


def _shaft(rng, b):
    plane, steps = rng.choice(PLANES), rng.randint(2, 4)
    lengths = [even(rng, 16, 200 // steps) for _ in range(steps)]
    radii = []
    while len(radii) < steps:
        r = rng.randint(12, 60)
        if not radii or abs(r - radii[-1]) >= 4:
            radii.append(r)
    offset = 0
    for i, (length, r) in enumerate(zip(lengths, radii)):
        s = b.sketch(plane, offset, [[loop([circle((0, 0), r)])]])
        b.extrude(s, "NewBody" if i == 0 else "Join", "OneSide", length)
        offset += length
    caption = f"a stepped shaft {offset} long with {steps} diameters ({', '.join(str(2 * r) for r in radii)})"
    if rng.random() < 0.5:
        bore = rng.randint(3, min(radii) - 5)
        s = b.sketch(plane, 0, [[loop([circle((0, 0), bore)])]])
        b.extrude(s, "Cut", "OneSide", offset)
        caption += f" and a through bore of diameter {2 * bore}"
    return caption


def _channel(rng, b):
    """A beam with an L, U, C or I section along X (sketch on YZ, extruded symmetrically), holes in its base."""
    kind = rng.choice(("L", "U", "C", "I"))
    w, h, length = even(rng, 60, 200), even(rng, 60, 200), even(rng, 80, 200)
    pts = section_points(rng, kind, w, h)
    s = b.sketch("YZ", 0, [[polygon(pts)]])
    b.extrude(s, "NewBody", "Symmetric", length // 2)
    names = {"L": "an L-angle", "U": "a U-channel", "C": "a C-channel", "I": "an I-beam"}
    caption = f"{names[kind]} {length} long with a {w} x {h} section"
    a, bb = w // 2, h // 2
    if kind == "U":          # (-a,-b) (a,-b) (a,b) (a-t2,b) (a-t2,-b+t1) ...: the base lies between two webs
        t1, y_lo, y_hi = pts[4][1] + bb, -pts[3][0], pts[3][0]
    elif kind == "I":        # the web is -c..c: holes on one side of it
        t1, y_lo, y_hi = pts[2][1] + bb, pts[3][0], a
    else:                    # L, C: (-a,-b) (a,-b) (a,-b+t1) (-a+t2,-b+t1) ...: the web at -a
        t1, y_lo, y_hi = pts[2][1] + bb, pts[3][0], a
    radius = min((y_hi - y_lo) // 2 - 4, 12)
    if radius >= 3 and rng.random() < 0.8:
        n = rng.randint(1, 4)
        span = length // 2 - radius - 8
        while n > 1 and 2 * span / (n - 1) < 2 * radius + 4:     # holes apart from each other
            n -= 1
        xs = [0] if n == 1 else [round(-span + 2 * span * i / (n - 1)) for i in range(n)]
        y = (y_lo + y_hi) // 2
        s = b.sketch("XY", -bb, [[loop([circle((x, y), radius)])] for x in xs])
        b.extrude(s, "Cut", "TwoSides", t1 + 2, 2)
        caption += f" and {_count(n, 'hole')} in its base"
    return caption


def _link(rng, b):
    plane, t = rng.choice(PLANES), even(rng, 6, 40)
    radius = rng.randint(15, 50)
    c = 100 - radius
    hole = rng.randint(3, radius - 6)
    outline = stadium((0, 0), c, radius, along_u=True)
    s = b.sketch(plane, 0, [[outline, loop([circle((-c, 0), hole)], False), loop([circle((c, 0), hole)], False)]])
    b.extrude(s, "NewBody", "OneSide", t)
    caption = f"a link 200 long with two round ends of radius {radius} and two holes"
    if rng.random() < 0.5:
        boss, boss_h = rng.randint(hole + 4, radius), even(rng, 4, 40)
        s = b.sketch(plane, t, [[loop([circle((x, 0), boss)]), loop([circle((x, 0), hole)], False)] for x in (-c, c)])
        b.extrude(s, "Join", "OneSide", boss_h)
        caption += f", with a raised boss {boss_h} high around each hole"
    return caption


def _slotted(rng, b):
    plane, t = rng.choice(PLANES), even(rng, 6, 30)
    h = even(rng, 80, 200)
    s = b.sketch(plane, 0, [[rect(200, h)]])
    b.extrude(s, "NewBody", "OneSide", t)
    n = rng.choice((1, 2))
    radius = rng.randint(4, max(4, h // (6 * n)))
    half = rng.randint(10, 60)
    ys = [0] if n == 1 else [-(h // 4), h // 4]
    s = b.sketch(plane, t // 2, [[stadium((0, y), half, radius)] for y in ys])
    b.extrude(s, "Cut", "Symmetric", t // 2 + 2)
    return f"a plate 200 x {h} x {t} with {_count(n, 'rounded slot')} {2 * (half + radius)} long"


def _nut(rng, b):
    n = rng.choice((3, 5, 6, 6, 8))
    size, length = 200, even(rng, 10, 200)
    if rng.random() < 0.5:
        size, length = even(rng, 40, 200), 200
    loops = [polygon(regular_polygon(n, size))]
    bore = rng.randint(4, size // 4) if n >= 5 and rng.random() < 0.7 else 0
    if bore:
        loops.append(loop([circle((0, 0), bore)], False))
    s = b.sketch(rng.choice(PLANES), 0, [loops])
    b.extrude(s, "NewBody", "Symmetric", length // 2)
    names = {3: "triangular", 5: "pentagonal", 6: "hexagonal", 8: "octagonal"}
    what = "nut" if bore else "prism"
    return f"a {names[n]} {what} {size} across and {length} long" + (f" with a bore of diameter {2 * bore}" if bore else "")


def _bosses(rng, b):
    plane, t = rng.choice(PLANES), even(rng, 6, 30)
    w, h = 200, even(rng, 60, 200)
    s = b.sketch(plane, 0, [[rect(w, h)]])
    b.extrude(s, "NewBody", "OneSide", t)
    n = rng.choice((1, 2, 3))
    radius = rng.randint(8, max(8, min(h // 4, 200 // (3 * n))))
    xs = [0] if n == 1 else [round(-60 + 120 * i / (n - 1)) for i in range(n)]
    boss_h = even(rng, 10, 80)
    s = b.sketch(plane, t, [[loop([circle((x, 0), radius)])] for x in xs])
    b.extrude(s, "Join", "OneSide", boss_h)
    caption = f"a plate 200 x {h} x {t} with {_count(n, 'cylindrical boss')} of diameter {2 * radius}"
    if rng.random() < 0.6:
        bore = rng.randint(3, radius - 4)
        s = b.sketch(plane, 0, [[loop([circle((x, 0), bore)])] for x in xs])
        b.extrude(s, "Cut", "OneSide", t + boss_h)
        caption += ", bored through"
    return caption


# name -> (builder, weight)
FAMILIES = {"plate": (_plate, 3), "flange": (_flange, 2), "shaft": (_shaft, 2), "channel": (_channel, 2),
            "link": (_link, 2), "slotted": (_slotted, 2), "nut": (_nut, 1), "bosses": (_bosses, 2)}


def family_of(seed: int) -> str:
    """The family ``sample_sequence(seed)`` draws (its first random choice)."""
    rng = random.Random(int(seed))
    names = list(FAMILIES)
    return rng.choices(names, weights=[FAMILIES[n][1] for n in names])[0]


def sample_sequence(seed: int, family: str | None = None) -> tuple[str, dict]:
    """``(caption, full)``: a part-like DeepCAD-format sequence, a pure function of ``seed`` (and ``family``)."""
    rng = random.Random(int(seed))
    names = list(FAMILIES)
    name = family or rng.choices(names, weights=[FAMILIES[n][1] for n in names])[0]
    builder = SequenceBuilder()
    caption = FAMILIES[name][0](rng, builder)
    return caption[0].upper() + caption[1:] + ".", builder.doc()


# --------------------------------------------------------------------------------------------
# Geometry: curves -> 2D extents -> bounding box; sequence -> CadQuery program -> solid
# --------------------------------------------------------------------------------------------
def _xy(point) -> tuple[float, float]:
    return float(point["x"]), float(point["y"])


def arc_midpoint(curve) -> tuple[float, float]:
    """The point halfway along an ``Arc3D`` (counter-clockwise around the centre when normal.z > 0)."""
    (sx, sy), (ex, ey), (cx, cy) = _xy(curve["start_point"]), _xy(curve["end_point"]), _xy(curve["center_point"])
    radius = math.hypot(sx - cx, sy - cy)
    a0, a1 = math.atan2(sy - cy, sx - cx), math.atan2(ey - cy, ex - cx)
    ccw = curve.get("normal", {}).get("z", 1) >= 0
    sweep = ((a1 - a0) if ccw else (a0 - a1)) % (2 * math.pi) or 2 * math.pi
    mid = a0 + (sweep / 2 if ccw else -sweep / 2)
    return cx + radius * math.cos(mid), cy + radius * math.sin(mid)


def _curve_extent(curve):
    """(umin, vmin, umax, vmax) of one curve."""
    if curve["type"] == "Circle3D":
        (cx, cy), r = _xy(curve["center_point"]), float(curve["radius"])
        return cx - r, cy - r, cx + r, cy + r
    pts = [_xy(curve["start_point"]), _xy(curve["end_point"])]
    if curve["type"] == "Arc3D":
        (sx, sy), (cx, cy) = pts[0], _xy(curve["center_point"])
        r = math.hypot(sx - cx, sy - cy)
        a0 = math.atan2(sy - cy, sx - cx)
        ccw = curve.get("normal", {}).get("z", 1) >= 0
        ex, ey = pts[1]
        sweep = ((math.atan2(ey - cy, ex - cx) - a0) if ccw else (a0 - math.atan2(ey - cy, ex - cx))) % (2 * math.pi)
        for k in range(4):                                  # the axis points the arc passes through
            angle = k * math.pi / 2
            delta = ((angle - a0) if ccw else (a0 - angle)) % (2 * math.pi)
            if delta <= (sweep or 2 * math.pi):
                pts.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    us, vs = [p[0] for p in pts], [p[1] for p in pts]
    return min(us), min(vs), max(us), max(vs)


def _frame(sketch):
    t = sketch["transform"]
    o, x, z = ([float(t[k][c]) for c in "xyz"] for k in ("origin", "x_axis", "z_axis"))
    y = [z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0]]
    return o, x, y, z


def _extent_range(feature) -> tuple[float, float]:
    """The extrusion's (start, end) along the sketch normal."""
    kind = feature["extent_type"].replace("FeatureExtentType", "")
    one = float(feature["extent_one"]["distance"]["value"])
    if kind == "Symmetric":
        return -one, one
    if kind == "TwoSides":
        return -float(feature["extent_two"]["distance"]["value"]), one
    return min(0.0, one), max(0.0, one)


def bounding_box(doc) -> tuple[list, list]:
    """``(min_point, max_point)`` of the bodies that NewBody and Join extrudes add (cuts in these
    families are inside the part, so they leave the box as it is), from the curves' extents."""
    corners = []
    for item in doc["sequence"]:
        feature = doc["entities"][item["entity"]]
        if item["type"] != "ExtrudeFeature" or not feature["operation"].startswith(("NewBody", "Join")):
            continue
        w0, w1 = _extent_range(feature)
        for ref in feature["profiles"]:
            sketch = doc["entities"][ref["sketch"]]
            o, x, y, z = _frame(sketch)
            for lp in sketch["profiles"][ref["profile"]]["loops"]:
                if not lp["is_outer"]:
                    continue
                for curve in lp["profile_curves"]:
                    u0, v0, u1, v1 = _curve_extent(curve)
                    for u in (u0, u1):
                        for v in (v0, v1):
                            for w in (w0, w1):
                                corners.append([o[i] + u * x[i] + v * y[i] + w * z[i] for i in range(3)])
    if not corners:
        return [0, 0, 0], [0, 0, 0]
    lo = [min(c[i] for c in corners) for i in range(3)]
    hi = [max(c[i] for c in corners) for i in range(3)]
    return [round(v) for v in lo], [round(v) for v in hi]


def _num(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4f}".rstrip("0")


def _pt(u, v) -> str:
    return f"({_num(u)},{_num(v)})"


def _loop_code(lp) -> str:
    """One closed wire: ``moveTo`` the first point, ``lineTo`` / ``threePointArc`` along the curves, ``close``;
    a circle is ``moveTo(centre).circle(r)``."""
    curves = lp["profile_curves"]
    if len(curves) == 1 and curves[0]["type"] == "Circle3D":
        return f".moveTo{_pt(*_xy(curves[0]['center_point']))}.circle({_num(curves[0]['radius'])})"
    code = f".moveTo{_pt(*_xy(curves[0]['start_point']))}"
    for curve in curves:
        if curve["type"] == "Line3D":
            code += f".lineTo{_pt(*_xy(curve['end_point']))}"
        elif curve["type"] == "Arc3D":
            code += f".threePointArc({_pt(*arc_midpoint(curve))},{_pt(*_xy(curve['end_point']))})"
        else:
            raise ValueError(f"a {curve['type']} inside a loop of several curves")
    return code + ".close()"


def _vec(values) -> str:
    return "(" + ",".join(_num(v) for v in values) + ")"


def to_cadquery(doc) -> str:
    """A CadQuery program for a DeepCAD-format sequence, with the solid bound to ``r``.

    Each extrude becomes ``cq.Workplane(cq.Plane(origin, xDir, normal))`` + its profiles' loops as
    closed wires + ``extrude`` (Symmetric: ``both=True``; TwoSides: the plane moved back by
    ``extent_two`` and extruded by the sum), then fused (NewBody, Join), cut or intersected with
    ``r``. Sketch items are skipped, as DeepCAD does (extrudes pull in their sketches). Raises
    ``ValueError`` for a malformed sequence (a missing entity, profile or field)."""
    lines = ["import cadquery as cq"]
    have_body = False
    try:
        for item in doc["sequence"]:
            if item["type"] != "ExtrudeFeature":
                continue
            i, feature = item["index"], doc["entities"][item["entity"]]
            operation = feature["operation"].replace("FeatureOperation", "")
            if operation not in OPERATIONS:
                raise ValueError(f"unknown operation {feature['operation']!r}")
            w0, w1 = _extent_range(feature)
            wires, sketch_ids = "", set()
            for ref in feature["profiles"]:
                sketch = doc["entities"][ref["sketch"]]
                sketch_ids.add(ref["sketch"])
                for lp in sketch["profiles"][ref["profile"]]["loops"]:
                    wires += _loop_code(lp)
            if len(sketch_ids) != 1:
                raise ValueError(f"extrude {item['entity']} uses profiles of {len(sketch_ids)} sketches")
            o, x, _, z = _frame(doc["entities"][sketch_ids.pop()])
            if w1 - w0 <= 0:
                raise ValueError(f"extrude {item['entity']} has zero depth")
            if feature["extent_type"].startswith("Symmetric"):
                origin, extrude = o, f".extrude({_num(w1)},both=True)"
            else:
                origin, extrude = [o[k] + w0 * z[k] for k in range(3)], f".extrude({_num(w1 - w0)})"
            lines.append(f"# {item['entity']}: {operation}, {feature['extent_type'].replace('FeatureExtentType', '')}")
            lines.append(f"b{i}=cq.Workplane(cq.Plane(origin={_vec(origin)},xDir={_vec(x)},normal={_vec(z)})){wires}{extrude}")
            if not have_body:
                if operation in ("Cut", "Intersect"):
                    continue                      # nothing to cut from yet
                lines.append(f"r=b{i}")
                have_body = True
            else:
                method = {"NewBody": "union", "Join": "union", "Cut": "cut", "Intersect": "intersect"}[operation]
                lines.append(f"r=r.{method}(b{i})")
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise ValueError(f"malformed sequence: {type(error).__name__}: {error}") from error
    return "\n".join(lines) + "\n"


def build_solid(doc, timeout: float = 10.0):
    """``(result, None)`` with the sandbox's ``ExecResult`` of ``to_cadquery(doc)``, or ``(None, reason)``
    when the sequence cannot be turned into a program. The program runs only in the sandbox."""
    try:
        code = to_cadquery(doc)
    except ValueError as error:
        return None, str(error)
    return run_cadquery(code, timeout=timeout), None


# --------------------------------------------------------------------------------------------
# Truncation, as the public script writes it
# --------------------------------------------------------------------------------------------
def kept_counts(n_ops: int, versions: int = 5) -> list[int]:
    """How many operations ``_tr_01 ..`` keep: round(1 + i (N-2)/(k-1)), k = min(N-1, versions), no repeats."""
    k = min(n_ops - 1, versions)
    if k < 1:
        return []
    counts = [1] if k == 1 else [max(1, round(1 + i * (n_ops - 2) / (k - 1))) for i in range(k)]
    return sorted(set(c for c in counts if c < n_ops))


def truncate(full: dict, kept: int) -> dict:
    """The first ``kept`` operations of ``full``, the entities they reference (an extrude pulls in its
    sketch), the properties unchanged, and ``truncation_metadata``."""
    n = len(full["sequence"])
    if not 1 <= kept <= n:
        raise ValueError(f"kept must be in 1..{n}, got {kept}")
    sequence = copy.deepcopy(full["sequence"][:kept])
    used = set()
    for item in sequence:
        used.add(item["entity"])
        for ref in full["entities"][item["entity"]].get("profiles", []) if item["type"] == "ExtrudeFeature" else []:
            used.add(ref["sketch"])
    return {"entities": {k: copy.deepcopy(v) for k, v in full["entities"].items() if k in used},
            "properties": copy.deepcopy(full["properties"]), "sequence": sequence,
            "truncation_metadata": {"is_truncated": True, "original_operations": n, "kept_operations": kept,
                                    "truncation_percentage": round(kept / n * 100, 2)}}


def truncations(full: dict, stem: str = "part") -> list[tuple[str, dict]]:
    """``[(f"{stem}_tr_01", doc), ...]``: the truncated files the public script writes for ``full``."""
    return [(f"{stem}_tr_{i + 1:02d}", truncate(full, k)) for i, k in enumerate(kept_counts(len(full["sequence"])))]


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
HEAD = '{"properties":'  # how every sequence text starts
SEPARATOR = " ,"     # between two operations
CLOSE = " ]}"        # after the last one


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _op_text(doc, item) -> str:
    entity = doc["entities"][item["entity"]]
    return _dumps({"index": item["index"], "type": item["type"], "entity": item["entity"],
                   **{k: v for k, v in entity.items() if k != "type"}})


def serialize(full: dict, kept: int | None = None) -> str:
    """The text of a sequence: ``{"properties":{...},"sequence":[op0 ,op1 ,op2 ]}``, compact JSON.

    Each sequence item carries its entity's fields (``{"index":3,"type":"ExtrudeFeature","entity":"E3",
    "profiles":...,"operation":...}``), so operations are written in order *with* their geometry.
    DeepCAD's own order (all ``entities`` first, then ``properties``, then the ``sequence`` of
    references) would put every sketch and extrude before the sequence list: the text after op k
    would be only references like ``{"index":4,"type":"Sketch","entity":"S4"}``.

    ``serialize(full, kept)`` is the text up to the end of operation ``kept`` (no closing brackets):
    a true prefix of ``serialize(full)``; what follows it is ``" ,"`` + the next operation, or
    ``" ]}"``, so the first token of a completion is the decision "another operation, or close". The
    space makes the cut a pre-tokenizer split for byte-level BPE tokenizers (GPT-2's regex, SmolLM2's,
    Qwen2's): ``}`` ends a run of punctuation there, so no token straddles the boundary.
    ``truncation_metadata`` is not part of the text; ``parse`` is the inverse.
    """
    n = len(full["sequence"]) if kept is None else kept
    head = HEAD + _dumps(full["properties"]) + ',"sequence":['
    body = SEPARATOR.join(_op_text(full, item) for item in full["sequence"][:n])
    return head + body + (CLOSE if kept is None else "")


def parse(text: str) -> dict:
    """The DeepCAD-format dict of a ``serialize``d text (``json.loads`` errors propagate)."""
    data = json.loads(text)
    entities, sequence = {}, []
    for op in data["sequence"]:
        fields = {k: v for k, v in op.items() if k not in ("index", "type", "entity")}
        entities[op["entity"]] = {"type": op["type"], **fields}
        sequence.append({"index": op["index"], "type": op["type"], "entity": op["entity"]})
    return {"entities": entities, "properties": data.get("properties", {}), "sequence": sequence}


def seed_text(doc: dict) -> str:
    """The training note's text of a sequence: ``json.dumps`` of the dict as it is (entities, properties,
    sequence), compact as the public collator writes it."""
    return _dumps(doc)
