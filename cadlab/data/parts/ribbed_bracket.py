# A shelf bracket: an L of 100 x 80 mm legs, 8 mm thick, 50 mm wide, with a triangular rib 6 mm thick.
import cadquery as cq

angle = cq.Workplane("XZ").polyline([(0, 0), (100, 0), (100, 8), (8, 8), (8, 80), (0, 80)]).close().extrude(50)
rib = cq.Workplane("XZ").polyline([(8, 8), (70, 8), (8, 60)]).close().extrude(6).translate((0, -22, 0))
r = angle.union(rib)
