"""The grammar of the course's CadQuery programs (``cadlab.cad.synth``'s part language), at three levels
of strictness, in ``cadlab.lm.grammar``'s building blocks.

A program is ``import cadquery as cq``, then either

* one workplane ``w0=cq.Workplane('XY'|'YZ'|'ZX',origin=(x,y,z))`` and bodies
  ``r=BODY`` / ``r=r.union(BODY)``, a body being ``w0`` or ``w0.workplane(offset=o)``, then
  ``.sketch()``, an outline (``rect(w,h)``, ``circle(r)``, or ``segment``s and ``arc``s ending in
  ``.close().assemble()`` or, after an arc back to the start, ``.assemble()``, or pushed shapes), any
  number of pushed shapes (``.push([(u,v),...])`` then ``.circle(r)`` or ``.rect(w,h)``, ``mode='s'``
  for a cut-out), and
  ``.finalize().extrude(d)``;
* or boxes and cylinders, each on its own workplane: ``r=cq.Workplane(P,origin=(x,y,z)).box(a,b,c)``
  or ``.cylinder(h,r)``, then ``r=r.union(...)`` of more.

Every line ends with a newline. What each number may be is the level:

* ``"syntax"``: any integer (``-?(0|[1-9][0-9]*)``, sizes without the sign): a program that parses as
  Python and uses only this vocabulary;
* ``"grid"``: the canonical frame's ranges (coordinates -100..100, sizes and depths 1..200, radii
  1..100, offsets 1..199);
* ``box_grammar(cloud)``: what the input cloud's bounding box allows. Per plane, in-plane coordinates
  lie inside the box's extent along that plane's axes (plus ``margin`` units), the workplane's origin is
  the centre of the box's lower face along the normal (rule 2 of ``cadlab.cad.synth``), depths and
  offsets fit in the box's height, sizes in its width.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cadlab.cad.synth import GRID, PLANES
from cadlab.lm.grammar import Alt, Chars, Repeat, Seq, integers, to_regex
from cadlab.lm.guidance import LibraryGrammar

LEVELS = ("syntax", "grid", "box")

HEADER = "import cadquery as cq\n"
DIGITS = "0123456789"


@dataclass(frozen=True)
class Numbers:
    """What each number of a program may be, for one plane: grammars of integers."""
    origin: tuple          # x, y, z of the workplane's origin
    u: object              # in-plane coordinates of sketch points
    v: object
    width: object          # rect sizes along u and v
    height: object
    radius: object
    depth: object          # extrude depth
    offset: object         # workplane offset along the normal
    primitive_origin: tuple    # x, y, z of a box's or cylinder's own workplane
    primitive_size: object     # box sides, cylinder height and radius


def any_integer(signed: bool = True):
    unsigned = Alt("0", Seq(Chars("123456789"), Repeat(Chars(DIGITS))))
    return Seq(Repeat("-", 0, 1), unsigned) if signed else unsigned


def syntax_numbers() -> Numbers:
    n, size = any_integer(), any_integer(signed=False)
    return Numbers((n, n, n), n, n, size, size, size, size, size, (n, n, n), size)


def grid_numbers() -> Numbers:
    coordinate, size = integers(-GRID, GRID), integers(1, 2 * GRID)
    return Numbers((coordinate,) * 3, coordinate, coordinate, size, size, integers(1, GRID), size,
                   integers(1, 2 * GRID - 1), (coordinate,) * 3, size)


def _point(numbers: Numbers):
    return Seq("(", numbers.u, ",", numbers.v, ")")


def _sketch(numbers: Numbers):
    point = _point(numbers)
    outline = Alt(
        Seq(".rect(", numbers.width, ",", numbers.height, ")"),
        Seq(".circle(", numbers.radius, ")"),
        Seq(".segment(", point, ",", point, ")",
            Repeat(Alt(Seq(".segment(", point, ")"), Seq(".arc(", point, ",", point, ")")), 1),
            Repeat(".close()", 0, 1), ".assemble()"),
    )
    cut = Repeat(",mode='s'", 0, 1)
    pushed = Seq(".push([", point, Repeat(Seq(",", point)), "])",
                 Alt(Seq(".circle(", numbers.radius, cut, ")"), Seq(".rect(", numbers.width, ",", numbers.height, cut, ")")))
    return Seq(".sketch()", Alt(outline, pushed), Repeat(pushed))


def _body(numbers: Numbers):
    start = Alt("w0", Seq("w0.workplane(offset=", numbers.offset, ")"))
    return Seq(start, _sketch(numbers), ".finalize().extrude(", numbers.depth, ")")


def _workplane_part(plane: str, numbers: Numbers):
    x, y, z = numbers.origin
    body = _body(numbers)
    return Seq(f"w0=cq.Workplane('{plane}',origin=(", x, ",", y, ",", z, "))\n",
               "r=", body, "\n", Repeat(Seq("r=r.union(", body, ")\n")))


def _primitive(numbers: Numbers):
    x, y, z = numbers.primitive_origin
    size = numbers.primitive_size
    plane = Alt(*(f"'{p}'" for p in PLANES))
    return Seq("cq.Workplane(", plane, ",origin=(", x, ",", y, ",", z, "))",
               Alt(Seq(".box(", size, ",", size, ",", size, ")"), Seq(".cylinder(", size, ",", size, ")")))


def _primitive_part(numbers: Numbers):
    primitive = _primitive(numbers)
    return Seq("r=", primitive, "\n", Repeat(Seq("r=r.union(", primitive, ")\n")))


def program_grammar(level: str = "syntax", numbers_by_plane: dict | None = None):
    """The grammar of a whole program. ``level`` is ``"syntax"`` or ``"grid"``; ``numbers_by_plane``
    (``{plane: Numbers}``, as ``box_grammar`` builds it) overrides it."""
    if numbers_by_plane is None:
        if level not in ("syntax", "grid"):
            raise ValueError(f"level must be 'syntax' or 'grid' (or use box_grammar(cloud)), got {level!r}.")
        numbers = syntax_numbers() if level == "syntax" else grid_numbers()
        numbers_by_plane = {plane: numbers for plane in PLANES}
    any_plane = next(iter(numbers_by_plane.values()))
    return Seq(HEADER, Alt(*(_workplane_part(plane, numbers_by_plane[plane]) for plane in PLANES),
                           _primitive_part(any_plane)))


# Plane -> the global axes (0 = x, 1 = y, 2 = z) of its u, v and normal (``cadlab.cad.synth.local_to_global``).
PLANE_AXES = {"XY": (0, 1, 2), "YZ": (1, 2, 0), "ZX": (2, 0, 1)}


def cloud_box(cloud) -> tuple[np.ndarray, np.ndarray]:
    """The cloud's bounding box in code units (100 x the normalized frame): lower and upper corners."""
    points = np.asarray(cloud, dtype=np.float64).reshape(-1, 3)
    return points.min(axis=0) * GRID, points.max(axis=0) * GRID


