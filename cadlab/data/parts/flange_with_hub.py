# A pipe flange: a 120 mm disc, 12 mm thick, a 50 mm hub 30 mm tall, a 25 mm bore and six 10 mm bolt holes.
import cadquery as cq

flange = cq.Workplane("XY").circle(60).extrude(12)
hub = flange.faces(">Z").workplane().circle(25).extrude(30)
bored = hub.faces(">Z").workplane().hole(25)
r = bored.faces("<Z").workplane().polarArray(45, 0, 360, 6).hole(10)
