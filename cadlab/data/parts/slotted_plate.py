# An adjustment plate, 150 x 60 x 6 mm, with a slot 70 mm end to end (60 mm between its round ends' centres), 10 mm wide.
import cadquery as cq

r = cq.Workplane("XY").box(150, 60, 6).faces(">Z").workplane().slot2D(70, 10).cutThruAll()
