"""Text descriptions of synthetic parts, at four levels of detail, as Text2CAD writes them for DeepCAD.

Text2CAD (Khan et al., NeurIPS 2024) gives every DeepCAD model four prompts, from what a layman
would say to what a CAD operator needs: *abstract* (what the part is), *beginner* (its shape in
plain words, rough size), *intermediate* (the features and their main sizes) and *expert* (every
step and every number, enough to rebuild it). Cadrille's text mode reads such prompts. The mini
Cadrille reads ours, written here from the program itself::

    program --parse_program--> Part(plane, origin, bodies: (offset, sketch items, depth))
            --describe(code, family, level, seed)--> text

* ``parse_program`` reads a canonical ``cadlab.cad.synth`` program (one workplane ``w0``; bodies of
  ``rect`` / ``circle`` / polygon / arc outlines with ``push``-ed holes, cut-outs and circles) or a
  union of boxes and cylinders, into plain data.
* the part's name comes from its family (``cadlab.cad.synth.FAMILIES``) and from what the sketch holds:
  the number of sides of a prism, the letter of a section (L, T, I, or a U/C channel, told apart by
  its corner count and by how many corners of its bounding box it touches), the pattern of its holes
  (one centred hole, a row, two rows, the four corners, a bolt circle).
* **expert** lists the steps in the program's order with every number of the program, in the
  program's order, and no other number (counts are words), so ``numbers(expert) ==
  synth.program_numbers(code)``: the text determines the program (tested for every family).
* the other levels drop detail: intermediate keeps the sizes of the features but not their places,
  beginner keeps the overall size (rounded to tens), abstract names the part and its features.

Each level has several wordings (synonyms, sentence orders, "200 by 120" or "200 x 120"): ``seed``
picks one, deterministically. Nothing here runs the program.
"""

from __future__ import annotations

import ast
import functools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from cadlab.cad.synth import FAMILIES, generate_part

LEVELS = ("abstract", "beginner", "intermediate", "expert")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen")
POLYGON_NAMES = {3: "triangular", 4: "four-sided", 5: "pentagonal", 6: "hexagonal", 7: "heptagonal", 8: "octagonal"}
PLANE_NORMALS = {"XY": "Z", "YZ": "X", "ZX": "Y"}


