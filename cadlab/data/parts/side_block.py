# A spacer block drawn on the YZ plane: a 30 x 50 mm profile, 100 mm long along X.
import cadquery as cq

r = cq.Workplane("YZ").rect(30, 50).extrude(100)
