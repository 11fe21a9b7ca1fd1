# A hexagon nut: 22 mm across the corners (19 mm across the flats), 10 mm thick, with a 12 mm bore.
import cadquery as cq

r = cq.Workplane("XY").polygon(6, 22).extrude(10).faces(">Z").workplane().hole(12)
