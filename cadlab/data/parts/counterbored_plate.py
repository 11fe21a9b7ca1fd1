# A clamp plate, 100 x 100 x 15 mm, with four counterbored holes (9 mm through, 15 mm x 6 mm deep heads).
import cadquery as cq

r = (cq.Workplane("XY").box(100, 100, 15).faces(">Z").workplane()
     .rect(70, 70, forConstruction=True).vertices().cboreHole(9, 15, 6))
