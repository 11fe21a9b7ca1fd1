"""The CAD half of the course (notebooks 06-09): the sandbox, point clouds, metrics, rendering, part
programs, descriptions, DeepCAD sequences, CAD-Recode, Cadrille, the reconstruction pipeline, autocomplete."""
