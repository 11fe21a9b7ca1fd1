"""Where cadlab keeps things: the shipped weights and data files inside the package, and the cache
folder where it builds what it makes once (a converted model, synthetic parts, training runs).

The cache folder is ``$CADLAB_CACHE`` when set, else ``~/.cache/cadlab``; it is read when
``cache_dir()`` is called, so a test or a notebook can point it elsewhere before it builds anything.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).parent
DATA = PACKAGE / "data"                                     # small files the notebooks read
WEIGHTS = PACKAGE / "weights"                               # the models the course ships
BABYGPT_DIR = WEIGHTS / "babygpt"
MINI_CADRECODE_DIR = WEIGHTS / "mini-cadrecode"
MINI_CADRILLE_DIR = WEIGHTS / "mini-cadrille"
AUTOCOMPLETE_LORA_DIR = WEIGHTS / "autocomplete-lora"
WORKSHOP_PARTS_DIR = DATA / "parts"                         # hand-written part programs (notebook 07, evaluation)
RETRIEVAL_LIBRARY = DATA / "retrieval_library.npz"          # training programs and their clouds (the retrieval baseline)


def cache_dir() -> Path:
    """The folder where cadlab keeps what it builds once: ``$CADLAB_CACHE``, else ``~/.cache/cadlab``."""
    return Path(os.environ.get("CADLAB_CACHE") or Path.home() / ".cache" / "cadlab").expanduser()
