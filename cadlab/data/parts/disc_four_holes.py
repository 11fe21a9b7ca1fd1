# A cover disc, 100 mm across and 10 mm thick, with a 20 mm centre hole and four 10 mm holes on a 70 mm circle.
import cadquery as cq

r = (cq.Workplane("XY").circle(50).extrude(10)
     .faces(">Z").workplane().hole(20)
     .faces(">Z").workplane().polarArray(35, 0, 360, 4).hole(10))
