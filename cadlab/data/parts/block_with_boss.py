# A base block 80 x 80 x 20 mm with a round boss, 30 mm across and 15 mm tall, on top.
import cadquery as cq

base = cq.Workplane("XY").box(80, 80, 20, centered=(True, True, False))
r = base.faces(">Z").workplane().circle(15).extrude(15)