def words(n: int) -> str:
    """A count as a word (counts never add digits to a description)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else "many"


def numbers(text: str) -> list[int | float]:
    """Every numeric literal of ``text`` in order (the same rule as ``cadlab.cad.synth.program_numbers``)."""
    found = re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", text)
    return [int(float(n)) if float(n).is_integer() else float(n) for n in found]


# --------------------------------------------------------------------------------------------
# Parsing a canonical program
# --------------------------------------------------------------------------------------------
@dataclass
class Item:
    """One sketch element. kind: ``rect`` (w, h), ``circle`` (r), ``polygon`` (points), ``outline``
    (start, steps: ("line", p) / ("arc", mid, end)), each with ``points`` (push-ed centres, or None for the
    centre) and ``cut`` (mode='s')."""

    kind: str
    args: tuple
    points: list | None = None
    cut: bool = False


@dataclass
class Body:
    offset: int
    items: list
    depth: int


@dataclass
class Primitive:
    """A box (a, b, c) or a cylinder (height, radius) on its own workplane centred at ``origin``."""

    plane: str
    origin: tuple
    kind: str
    args: tuple


@dataclass
class Part:
    plane: str | None = None
    origin: tuple | None = None
    bodies: list = field(default_factory=list)
    primitives: list = field(default_factory=list)


_CALL = re.compile(r"\.(\w+)\(")


def _calls(chain: str):
    """``.name(args)`` calls of a method chain, in order, as (name, args text) with balanced parentheses."""
    out, i = [], 0
    while True:
        m = _CALL.search(chain, i)
        if not m:
            return out
        depth, j = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(chain[j], 0)
            j += 1
        out.append((m.group(1), chain[m.end():j - 1]))
        i = j


def _arguments(text: str):
    call = ast.parse(f"f({text})", mode="eval").body
    return [ast.literal_eval(a) for a in call.args], {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def _sketch_items(chain: str) -> list:
    items, pushed, loop = [], None, None
    for name, text in _calls(chain):
        args, kwargs = _arguments(text) if text else ([], {})
        if name == "push":
            pushed = [tuple(p) for p in args[0]]
        elif name in ("rect", "circle"):
            items.append(Item(name, tuple(args), pushed, kwargs.get("mode") == "s"))
            pushed = None
        elif name == "segment":
            if len(args) == 2:
                loop = {"start": tuple(args[0]), "steps": [("line", tuple(args[1]))]}
            else:
                loop["steps"].append(("line", tuple(args[0])))
        elif name == "arc":
            loop["steps"].append(("arc", tuple(args[0]), tuple(args[1])))
        elif name == "assemble" and loop is not None:
            if all(s[0] == "line" for s in loop["steps"]):
                items.append(Item("polygon", (loop["start"],) + tuple(s[1] for s in loop["steps"])))
            else:
                items.append(Item("outline", (loop["start"], tuple(loop["steps"]))))
            loop = None
    return items


def parse_program(code: str) -> Part:
    """A canonical ``cadlab.cad.synth`` program as plain data (see the module docstring)."""
    part = Part()
    for line in code.splitlines()[1:]:
        line = line.strip()
        if not line:
            continue
        m = re.match(r"w0=cq\.Workplane\('(\w+)',origin=\((-?\d+),(-?\d+),(-?\d+)\)\)$", line)
        if m:
            part.plane, part.origin = m.group(1), tuple(int(v) for v in m.groups()[1:])
            continue
        expr = re.sub(r"^r=(r\.union\()?", "", line)
        expr = expr[:-1] if line.startswith("r=r.union(") else expr
        m = re.match(r"cq\.Workplane\('(\w+)',origin=\((-?\d+),(-?\d+),(-?\d+)\)\)\.(box|cylinder)\((.*)\)$", expr)
        if m:
            part.primitives.append(Primitive(m.group(1), tuple(int(v) for v in m.groups()[1:4]), m.group(5),
                                             tuple(_arguments(m.group(6))[0])))
            continue
        m = re.match(r"w0(?:\.workplane\(offset=(-?\d+)\))?\.sketch\(\)(.*)\.finalize\(\)\.extrude\((-?\d+)\)$", expr)
        if not m:
            raise ValueError(f"parse_program: not a canonical synth line: {line!r}")
        part.bodies.append(Body(int(m.group(1) or 0), _sketch_items(m.group(2)), int(m.group(3))))
    if not part.bodies and not part.primitives:
        raise ValueError("parse_program: the program has no body.")
    return part


# --------------------------------------------------------------------------------------------
# What the part is (from the sketch, not from the generator's hidden choices)
# --------------------------------------------------------------------------------------------
def _outer(body: Body):
    return next((it for it in body.items if not it.cut and it.points is None), None)


def _extent(item: Item) -> tuple[int, int]:
    if item.kind == "rect":
        return item.args[0], item.args[1]
    if item.kind == "circle":
        return 2 * item.args[0], 2 * item.args[0]
    pts = list(item.args) if item.kind == "polygon" else [item.args[0]] + [s[-1] for s in item.args[1]] + \
        [s[1] for s in item.args[1] if s[0] == "arc"]
    us, vs = [p[0] for p in pts], [p[1] for p in pts]
    return max(us) - min(us), max(vs) - min(vs)


def section_letter(points) -> str:
    """L (6 corners), I (12), T (8, touching two corners of its bounding box) or U (8, four: a channel,
    which the generator also writes as a C -- the same shape turned a quarter)."""
    n = len(points)
    if n == 6:
        return "L"
    if n == 12:
        return "I"
    us, vs = [p[0] for p in points], [p[1] for p in points]
    corners = {(u, v) for u in (min(us), max(us)) for v in (min(vs), max(vs))}
    return "T" if len(corners & set(map(tuple, points))) == 2 else "U"


def hole_pattern(points) -> str:
    """'centre', 'row', 'two rows', 'corners', 'circle' or 'pattern' for hole centres."""
    pts = sorted(set(map(tuple, points)))
    if len(pts) == 1:
        return "centre" if pts[0] == (0, 0) else "single"
    us, vs = {p[0] for p in pts}, {p[1] for p in pts}
    if len(us) == 1 or len(vs) == 1:
        return "row"
    if len(pts) == 4 and len(us) == 2 and len(vs) == 2:
        return "corners"
    radii = [math.hypot(*p) for p in pts]
    if len(pts) >= 3 and max(radii) - min(radii) <= 2 and min(radii) > 0:
        return "circle"
    if len(us) == 2 or len(vs) == 2:
        return "two rows"
    return "pattern"


PATTERN_PHRASES = {
    "centre": "in the centre", "single": "off centre", "row": "in a row", "two rows": "in two rows",
    "corners": "near the corners", "circle": "on a circle", "pattern": "in a pattern",
}


def part_name(part: Part, family: str | None = None) -> str:
    """A short noun phrase: 'rectangular plate', 'hexagonal nut', 'T-section beam', ..."""
    if part.primitives:
        return "assembly of " + " and ".join(sorted({p.kind + "es" if p.kind == "box" else p.kind + "s"
                                                      for p in part.primitives}))
    first = part.bodies[0]
    outer = _outer(first)
    holes = [it for it in first.items if it.cut]
    if family == "prism" or (family is None and outer.kind == "polygon" and len(part.bodies) == 1
                             and len(outer.args) in (3, 5, 8)):
        sides = POLYGON_NAMES.get(len(outer.args), f"{words(len(outer.args))}-sided")
        return f"{sides} nut" if holes else f"{sides} prism"
    if family == "section":
        return f"{section_letter(outer.args)}-section beam"
    if family == "bracket":
        return "ribbed L-bracket"
    if family == "link":
        return "link with two round ends" if outer.kind == "outline" and \
            sum(s[0] == "arc" for s in outer.args[1]) == 2 else "D-shaped tab"
    if family == "tube":
        return "tube" if first.depth >= 2 * outer.args[0] else "ring"
    if family == "disc":
        return "flange" if any(it.points and len(it.points) > 1 for it in holes) else "disc"
    if family == "shaft":
        return f"stepped shaft with {words(len(part.bodies))} steps"
    if family == "boss":
        n = sum(len(b.items[0].points or [None]) for b in part.bodies[1:])
        base = "round plate" if outer.kind == "circle" else "plate"
        return f"{base} with {words(n)} boss{'es' if n > 1 else ''}"
    if family == "counterbore":
        return "counterbored plate"
    if family == "slotted":
        return "slotted plate"
    if outer.kind == "circle":
        return "disc"
    return "rectangular plate"


def overall_size(part: Part) -> tuple[int, int, int]:
    """(u extent, v extent, height along the normal) of a sketch part; the bounding box of a union."""
    if part.primitives:
        return 200, 200, 200
    boxes = []
    for body in part.bodies:
        for it in body.items:
            if it.cut:
                continue
            du, dv = _extent(it)
            lo_u, lo_v, hi_u, hi_v = -du / 2, -dv / 2, du / 2, dv / 2
            if it.kind == "polygon" or it.kind == "outline":
                pts = list(it.args) if it.kind == "polygon" else \
                    [it.args[0]] + [p for s in it.args[1] for p in s[1:]]
                lo_u, hi_u = min(p[0] for p in pts), max(p[0] for p in pts)
                lo_v, hi_v = min(p[1] for p in pts), max(p[1] for p in pts)
            for c in it.points or [(0, 0)]:
                boxes.append((c[0] + lo_u, c[1] + lo_v, c[0] + hi_u, c[1] + hi_v))
    u = max(b[2] for b in boxes) - min(b[0] for b in boxes)
    v = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    return int(u), int(v), max(b.offset + b.depth for b in part.bodies)


# --------------------------------------------------------------------------------------------
# Wording
# --------------------------------------------------------------------------------------------
def _pts(points) -> str:
    return ", ".join(f"({p[0]},{p[1]})" for p in points)


def _pair(rng, a, b) -> str:
    return rng.choice((f"{a} by {b}", f"{a} x {b}"))


def _feature_phrases(part: Part) -> list[str]:
    """The features of the part as phrases without numbers (abstract and beginner levels)."""
    out = []
    for k, body in enumerate(part.bodies):
        for it in body.items:
            if it.points is None and not it.cut:
                continue
            n = len(it.points or [None])
            where = PATTERN_PHRASES[hole_pattern(it.points or [(0, 0)])]
            if it.cut and it.kind == "circle":
                noun = "hole" if n == 1 else "holes"
                if k > 0 and part.bodies[0].items and any(o.cut for o in part.bodies[0].items):
                    noun = "counterbore" if n == 1 else "counterbores"
                out.append(f"{words(n)} round {noun} {where}")
            elif it.cut:
                out.append(f"{words(n)} rectangular cut-out{'s' if n > 1 else ''} {where}")
    seen, unique = set(), []
    for phrase in out:
        if phrase not in seen:
            seen.add(phrase)
            unique.append(phrase)
    return unique


def _describe_item(rng, it: Item) -> str:
    """One sketch element with all its numbers, in the program's order."""
    if it.kind == "rect":
        shape = f"a rectangle {_pair(rng, *it.args)}"
    elif it.kind == "circle":
        shape = f"a circle of radius {it.args[0]}"
    elif it.kind == "polygon":
        shape = (f"a closed polygon of {words(len(it.args))} corners through "
                 f"{_pts(it.args)}")
    else:
        start, steps = it.args
        parts = [f"start at ({start[0]},{start[1]})"]
        for s in steps:
            if s[0] == "line":
                parts.append(f"a line to ({s[1][0]},{s[1][1]})")
            else:
                parts.append(f"an arc through ({s[1][0]},{s[1][1]}) to ({s[2][0]},{s[2][1]})")
        shape = "an outline: " + ", ".join(parts)
    if it.points is not None:
        n = len(it.points)
        if it.kind == "rect":
            shape = f"{words(n)} rectangle{'s' if n > 1 else ''} centred at {_pts(it.points)}, each {_pair(rng, *it.args)}"
        else:
            shape = f"{words(n)} circle{'s' if n > 1 else ''} centred at {_pts(it.points)}, of radius {it.args[0]}"
    elif it.kind in ("rect", "circle"):
        shape += " centred on the origin"
    if it.cut:
        return rng.choice(("cut out ", "subtract ", "remove ")) + shape
    return rng.choice(("draw ", "sketch ", "add ")) + shape


