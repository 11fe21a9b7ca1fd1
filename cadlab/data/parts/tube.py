# A length of tube: outside diameter 40 mm, wall 5 mm, 100 mm long.
import cadquery as cq

r = cq.Workplane("XY").circle(20).circle(15).extrude(100)
