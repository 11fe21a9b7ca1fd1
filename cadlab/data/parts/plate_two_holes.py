# A mounting plate, 120 x 60 x 8 mm, with two 10 mm through holes 80 mm apart.
import cadquery as cq

r = cq.Workplane("XY").box(120, 60, 8).faces(">Z").workplane().pushPoints([(-40, 0), (40, 0)]).hole(10)