def _expert(rng, part: Part, name: str) -> str:
    if part.primitives:
        lines = [f"Build an {name} from {words(len(part.primitives))} solids."]
        for k, p in enumerate(part.primitives):
            lead = "Start with" if k == 0 else rng.choice(("Union it with", "Join", "Add"))
            where = f"on a workplane parallel to {p.plane} centred at ({p.origin[0]},{p.origin[1]},{p.origin[2]})"
            if p.kind == "box":
                lines.append(f"{lead} a box {where}, {p.args[0]} by {p.args[1]} by {p.args[2]}.")
            else:
                lines.append(f"{lead} a cylinder {where}, of height {p.args[0]} and radius {p.args[1]}, "
                             f"its axis along the workplane's normal.")
        return " ".join(lines)
    article = "an" if name[0] in "aeiou" else "a"
    lines = [f"Model {article} {name}.",
             rng.choice((f"Set up a workplane on the {part.plane} plane with its origin at ",
                         f"Use the {part.plane} plane, origin at ")) +
             f"({part.origin[0]},{part.origin[1]},{part.origin[2]})."]
    for k, body in enumerate(part.bodies):
        ordinal = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth")[min(k, 5)]
        plane = "on the workplane" if body.offset == 0 else f"on a plane offset by {body.offset} along the normal"
        steps = [_describe_item(rng, it) for it in body.items]
        verb = rng.choice(("extrude it by ", "extrude it ", "extrude the sketch by "))
        join = "" if k == 0 else rng.choice((" and join it to the part", " and union it with the part"))
        lines.append(f"{ordinal} body, {plane}: " + "; ".join(steps) + f"; {verb}{body.depth}{join}.")
    return " ".join(lines)


