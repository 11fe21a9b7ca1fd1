# A connecting link: round ends of radius 20 mm, 80 mm between centres, 12 mm holes, 10 mm thick.
import cadquery as cq

body = cq.Workplane("XY").slot2D(120, 40).extrude(10)
r = body.faces(">Z").workplane().pushPoints([(-40, 0), (40, 0)]).hole(12)
