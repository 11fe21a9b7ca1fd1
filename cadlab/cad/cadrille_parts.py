"""The parts the mini Cadrille learns from and is tested on, in its three modes.

Data (``part_dataset``, cached in ``$CADLAB_CACHE/cadrille-data`` in files of 2,400 seeds, so that
``--train-parts`` can grow without rebuilding; ``--build-workers 2`` builds missing files side by side):
for each training seed, the
normalized ``cadlab.cad.synth`` program, its solid from the sandbox, the 256-point cloud (as
``synth.build_dataset`` samples it), the four-view picture (``cadlab.cad.render.render_views``: 268 x 268)
and its descriptions at the four ``cadlab.cad.describe`` levels. Text rows also draw fresh programs that
never went through the sandbox (the describer reads programs, not solids), so the text mode sees a
new program on most steps. The held-out parts are the mini CAD-Recode's (seeds from
``part_sets.TEST_START`` = 10,000,000, far from the training seeds 0, 1, ...), with the same point
clouds, so the point-cloud results of the two models compare shape by shape.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cadlab.cad.describe import LEVELS, describe
from cadlab.cad.part_sets import NOISE_P, NOISE_STD, held_out_set
from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.render import render_views
from cadlab.cad.sandbox import run_cadquery
from cadlab.cad.synth import FAMILIES, GENERATOR_VERSION, generate_part, normalized_program
from cadlab.paths import cache_dir

DATA_DIR = cache_dir() / "cadrille-data"
DATA_VERSION = 1                      # bump when part_dataset's contents change (part of the file name)
FRESH_TEXT_START = 20_000_000         # seeds of the text-only programs: far from the parts and the held-out set
PART_CHUNK = 2400                     # training parts are cached in files of this many seeds
LEVEL_WEIGHTS = {"abstract": 1, "beginner": 1, "intermediate": 2, "expert": 6}


def measure_part_seconds(seeds=range(5)) -> dict:
    """Median seconds per part of each data stage (sandbox + normalize, point cloud, render), warm."""
    normalized_program(0)                                  # start the sandbox worker first
    times = {"sandbox": [], "points": [], "render": []}
    for seed in seeds:
        t0 = time.perf_counter()
        code, mesh, _ = normalized_program(seed)
        t1 = time.perf_counter()
        if mesh is None:
            continue
        mesh_to_point_cloud(mesh, seed=seed)
        t2 = time.perf_counter()
        render_views(mesh)
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt)
    return {key: round(float(np.median(v)), 3) for key, v in times.items()}


def describe_all(code: str, family: str, seed: int) -> list[str]:
    """The four levels' descriptions, the wording picked by the part's seed."""
    return [describe(code, family, level, seed) for level in LEVELS]


def build_parts(seeds, codes=None, points=None, progress: bool = True, desc: str = "cadrille parts",
                shading: str = "smooth") -> dict:
    """Programs -> sandbox -> points, picture (``render_views`` with ``shading``), descriptions, for ``seeds``
    (``codes``/``points``: already known)."""
    out = {"codes": [], "seeds": [], "families": [], "points": [], "images": [], "descriptions": [], "rejected": 0}
    for k, seed in enumerate(tqdm(list(seeds), desc=desc, disable=not progress)):
        if codes is None:
            code, mesh, _ = normalized_program(int(seed))
        else:
            code, mesh = codes[k], run_cadquery(codes[k]).mesh
        family = generate_part(int(seed))[0]
        try:
            descriptions = describe_all(code, family, int(seed)) if mesh is not None else None
        except ValueError:                       # a program the describer cannot read: not a training part
            descriptions = None
        if descriptions is None:
            out["rejected"] += 1
            continue
        out["codes"].append(code)
        out["seeds"].append(int(seed))
        out["families"].append(family)
        out["points"].append(points[k] if points is not None else mesh_to_point_cloud(mesh, seed=int(seed)))
        out["images"].append(np.asarray(render_views(mesh, shading=shading), dtype=np.uint8))
        out["descriptions"].append(descriptions)
    out["points"] = np.asarray(out["points"], dtype=np.float32).reshape(-1, 256, 3)
    out["images"] = np.asarray(out["images"], dtype=np.uint8).reshape(-1, 268, 268, 3)
    return out


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, codes=np.array(data["codes"], dtype=str), seeds=np.array(data["seeds"]),
                        families=np.array(data["families"], dtype=str), points=data["points"],
                        images=data["images"], descriptions=np.array(data["descriptions"], dtype=str).reshape(-1, 4),
                        rejected=np.array(data["rejected"]))
    partial.replace(path)


def _load(path: Path) -> dict:
    z = np.load(path, allow_pickle=False)
    return {"codes": z["codes"].tolist(), "seeds": z["seeds"].tolist(), "families": z["families"].tolist(),
            "points": z["points"], "images": z["images"], "descriptions": z["descriptions"].tolist(),
            "rejected": int(z["rejected"])}


def _shading_suffix(shading: str) -> str:
    return "" if shading == "smooth" else f"_{shading}"


def _chunk_path(cache_dir, start: int, n: int, shading: str = "smooth") -> Path:
    return Path(cache_dir) / f"train_{start}_{n}_s{GENERATOR_VERSION}_d{DATA_VERSION}{_shading_suffix(shading)}.npz"


def _build_chunk(start: int, n: int, cache_dir, progress: bool, shading: str = "smooth") -> str:
    path = _chunk_path(cache_dir, start, n, shading)
    if not path.exists():
        _save(path, build_parts(range(start, start + n), progress=progress, shading=shading,
                                desc=f"cadrille training parts {start:,}-{start + n - 1:,}"))
    return str(path)


def part_dataset(n: int, cache_dir=DATA_DIR, progress: bool = True, workers: int = 1, shading: str = "smooth") -> dict:
    """Training parts for seeds ``0 .. n-1`` (rejected seeds dropped), built once and cached in chunks of
    ``PART_CHUNK`` seeds, so a larger ``n`` builds only the chunks it lacks. ``workers`` > 1 builds the
    missing chunks in that many processes (each part is a sandbox run and a render: CPU-bound).
    ``shading``: how the pictures are rendered (``render.SHADINGS``; each has its own cache files)."""
    chunks = [(start, min(PART_CHUNK, n - start)) for start in range(0, n, PART_CHUNK)]
    missing = [c for c in chunks if not _chunk_path(cache_dir, *c, shading).exists()]
    if missing and workers > 1:
        print(f"building {sum(k for _, k in missing):,} parts in {len(missing)} chunks, {workers} processes")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_build_chunk, *zip(*missing), [cache_dir] * len(missing), [False] * len(missing),
                          [shading] * len(missing)))
    parts = [_load(Path(_build_chunk(start, k, cache_dir, progress, shading))) for start, k in chunks]
    if len(parts) == 1:
        return parts[0]
    return {"codes": sum((p["codes"] for p in parts), []), "seeds": sum((p["seeds"] for p in parts), []),
            "families": sum((p["families"] for p in parts), []),
            "points": np.concatenate([p["points"] for p in parts]),
            "images": np.concatenate([p["images"] for p in parts]),
            "descriptions": sum((p["descriptions"] for p in parts), []),
            "rejected": sum(p["rejected"] for p in parts)}


def held_out_parts(n: int, cache_dir=DATA_DIR, progress: bool = True, shading: str = "smooth") -> dict:
    """The first ``n`` held-out shapes of the mini CAD-Recode (same programs, same point clouds), rendered
    (with ``shading``) and described."""
    path = Path(cache_dir) / f"heldout_{n}_s{GENERATOR_VERSION}_d{DATA_VERSION}{_shading_suffix(shading)}.npz"
    if path.exists():
        return _load(path)
    test = held_out_set(progress=progress)
    n = min(n, len(test["codes"]))
    data = build_parts(test["seeds"][:n], codes=test["codes"][:n], points=test["points"][:n], progress=progress,
                       desc="cadrille held-out parts", shading=shading)
    _save(path, data)
    return data


def fresh_text_item(seed: int, rng: random.Random) -> dict:
    """A text row from a program that never ran: any family but the random unions (whose raw programs
    are not in the normalized frame until the sandbox has measured them)."""
    family = rng.choice([f for f in FAMILIES if f != "union"])
    name, code = generate_part(seed, family)
    return {"description": describe(code, name, _level(rng), seed), "answer": code}


def _level(rng: random.Random) -> str:
    return rng.choices(LEVELS, weights=[LEVEL_WEIGHTS[level] for level in LEVELS])[0]


def make_items(data: dict, index, mode: str, rng: random.Random, noise: bool = True) -> list[dict]:
    """Training items of ``mode`` for the parts ``index`` (each with its program as the answer)."""
    items = []
    for i in index:
        if mode == "pc":
            cloud = np.asarray(data["points"][i], dtype=np.float32)
            if noise and rng.random() < NOISE_P:
                cloud = cloud + np.asarray([rng.gauss(0, NOISE_STD) for _ in range(cloud.size)],
                                           dtype=np.float32).reshape(cloud.shape)
            items.append({"point_cloud": cloud, "answer": data["codes"][i]})
        elif mode == "img":
            items.append({"video": [Image.fromarray(np.asarray(data["images"][i]))], "answer": data["codes"][i]})
        else:
            level = LEVELS.index(_level(rng))
            items.append({"description": data["descriptions"][i][level], "answer": data["codes"][i]})
    return items