def _intermediate(rng, part: Part, name: str) -> str:
    if part.primitives:
        pieces = [f"a box {p.args[0]} by {p.args[1]} by {p.args[2]}" if p.kind == "box"
                  else f"a cylinder {p.args[0]} long of radius {p.args[1]}" for p in part.primitives]
        return f"An {name}: " + ", unioned with ".join(pieces) + ", overlapping at a common centre."
    u, v, h = overall_size(part)
    sentences = [f"A {name}, {_pair(rng, u, v)} in plan and {h} tall along {PLANE_NORMALS[part.plane]}."]
    for k, body in enumerate(part.bodies):
        feats = []
        for it in body.items:
            n = len(it.points or [None])
            where = PATTERN_PHRASES[hole_pattern(it.points or [(0, 0)])]
            if it.kind == "circle" and it.points is not None:
                kind = ("hole" if it.cut else "circular boss") + ("" if n == 1 else ("s" if it.cut else "es"))
                feats.append(f"{words(n)} {kind} of radius {it.args[0]} {where}")
            elif it.kind == "rect" and it.points is not None:
                feats.append(f"{words(n)} rectangular cut-out{'s' if n > 1 else ''} {_pair(rng, *it.args)} {where}")
            elif it.kind == "circle":
                feats.append(f"a round outline of radius {it.args[0]}")
            elif it.kind == "rect":
                feats.append(f"a rectangular outline {_pair(rng, *it.args)}")
            elif it.kind == "polygon":
                feats.append(f"a profile of {words(len(it.args))} corners")
            else:
                feats.append("an outline with rounded ends")
        level = "at the base" if body.offset == 0 else f"starting {body.offset} up"
        sentences.append(f"Layer {words(k + 1)}, {level}, {body.depth} deep: " + ", ".join(feats) + ".")
    return " ".join(sentences)


