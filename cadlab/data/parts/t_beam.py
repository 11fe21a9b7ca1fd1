# A T-beam: flange 60 x 8 mm, web 8 mm thick, 50 mm tall overall, 150 mm long.
import cadquery as cq

pts = [(-4, 0), (4, 0), (4, 42), (30, 42), (30, 50), (-30, 50), (-30, 42), (-4, 42)]
r = cq.Workplane("XZ").polyline(pts).close().extrude(150)