def box_grammar(cloud, margin: int = 3):
    """The program grammar whose numbers stay inside the input cloud's bounding box (``margin`` code
    units of slack on each side, for a cloud that misses the box's very edge)."""
    lo, hi = cloud_box(cloud)
    lo_i = np.maximum(np.floor(lo).astype(int) - margin, -GRID)
    hi_i = np.minimum(np.ceil(hi).astype(int) + margin, GRID)
    extent = hi_i - lo_i
    numbers_by_plane = {}
    for plane, (a_u, a_v, a_n) in PLANE_AXES.items():
        height = int(extent[a_n])
        width_u, width_v = int(extent[a_u]), int(extent[a_v])
        origin = [integers(0, 0)] * 3
        bottom = int(round(lo[a_n]))
        origin[a_n] = integers(max(bottom - margin, -GRID), min(bottom + margin, GRID))
        numbers_by_plane[plane] = Numbers(
            origin=tuple(origin),
            u=integers(int(lo_i[a_u]), int(hi_i[a_u])), v=integers(int(lo_i[a_v]), int(hi_i[a_v])),
            width=integers(1, width_u), height=integers(1, width_v),
            radius=integers(1, max(width_u, width_v) // 2 + margin),
            depth=integers(1, height), offset=integers(1, max(height - 1, 1)),
            primitive_origin=tuple(integers(int(lo_i[a]), int(hi_i[a])) for a in range(3)),
            primitive_size=integers(1, int(extent.max())),
        )
    return program_grammar(numbers_by_plane=numbers_by_plane)


@lru_cache(maxsize=8)
def _fixed_level(level: str, tokenizer, end_ids: tuple | None) -> LibraryGrammar:
    return LibraryGrammar(tokenizer, regex=to_regex(program_grammar(level)), end_ids=end_ids)


def library_grammar(level: str, tokenizer, cloud=None, end_ids=None) -> LibraryGrammar:
    """The program grammar at ``level`` (one of ``LEVELS``) compiled by llguidance for ``tokenizer``
    (ending with ``end_ids``, default its end token); ``"box"`` needs the input ``cloud``. The fixed
    levels are compiled once per tokenizer."""
    end_ids = None if end_ids is None else tuple(end_ids)
    if level == "box":
        if cloud is None:
            raise ValueError("the 'box' grammar is built from the input point cloud; this input has none "
                             "(use 'syntax' or 'grid').")
        return LibraryGrammar(tokenizer, regex=to_regex(box_grammar(cloud)), end_ids=end_ids)
    if level not in LEVELS:
        raise ValueError(f"grammar must be one of {', '.join(LEVELS)}, got {level!r}.")
    return _fixed_level(level, tokenizer, end_ids)
