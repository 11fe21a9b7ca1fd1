"""One mesh in, CadQuery code and its solid out: the CAD-Recode reconstruction pipeline for a single part
(the ``cadlab reconstruct`` command in ``cadlab.cad.reconstruct_cli`` runs it).

The road (``reconstruct``), the one generate -> sandbox -> score path of the course::

    mesh --normalize_mesh, mesh_to_point_cloud--> P (256, 3), longest side in [-1, 1]
      --generate_codes--> K programs: the greedy one + K-1 sampled (seeded)
      --run_cadquery (sandbox)--> K solids or errors (closed_solid: the one validity rule)
      --cloud_chamfer(P, solid / 100)--> keep the program closest to the input cloud (best of K)
      --fit_numbers--> coordinate descent on its numbers, every try in the sandbox (the fit)

No ground truth is used: programs are judged against the input cloud only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from transformers import LogitsProcessorList

from cadlab.cad.cadrecode import POINT_TOKEN, extract_code, prepare_inputs
from cadlab.cad.generation import generate_sequences
from cadlab.cad.metrics import chamfer_distance_points
from cadlab.cad.pointcloud import mesh_to_point_cloud, normalize_mesh
from cadlab.cad.program_grammar import library_grammar
from cadlab.cad.sandbox import TESSELLATION, closed_solid, run_cadquery
from cadlab.cad.synth import NUMBER
from cadlab.lm.grammar import ConstrainedLogits

MAX_SAMPLES = 64          # --samples above this is refused (each sample is a full generation)
DEFAULT_SAMPLES = 8       # the pipeline's pool: the greedy program + 7 sampled ones
DEFAULT_TEMPERATURE = 0.8
DEFAULT_FIT_SECONDS = 5.0
DEFAULT_MAX_NEW_TOKENS = 768   # the CAD-Recode demo's; the mini model's programs end after ~40-250 tokens
SMALL_MODEL = 50_000_000       # below this many parameters the command decodes on one CPU thread
CODE_UNITS = 100.0             # code units per point-cloud unit (the normalized frame: longest side -100..100)


# --------------------------------------------------------------------------------------------
# Scoring a program against the input cloud (no ground truth needed)
# --------------------------------------------------------------------------------------------
def cloud_chamfer(solid, cloud, n_points: int = 8192, seed: int = 0) -> float:
    """Raw Chamfer distance between the input cloud and a solid written in code units.

    The solid is brought into the cloud's frame by the code's own scale (divided by ``CODE_UNITS``;
    not re-normalized), so a program is judged on where and how large it draws the part, as the
    canonical programs encode it. ``n_points`` area-uniform samples of the solid (fixed ``seed``:
    the same solid always scores the same) against the cloud's points, both directions, squared.
    Many samples on the solid's side keep the score smooth as a number changes by one unit (the
    fit below needs that); the cloud's 256 points set a floor the true solid reaches too.
    """
    samples, _ = trimesh.sample.sample_surface(solid, n_points, seed=np.random.default_rng(seed))
    return chamfer_distance_points(np.asarray(cloud, dtype=float), samples / CODE_UNITS)


@dataclass
class Candidate:
    """One program of the pool: where it came from, its sandbox result and its score against the input."""

    code: str
    source: str                 # "greedy", "sample 3", "fit"
    result: object              # cadexec.ExecResult
    score: float | None         # cloud_chamfer to the input cloud; None if invalid

    @property
    def mesh(self):
        return None if self.score is None else self.result.mesh


def score_program(code: str, cloud, source: str = "", timeout: float = 3.0, tolerance=None) -> Candidate:
    """Run ``code`` in the sandbox and score its solid against ``cloud`` (``None`` if it is not valid).
    ``tolerance``: the tessellation's, default CAD-Recode's (``cadexec.TESSELLATION``)."""
    result = run_cadquery(code, timeout=timeout, tolerance=tolerance or TESSELLATION)
    solid = closed_solid(result)
    score = None
    if solid is not None:
        try:
            score = cloud_chamfer(solid, cloud)
        except Exception:          # noqa: BLE001 - a solid trimesh cannot sample counts as invalid
            score = None
    return Candidate(code, source, result, score)




FIT_TESSELLATION = (0.5, 0.3)   # coarse triangles while fitting: each try runs several times faster


def fit_numbers(candidate: Candidate, cloud, seconds: float = DEFAULT_FIT_SECONDS, steps=(4, 2, 1),
                timeout: float = 3.0, max_evaluations: int | None = None):
    """Adjust a program's numeric literals to fit the input cloud: derivative-free coordinate descent.

    For each step size s in ``steps`` (code units), sweep the literals in order; for literal x_i try
    x_i + s, then x_i - s (every try runs in the sandbox, tessellated coarsely, and is scored by
    ``cloud_chamfer``) and keep a change as soon as the score drops; repeat the sweep at the same s
    while a change was kept, then go to the next s. Stops when ``seconds`` have passed. The
    program's structure (its operations, the order of its bodies) never changes, only its numbers.
    ``max_evaluations`` also stops it after that many tries: a budget that does not depend on the
    machine's speed, so the result is reproducible (notebook 07 uses it).

    Returns ``(Candidate, evaluations)``: the fitted program (source "fit", run again at full
    tessellation), or the input candidate if no change lowered its score.
    """
    if candidate.score is None:
        return candidate, 0
    deadline = time.perf_counter() + seconds
    budget = float("inf") if max_evaluations is None else max_evaluations

    def more() -> bool:
        return time.perf_counter() < deadline and evaluations < budget

    evaluations = 0
    start = score_program(candidate.code, cloud, "fit", timeout=timeout, tolerance=FIT_TESSELLATION)
    if start.score is None:
        return candidate, 1
    code, best, evaluations = candidate.code, start.score, 1
    head = code.index("\n") + 1 if "\n" in code else 0      # never touch the import line
    for step in steps:
        improved = True
        while improved and more():
            improved = False
            index = 0
            while more():
                spans = [m.span() for m in NUMBER.finditer(code, head)]
                if index >= len(spans):
                    break
                begin, end = spans[index]
                value = float(code[begin:end])
                for delta in (step, -step):
                    if not more():
                        break
                    new_value = value + delta
                    text = str(int(new_value)) if new_value.is_integer() else f"{new_value:g}"
                    trial = code[:begin] + text + code[end:]
                    scored = score_program(trial, cloud, "fit", timeout=timeout, tolerance=FIT_TESSELLATION)
                    evaluations += 1
                    if scored.score is not None and scored.score < best:
                        code, best, improved = trial, scored.score, True
                        break
                index += 1
    if code == candidate.code:
        return candidate, evaluations
    final = score_program(code, cloud, "fit", timeout=timeout)
    if final.score is None or final.score >= candidate.score:
        return candidate, evaluations
    return final, evaluations


@dataclass
class Reconstruction:
    """What ``reconstruct`` produced for one input.

    ``points``: the (256, 3) input cloud (normalized frame). ``candidates``: the pool, the greedy
    program first (``candidates[0]``), then the sampled ones. ``best``: index of the candidate with
    the smallest ``cloud_chamfer`` (None if none is valid). ``fitted``: the best candidate after
    ``fit_numbers`` (None when the fit is off or nothing was valid). ``final`` is what the pipeline
    returns: the fitted program if there is one, else the best of the pool.
    Times are wall-clock seconds.
    """

    points: np.ndarray
    candidates: list
    best: int | None
    fitted: Candidate | None = None
    generate_seconds: float = 0.0
    execute_seconds: float = 0.0
    fit_seconds: float = 0.0
    fit_evaluations: int = 0

    @property
    def greedy(self) -> Candidate:
        return self.candidates[0]

    @property
    def final(self) -> Candidate:
        if self.fitted is not None:
            return self.fitted
        return self.candidates[0 if self.best is None else self.best]

    @property
    def ok(self) -> bool:
        return self.best is not None

    @property
    def code(self) -> str:
        return self.final.code

    @property
    def mesh(self):
        """The returned solid as a trimesh in code units, or None."""
        return self.final.mesh

    @property
    def codes(self) -> list:
        return [c.code for c in self.candidates]

    @property
    def seconds(self) -> float:
        return self.generate_seconds + self.execute_seconds + self.fit_seconds


@torch.no_grad()
def generate_codes(model, tokenizer, points, samples: int = 1, seed: int = 0,
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE,
                   greedy_first: bool = True, grammar: str | None = None) -> list[str]:
    """Programs for one or more clouds, ``samples`` per cloud, in order (cloud 0's first): the course's
    one generation wrapper (the CLI, the trainer's evaluation and notebook 07 all call it).

    ``points``: (N, 3) or (B, N, 3). The first program of each cloud is greedy (as in the CAD-Recode
    demo) when ``greedy_first``; the other ``samples - 1`` are sampled from softmax(logits /
    ``temperature``) with no top-k/top-p cut, with torch's random generator seeded by ``seed`` inside
    ``torch.random.fork_rng``: the same programs for the same seed, and the caller's random state is
    left as it was.

    ``grammar`` (``"syntax"``, ``"grid"`` or ``"box"``, see ``cadlab.cad.program_grammar``): every
    program is decoded under that grammar (``"box"``: the one of its own cloud), so it cannot leave it.
    """
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"samples must be a positive integer, got {samples!r}.")
    inputs = prepare_inputs(points, tokenizer)
    settings = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.convert_tokens_to_ids(POINT_TOKEN))
    batch = inputs["input_ids"].shape[0]
    clouds = np.asarray(points, dtype=np.float32).reshape(batch, -1, 3)
    grammars = None if grammar is None else [library_grammar(grammar, tokenizer, cloud) for cloud in clouds]

    def constrained(per_row: int) -> dict:       # row r of the batch is cloud r // per_row
        if grammars is None:
            return {}
        return {"logits_processor": LogitsProcessorList([ConstrainedLogits(lambda r: grammars[r // per_row].matcher())])}

    per_cloud = [[] for _ in range(batch)]
    if greedy_first:
        tokens = generate_sequences(model, inputs, do_sample=False, **settings, **constrained(1))
        for row, text in enumerate(tokenizer.batch_decode(tokens, skip_special_tokens=False)):
            per_cloud[row].append(extract_code(text))
    n_sampled = samples - len(per_cloud[0])
    if n_sampled > 0:
        tokens = generate_sequences(model, inputs, samples=n_sampled, seed=seed, do_sample=True,
                                    temperature=temperature, top_k=0, top_p=1.0, **settings, **constrained(n_sampled))
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=False)
        for i, text in enumerate(texts):      # generate returns row b's samples consecutively
            per_cloud[i // n_sampled].append(extract_code(text))
    return [code for codes in per_cloud for code in codes]


def reconstruct(mesh, model, tokenizer, samples: int = DEFAULT_SAMPLES, fit: bool = True, seed: int = 0,
                n_points: int = 256, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                temperature: float = DEFAULT_TEMPERATURE, fit_seconds: float = DEFAULT_FIT_SECONDS,
                timeout: float = 3.0, points=None, fit_evaluations: int | None = None,
                grammar: str | None = None) -> Reconstruction:
    """The course's reconstruction pipeline: cloud -> a pool of programs -> the best -> fitted numbers.

    1. The cloud is CAD-Recode's input (``mesh_to_point_cloud``: normalized, 8192 surface samples,
       farthest-point sampling, sampling seed 0), or ``points`` if given (then ``mesh`` may be None).
    2. ``generate_codes``: the greedy program plus ``samples - 1`` sampled ones (``samples=1``: greedy only),
       under ``grammar`` if one is named.
    3. Each runs in ``cadlab.cad.sandbox``'s sandbox and is scored by ``cloud_chamfer`` against the
       input cloud -- no ground truth is needed; the smallest score wins (best of k, as CAD-Recode
       reports best of 10, with the greedy program in the pool).
    4. ``fit``: ``fit_numbers`` adjusts the winner's numbers to the cloud for ``fit_seconds`` (and at most
       ``fit_evaluations`` tries, if given).
    """
    if points is None:
        points = mesh_to_point_cloud(mesh, n_points=n_points, seed=0)
    points = np.asarray(points, dtype=np.float32)
    start = time.perf_counter()
    codes = generate_codes(model, tokenizer, points, samples=samples, seed=seed, max_new_tokens=max_new_tokens,
                           temperature=temperature, grammar=grammar)
    generated = time.perf_counter()
    sources = ["greedy"] + [f"sample {i}" for i in range(1, len(codes))]
    candidates = [score_program(code, points, source, timeout=timeout) for code, source in zip(codes, sources)]
    executed = time.perf_counter()
    valid = [i for i, c in enumerate(candidates) if c.score is not None]
    best = min(valid, key=lambda i: candidates[i].score) if valid else None
    rec = Reconstruction(points, candidates, best, generate_seconds=generated - start,
                         execute_seconds=executed - generated)
    if fit and best is not None:
        rec.fitted, rec.fit_evaluations = fit_numbers(candidates[best], points, seconds=fit_seconds, timeout=timeout,
                                                      max_evaluations=fit_evaluations)
        rec.fit_seconds = time.perf_counter() - executed
    return rec


def to_frame_of(mesh, reference):
    """A copy of ``mesh`` moved and scaled so its bounding box has ``reference``'s centre and longest side.

    p' = (p - c_mesh) * L_ref / L_mesh + c_ref, with c the bounding-box centre and L the longest
    side. The metrics compare shapes in exactly this way (each in its own unit frame), so this is
    how a prediction in code units is laid over the input it came from. The vertices are computed
    directly (trimesh's ``apply_translation`` would skip a shift under 1e-8, e.g. for an input in tiny units).
    """
    moved = normalize_mesh(mesh)                       # centre 0, longest side 2
    moved.vertices = moved.vertices * (float(np.max(reference.extents)) / 2.0) + reference.bounds.mean(axis=0)
    return moved
