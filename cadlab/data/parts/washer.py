# A thick washer: 60 mm across, 25 mm hole, 8 mm thick.
import cadquery as cq

r = cq.Workplane("XY").circle(30).circle(12.5).extrude(8)
