"""The sets of parts the CAD models learn from and are tested on.

* Training parts: seeds 0, 1, 2, ... of ``cadlab.cad.synth``'s generator, built and cached in chunks of
  ``CHUNK`` seeds (chunk k holds seeds ``k * CHUNK .. (k + 1) * CHUNK - 1``).
* Held-out parts: seeds ``TEST_START .. TEST_START + TEST_SEEDS - 1``, far from every training chunk,
  so no held-out part is ever trained on.
* Workshop parts: programs written by hand in ``cadlab/data/parts`` (a plate with two holes, an
  L-bracket, a hex nut, ...), parts one finds in a workshop rather than draws from the generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cadlab.cad.cadrecode import N_POINTS
from cadlab.cad.synth import DEFAULT_CACHE, build_dataset, cache_path
from cadlab.paths import WORKSHOP_PARTS_DIR

CHUNK = 500                   # training seeds per cached chunk: chunk k = seeds k*CHUNK .. (k+1)*CHUNK-1
TEST_START, TEST_SEEDS = 10_000_000, 240    # held-out seeds: far from every training chunk
NOISE_STD, NOISE_P = 0.01, 0.5              # CAD-Recode's augmentation: Gaussian noise on half the training clouds


def held_out_set(progress: bool = True) -> dict:
    """The held-out shapes (seeds ``TEST_START ..``), built once and cached."""
    return build_dataset(TEST_SEEDS, start=TEST_START, progress=progress)


def cached_train_chunks(max_chunks: int = 10_000) -> list[int]:
    """Indices k of the training chunks already in the synth cache (consecutive from 0)."""
    chunks = []
    for k in range(max_chunks):
        if not cache_path(DEFAULT_CACHE, k * CHUNK, CHUNK, N_POINTS).exists():
            break
        chunks.append(k)
    return chunks


def train_data(min_chunks: int = 1, max_chunks: int = 10_000, progress: bool = True) -> dict:
    """Codes and clouds of every cached training chunk; builds chunks until there are ``min_chunks``."""
    k = len(cached_train_chunks(max_chunks))
    for j in range(k, min_chunks):
        build_dataset(CHUNK, start=j * CHUNK, progress=progress)
    chunks = [build_dataset(CHUNK, start=j * CHUNK, progress=False) for j in cached_train_chunks(max_chunks)]
    seeds = [s for c in chunks for s in c["seeds"]]
    assert min(seeds) >= 0 and max(seeds) < TEST_START, "training seeds must stay clear of the test seeds"
    return {"codes": [code for c in chunks for code in c["codes"]], "seeds": seeds,
            "points": np.concatenate([c["points"] for c in chunks])}


def workshop_parts(folder=None) -> dict:
    """The hand-written part programs in ``cadlab/data/parts`` (name -> code): parts one finds in a workshop,
    written by hand, not drawn from the generator."""
    folder = Path(folder) if folder else WORKSHOP_PARTS_DIR
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.py"))}