def _round10(x: int) -> int:
    return max(10, int(round(x / 10.0)) * 10)


def _beginner(rng, part: Part, name: str) -> str:
    features = _feature_phrases(part)
    if part.primitives:
        return rng.choice((f"A simple {name}, stuck together through a shared centre, about 200 across.",
                           f"Some blocky pieces joined into one solid: an {name}, roughly 200 across."))
    u, v, h = (_round10(x) for x in overall_size(part))
    size = rng.choice((f"It is about {u} by {v} and {h} high.", f"Roughly {u} x {v} x {h} overall."))
    body = f"A {name}" + (" with " + " and ".join(features) if features else "") + "."
    return " ".join((body, size) if rng.random() < 0.5 else (body, size))


def _abstract(rng, part: Part, name: str) -> str:
    if part.primitives:
        return rng.choice((f"An {name}.", f"A blocky part: an {name}."))
    features = _feature_phrases(part)
    article = "An" if name[0] in "aeiou" else "A"
    if features and rng.random() < 0.5:
        count = sum(int(NUMBER_WORDS.index(f.split()[0])) for f in features if f.split()[0] in NUMBER_WORDS)
        holes = "an opening" if count == 1 else "some openings"
        return f"{article} {name} with {holes}."
    return rng.choice((f"{article} {name}.", f"A part shaped like a {name}." if article == "A"
                       else f"A part shaped like an {name}."))


_WRITERS = {"abstract": _abstract, "beginner": _beginner, "intermediate": _intermediate, "expert": _expert}


def describe(code: str, family: str | None = None, level: str = "expert", seed: int = 0) -> str:
    """A description of the program ``code`` at ``level`` (one of ``LEVELS``); ``seed`` picks the wording.

    ``family``: the part's ``cadlab.cad.synth`` family (names sections, brackets, links, ...); without it
    the name comes from the sketch alone.
    """
    if level not in _WRITERS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}.")
    part = parse_program(code)
    rng = random.Random(f"{seed}-{level}")
    return _WRITERS[level](rng, part, part_name(part, family))


def describe_levels(code: str, family: str | None = None, seed: int = 0) -> dict[str, str]:
    """level -> description, for all four ``LEVELS``."""
    return {level: describe(code, family, level, seed) for level in LEVELS}


def describe_part(seed: int, level: str = "expert", family: str | None = None, wording: int | None = None) -> str:
    """The description of ``cadlab.cad.synth.generate_part(seed, family)``'s program (``wording`` defaults to ``seed``)."""
    name, code = generate_part(seed, family)
    return describe(code, name, level, seed if wording is None else wording)


WORD_SEEDS_START = 20_000_000   # the programs the word list is read from: the text-only programs' seeds


@functools.lru_cache(maxsize=4)
def describer_words(programs: int = 600, min_count: int = 3) -> list[str]:
    """The describer's English words, as tokens the code BPE lacks.

    The mini CAD-Recode's BPE learned its merges from programs only, so it spells English nearly letter
    by letter (an expert description of 444 characters is ~350 tokens; its program is ~50). This list is
    every word of the descriptions of ``programs`` parts (seeds from ``WORD_SEEDS_START``, all families
    but the unions, all four levels), with its leading space (or as the first word of a description),
    seen at least ``min_count`` times and never a substring of any of those programs, so the code's own
    tokens are untouched. Most frequent first (ties alphabetical): a pure function of its arguments."""
    families = [f for f in FAMILIES if f != "union"]
    counts, codes = Counter(), []
    for k in range(programs):
        name, code = generate_part(WORD_SEEDS_START + k, families[k % len(families)])
        codes.append(code)
        for level in LEVELS:
            counts.update(re.findall(r"(?:^| )[A-Za-z]{2,}", describe(code, name, level, k)))
    corpus = "\n".join(codes)
    return [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_count and w not in corpus]
