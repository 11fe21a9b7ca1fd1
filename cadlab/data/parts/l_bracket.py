# An angle bracket: legs 80 and 60 mm, 6 mm thick, 40 mm wide.
import cadquery as cq

profile = [(0, 0), (80, 0), (80, 6), (6, 6), (6, 60), (0, 60)]
r = cq.Workplane("XZ").polyline(profile).close().extrude(40)
