"""Where a predicted CadQuery program goes wrong, read off the code against the true one (no solids).

A program's *skeleton* is its text with every number replaced by ``#``: two programs with the same
skeleton are the same construction and differ only in their numbers, which then correspond one to
one and can be compared (``number_errors``, by kind: a position, a profile vertex or a size).
``program_errors`` summarizes a set of predictions: the right workplane, the right kind of part, the
right skeleton, and how far off the numbers are.
"""

from __future__ import annotations

import re

import numpy as np

from cadlab.cad.describe import parse_program, part_name
from cadlab.cad.synth import NUMBER


def number_kinds(code: str) -> list[tuple[str, float]]:
    """Each numeric literal of a program (after the import line) with its kind: ``position`` (a workplane
    origin or a ``push``ed point), ``vertex`` (a ``segment``/``arc`` point of a profile) or ``size``
    (everything else: rect/circle/box/cylinder sizes, extrusion depths, offsets)."""
    head = code.index("\n") + 1 if "\n" in code else 0
    out = []
    for match in NUMBER.finditer(code, head):
        before = code[:match.start()]
        call = before[before.rfind(".") + 1:] if "." in before else before
        if "origin=(" in before[before.rfind("Workplane("):] and ")" not in before[before.rfind("origin=("):]:
            kind = "position"
        elif call.startswith("push("):
            kind = "position"
        elif call.startswith(("segment(", "arc(")):
            kind = "vertex"
        else:
            kind = "size"
        out.append((kind, float(match.group())))
    return out


def skeleton(code: str) -> str:
    """A program with every number replaced by ``#``: two programs with the same skeleton differ only in numbers."""
    head = code.index("\n") + 1 if "\n" in code else 0
    return code[:head] + NUMBER.sub("#", code[head:])


def number_errors(predicted: str, truth: str) -> dict | None:
    """How many grid units each number of ``predicted`` is off from ``truth``'s, by kind (``number_kinds``):
    kind -> list of |predicted - true|. None when the two programs differ in more than their numbers
    (another structure: the numbers do not correspond)."""
    if skeleton(predicted) != skeleton(truth):
        return None
    errors: dict = {}
    for (kind, p), (_, t) in zip(number_kinds(predicted), number_kinds(truth)):
        errors.setdefault(kind, []).append(abs(p - t))
    return errors


def program_errors(rows: list[dict]) -> dict:
    """Where predicted programs go wrong, read off the code against the true program (no solids).

    ``rows``: dicts with the predicted ``code`` (None for no program) and the true ``truth_code``.
    Shares of the rows with the true workplane plane (``'XY'`` / ``'YZ'`` / ``'ZX'``), with the true kind
    of part (``describe.part_name`` of both programs, read without the family: plate, disc, prism, ...),
    and with the true skeleton (``skeleton``: the same construction, numbers aside); then, over
    the programs with the true skeleton, the share of numbers exactly right and the median |error| in grid
    units. A wrong skeleton makes the numbers incomparable: they are not counted."""
    def plane(code):
        found = re.search(r"Workplane\('(\w+)'", code or "")
        return found[1] if found else None

    def kind(code):
        try:
            return part_name(parse_program(code))
        except Exception:               # noqa: BLE001 - a program outside the grammar has no kind
            return None

    n = len(rows)
    same_plane = same_kind = same_skeleton = 0
    errors = []
    for row in rows:
        truth, code = row["truth_code"], row["code"] or ""
        same_plane += plane(code) == plane(truth)
        same_kind += kind(code) is not None and kind(code) == kind(truth)
        numbers = number_errors(code, truth)
        if numbers is not None:
            same_skeleton += 1
            errors += [e for values in numbers.values() for e in values]
    share = (lambda k: round(k / n, 3) if n else None)
    return {"parts": n, "plane_right": share(same_plane), "kind_right": share(same_kind),
            "skeleton_right": share(same_skeleton), "numbers_compared": len(errors),
            "numbers_exact": round(sum(e == 0 for e in errors) / len(errors), 3) if errors else None,
            "median_number_error": float(np.median(errors)) if errors else None}
