# A U-channel: 80 mm wide, 40 mm tall, 6 mm walls, 120 mm long.
import cadquery as cq

outer = cq.Workplane("XY").box(80, 120, 40)
inner = cq.Workplane("XY").box(68, 120, 40).translate((0, 0, 6))
r = outer.cut(inner)
