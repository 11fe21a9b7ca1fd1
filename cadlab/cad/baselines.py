"""Two reconstructions that need no model, for a model's scores to be read against.

* **The bounding box.** The box spanning the input cloud, written as a one-line program of the
  mini model's kind (``bounding_box_program``). In the papers' frame (each solid scaled by its own
  bounding box) its IoU with the true part is the share of the part's bounding box the part fills:
  IoU = vol(part) / vol(box). A model that does not beat it has learned nothing about the shape
  beyond its proportions.
* **Retrieval.** The training program whose point cloud lies nearest to the input
  (``RetrievalLibrary.nearest``), by the Chamfer distance between the two 256-point clouds::

      CD(P, Q) = mean_p min_q ||p - q||^2 + mean_q min_p ||p - q||^2

  It writes nothing new: it can only return a part the model was trained on. A model that does not
  beat it has memorised its training set rather than learned to read a cloud.

Both return CadQuery programs, so they run in the same sandbox and are scored by the same
metrics as the model's programs (``cadlab.cad.reconstruct.score_program``).

The library file (``cadlab/data/retrieval_library.npz``) holds the training programs of
``cadlab.cad.synth`` that the mini CAD-Recode trained on (seeds counting up from 0), their codes and
the first ``LIBRARY_POINTS`` points of each 256-point training cloud. The clouds come from farthest-point
sampling, which picks points one at a time, so any prefix of a cloud is itself a farthest-point sample
of the surface: the same shape, coarser. Coordinates are stored as 8-bit integers: x in [-1, 1] is kept
as round((x + 1) * 127.5), an error of at most 1/255 of a unit, below the programs' grid step of 0.01.

The search (``RetrievalLibrary.nearest``) has two stages, so that one query over twenty thousand
programs takes a fraction of a second on a laptop: a coarse Chamfer distance between prefixes (the
input's first ``COARSE_QUERY`` points, each program's first ``COARSE_LIBRARY``) keeps a shortlist of
``SHORTLIST`` programs, and the exact distance (all the input's points against all of a program's
stored points) orders the shortlist. A test checks that the shortlist finds the program an exhaustive
search finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cadlab.cad.reconstruct import CODE_UNITS
from cadlab.paths import RETRIEVAL_LIBRARY as LIBRARY_PATH

LIBRARY_POINTS = 128      # points kept per training cloud in the library file (a prefix of its FPS order)
COARSE_QUERY, COARSE_LIBRARY, SHORTLIST = 64, 32, 256     # the first stage of the search


def bounding_box_program(points) -> str:
    """A CadQuery program of the axis-aligned box spanning ``points`` ((N, 3), the normalized frame),
    its faces on the nearest grid lines of the code units: one sketch on an XY workplane, extruded along z."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or not np.isfinite(points).all():
        raise ValueError(f"points must be a finite, non-empty (N, 3) array, got shape {points.shape}.")
    low = np.rint(points.min(axis=0) * CODE_UNITS).astype(int)
    high = np.rint(points.max(axis=0) * CODE_UNITS).astype(int)
    size = np.maximum(high - low, 1)
    centre = (low + high) / 2
    return ("import cadquery as cq\n"
            f"w0=cq.Workplane('XY',origin=(0,0,{low[2]}))\n"
            f"r=w0.sketch().push([({centre[0]:g},{centre[1]:g})]).rect({size[0]},{size[1]}).finalize()"
            f".extrude({size[2]})")


def cloud_chamfer_many(points, clouds, batch: int = 512) -> np.ndarray:
    """Chamfer distance (squared, both directions summed) between one cloud (N, 3) and each of
    ``clouds`` (M, K, 3): an (M,) array. Computed exactly, ``batch`` library clouds at a time."""
    query = torch.as_tensor(np.asarray(points, dtype=np.float32))
    out = []
    for start in range(0, len(clouds), batch):
        block = torch.as_tensor(np.asarray(clouds[start:start + batch], dtype=np.float32))
        squared = torch.cdist(query.expand(len(block), -1, -1), block) ** 2      # (b, N, K)
        out.append((squared.min(dim=2).values.mean(dim=1) + squared.min(dim=1).values.mean(dim=1)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class RetrievalLibrary:
    """Training programs and their clouds: ``seeds`` (M,), ``codes`` (M,) and ``clouds`` (M, K, 3) float32."""

    seeds: np.ndarray
    codes: np.ndarray
    clouds: np.ndarray

    def __len__(self) -> int:
        return len(self.seeds)

    def nearest(self, points, k: int = 1, shortlist: int | None = SHORTLIST) -> list[tuple[int, str, float]]:
        """The ``k`` training programs whose clouds are nearest to ``points`` (an (N, 3) cloud in farthest-point
        order): (seed, code, raw Chamfer), nearest first. With ``shortlist`` the exact distance is computed only
        for the ``shortlist`` programs nearest by the coarse distance (module docstring); ``None``: for all."""
        points = np.asarray(points, dtype=np.float32)
        candidates = np.arange(len(self))
        if shortlist is not None and shortlist < len(self):
            coarse = cloud_chamfer_many(points[:COARSE_QUERY], self.clouds[:, :COARSE_LIBRARY], batch=4096)
            candidates = np.sort(np.argpartition(coarse, shortlist)[:shortlist])
        distances = cloud_chamfer_many(points, self.clouds[candidates])
        order = np.argsort(distances, kind="stable")[:k]
        return [(int(self.seeds[candidates[i]]), str(self.codes[candidates[i]]), float(distances[i])) for i in order]

    def save(self, path=LIBRARY_PATH, n_points: int = LIBRARY_POINTS) -> None:
        """Write the library: the first ``n_points`` of each cloud, as 8-bit integers (see the module docstring)."""
        quantized = np.clip(np.rint((self.clouds[:, :n_points] + 1.0) * 127.5), 0, 255).astype(np.uint8)
        np.savez_compressed(path, seeds=self.seeds.astype(np.int64), codes=self.codes.astype(str), clouds=quantized)

    @classmethod
    def from_data(cls, data: dict, limit: int | None = None) -> "RetrievalLibrary":
        """From ``cadlab.cad.part_sets.train_data()``'s codes, seeds and points (the first ``limit``)."""
        n = len(data["seeds"]) if limit is None else min(limit, len(data["seeds"]))
        return cls(np.asarray(data["seeds"][:n]), np.asarray(data["codes"][:n]),
                   np.asarray(data["points"][:n], dtype=np.float32))


def load_library(path=LIBRARY_PATH) -> RetrievalLibrary:
    """The shipped library (``RetrievalLibrary.save``'s file), clouds back in [-1, 1] as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no retrieval library at {path}: build one with "
                                "`cadlab train-cadrecode --build-library` (it needs the training programs' cache).")
    with np.load(path, allow_pickle=False) as data:
        return RetrievalLibrary(data["seeds"], data["codes"], data["clouds"].astype(np.float32) / 127.5 - 1.0)
