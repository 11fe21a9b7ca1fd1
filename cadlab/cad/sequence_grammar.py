"""The grammar of a CAD sequence's text (``cadlab.cad.deepcad.serialize``): a JSON schema of one operation,
inside a Lark rule for the whole document, for llguidance (``cadlab.lm.guidance``).

The text is ``{"properties":{...},"sequence":[OP ,OP ,OP ]}``: compact JSON (``,`` and ``:`` with no
spaces) except the separators between operations (`` ,``) and the close (`` ]}``), which carry a space
so that the cut between two operations is a token boundary. A JSON schema alone cannot say that, so
the document is a Lark rule and each operation is ``%json{OPERATION_SCHEMA}``:

* a ``Sketch``: ``index``, ``type``, ``entity`` (``S<n>``), ``transform`` (``origin``, ``x_axis``,
  ``z_axis``, each ``{x, y, z}``) and ``profiles`` (``P<n>`` -> ``{"loops": [{"is_outer", "profile_curves"}]}``,
  curves ``Line3D`` / ``Arc3D`` / ``Circle3D`` with their points);
* an ``ExtrudeFeature``: ``index``, ``type``, ``entity`` (``E<n>``), ``profiles`` (``[{"profile", "sketch"}]``),
  ``operation`` and ``extent_type`` (DeepCAD's names), ``extent_one`` and, for two-sided extents,
  ``extent_two`` (``{"distance": {"value"}}``).

Every number is an integer, every object closed (``additionalProperties: false``) and its keys in
``serialize``'s order. The schema says what a sequence may look like, not that it makes a solid: a
profile may name a sketch that does not exist, an extrude may have depth 0.
"""

from __future__ import annotations

import json

COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _object(properties: dict, required=None) -> dict:
    return {"type": "object", "properties": properties, "required": list(required or properties),
            "additionalProperties": False}


INTEGER = {"type": "integer"}
XY = _object({"x": INTEGER, "y": INTEGER})
XYZ = _object({"x": INTEGER, "y": INTEGER, "z": INTEGER})
CURVES = [
    _object({"type": {"const": "Line3D"}, "start_point": XY, "end_point": XY}),
    _object({"type": {"const": "Arc3D"}, "start_point": XY, "end_point": XY, "center_point": XY, "normal": XYZ}),
    _object({"type": {"const": "Circle3D"}, "center_point": XY, "radius": INTEGER}),
]
LOOP = _object({"is_outer": {"type": "boolean"}, "profile_curves": {"type": "array", "items": {"anyOf": CURVES},
                                                                     "minItems": 1}})
PROFILE = _object({"loops": {"type": "array", "items": LOOP, "minItems": 1}})
SKETCH = _object({
    "index": INTEGER, "type": {"const": "Sketch"}, "entity": {"type": "string", "pattern": "^S[0-9]+$"},
    "transform": _object({"origin": XYZ, "x_axis": XYZ, "z_axis": XYZ}),
    "profiles": {"type": "object", "patternProperties": {"^P[0-9]+$": PROFILE}, "additionalProperties": False,
                 "minProperties": 1},
})
DISTANCE = _object({"distance": _object({"value": INTEGER})})
EXTRUDE = _object({
    "index": INTEGER, "type": {"const": "ExtrudeFeature"}, "entity": {"type": "string", "pattern": "^E[0-9]+$"},
    "profiles": {"type": "array", "minItems": 1, "items": _object({
        "profile": {"type": "string", "pattern": "^P[0-9]+$"}, "sketch": {"type": "string", "pattern": "^S[0-9]+$"}})},
    "operation": {"enum": ["NewBodyFeatureOperation", "JoinFeatureOperation", "CutFeatureOperation",
                           "IntersectFeatureOperation"]},
    "extent_type": {"enum": ["OneSideFeatureExtentType", "SymmetricFeatureExtentType", "TwoSidesFeatureExtentType"]},
    "extent_one": DISTANCE, "extent_two": DISTANCE,
}, required=["index", "type", "entity", "profiles", "operation", "extent_type", "extent_one"])
OPERATION_SCHEMA = {"anyOf": [SKETCH, EXTRUDE], "x-guidance": COMPACT}
PROPERTIES_SCHEMA = {**_object({"bounding_box": _object({"min_point": XYZ, "max_point": XYZ})}), "x-guidance": COMPACT}


def sequence_lark() -> str:
    """The whole document as llguidance Lark: the head, one or more operations, the close."""
    return "\n".join([
        'start: "{\\"properties\\":" properties ",\\"sequence\\":[" operation (" ," operation)* " ]}"',
        f"properties: %json {json.dumps(PROPERTIES_SCHEMA)}",
        f"operation: %json {json.dumps(OPERATION_SCHEMA)}",
    ])
