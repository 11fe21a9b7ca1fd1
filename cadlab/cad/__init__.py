"""The CAD half of the course (notebooks 06-10): the sandbox, point clouds, metrics, rendering, part
programs, descriptions, DeepCAD sequences, CAD-Recode, Cadrille, the reconstruction pipeline, autocomplete,
and the grammars of the part language and of the sequence text."""
