# A stepped shaft: 40 mm across for 30 mm, then 30 mm for 50 mm, then 20 mm for 40 mm.
import cadquery as cq

r = (cq.Workplane("XY").circle(20).extrude(30)
     .faces(">Z").workplane().circle(15).extrude(50)
     .faces(">Z").workplane().circle(10).extrude(40))
