"""One mesh in, CadQuery code and its solid out: CAD-Recode inference for a single part.

    cadlab reconstruct PART.stl [-o DIR] [--samples K] [--seed S] [--model PATH]
    python -m cadlab.reconstruct PART.stl ...            (the same command)

The road (``reconstruct``)::

    mesh --normalize_mesh, mesh_to_point_cloud--> P (256, 3), longest side in [-1, 1]
      --prepare_inputs, model.generate--> K programs      K = 1: greedy, as in the demo
                                                          K > 1: sampled, seeded (best of K)
      --run_cadquery (sandbox)--> K solids or errors
      --chamfer_distance(input mesh, solid)--> keep the solid with the smallest CD

The Chamfer distance (``cadlab.metrics``) compares each mesh in its own unit frame, so a
prediction is judged by its shape, not by where or how large the code drew it. The command
writes into DIR: ``{stem}.py`` (the kept program), ``{stem}_pred.stl`` (its solid, moved and
scaled by bounding box into the input's frame so it overlays PART.stl) and
``{stem}_preview.png`` (the input's 256 points next to the prediction). It prints the program
on stdout and everything else (what was written, CD, times) on stderr, so
``cadlab reconstruct part.stl > part.py`` keeps only the code.

Exit status: 0 a valid solid was written; 1 bad input (missing, unreadable or degenerate mesh,
unwritable DIR, unloadable model); 2 bad arguments; 3 the model wrote no program that gives a
valid solid (the .py and the preview are still written).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

MAX_SAMPLES = 64          # --samples above this is refused (each sample is a full generation)
DEFAULT_MAX_NEW_TOKENS = 768   # the CAD-Recode demo's; the mini model's programs end after ~40-210 tokens
SMALL_MODEL = 50_000_000       # below this many parameters the command decodes on one CPU thread


# --------------------------------------------------------------------------------------------
# The library function (the notebook calls it too)
# --------------------------------------------------------------------------------------------
@dataclass
class Reconstruction:
    """What ``reconstruct`` produced for one input mesh.

    ``points``: the (256, 3) input cloud (normalized frame). ``codes``, ``results`` (``ExecResult``)
    and ``chamfers`` (raw CD against the input, ``None`` for an invalid sample) have one entry
    per sample; ``best`` is the index of the valid sample (a closed solid, ``closed_solid``) with the
    smallest CD (``None`` if there is none). Times are wall-clock seconds for all samples together.
    """

    points: np.ndarray
    codes: list
    results: list
    chamfers: list
    best: int | None
    generate_seconds: float
    execute_seconds: float
    metric_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.best is not None

    @property
    def code(self) -> str:
        """The kept program (the first sample's if none is valid)."""
        return self.codes[0 if self.best is None else self.best]

    @property
    def mesh(self):
        """The kept solid as a trimesh in code units, or None."""
        return None if self.best is None else self.results[self.best].mesh

    @property
    def chamfer(self) -> float | None:
        """Raw Chamfer distance of the kept solid to the input (x ``metrics.CD_SCALE`` to report)."""
        return None if self.best is None else self.chamfers[self.best]


@torch.no_grad()
def generate_codes(model, tokenizer, points, samples: int = 1, seed: int = 0,
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 1.0) -> list[str]:
    """Programs for one or more clouds: ``samples`` per cloud, in order (cloud 0's first).

    ``points``: (N, 3) or (B, N, 3). ``samples == 1`` decodes greedily (the CAD-Recode demo);
    ``samples > 1`` samples from softmax(logits / ``temperature``) with no top-k/top-p cut, with
    torch's random generator seeded by ``seed`` inside ``torch.random.fork_rng`` -- the same
    programs for the same seed, and the caller's random state is left as it was.
    """
    from cadlab.cadrecode import POINT_TOKEN, extract_code, prepare_inputs

    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"samples must be a positive integer, got {samples!r}.")
    inputs = prepare_inputs(points, tokenizer)
    device = next(model.parameters()).device
    inputs = {key: value.to(device) for key, value in inputs.items()}
    settings = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.convert_tokens_to_ids(POINT_TOKEN),
                    num_return_sequences=samples)
    if samples == 1:
        settings.update(do_sample=False)
        tokens = model.generate(**inputs, **settings)
    else:
        settings.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokens = model.generate(**inputs, **settings)
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=False)
    return [extract_code(text) for text in texts]


def reconstruct(mesh, model, tokenizer, samples: int = 1, seed: int = 0, n_points: int = 256,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 1.0,
                timeout: float = 3.0) -> Reconstruction:
    """Point cloud of ``mesh`` -> ``samples`` programs -> sandboxed solids -> the best by Chamfer distance.

    The cloud is CAD-Recode's input (``mesh_to_point_cloud``: normalized, 8192 surface samples,
    farthest-point sampling, sampling seed 0). Every program runs in ``cadlab.cadexec``'s sandbox
    (``timeout`` seconds each); each closed solid (``closed_solid``) is scored with ``metrics.chamfer_distance``
    against ``mesh`` (both in their own unit frames), and the smallest wins.
    """
    from cadlab.cadexec import run_cadquery
    from cadlab.metrics import chamfer_distance
    from cadlab.pointcloud import mesh_to_point_cloud

    points = mesh_to_point_cloud(mesh, n_points=n_points, seed=0)
    start = time.perf_counter()
    codes = generate_codes(model, tokenizer, points, samples=samples, seed=seed, max_new_tokens=max_new_tokens,
                           temperature=temperature)
    generated = time.perf_counter()
    results = [run_cadquery(code, timeout=timeout) for code in codes]
    executed = time.perf_counter()
    chamfers = [None if closed_solid(r) is None else chamfer_distance(mesh, r.mesh) for r in results]
    valid = [i for i, cd in enumerate(chamfers) if cd is not None]
    best = min(valid, key=lambda i: chamfers[i]) if valid else None
    return Reconstruction(points, codes, results, chamfers, best, generated - start, executed - generated,
                          time.perf_counter() - executed)


def closed_solid(result):
    """The mesh of a sandbox ``ExecResult`` if the program ran and its solid is closed (watertight), else None.

    CadQuery can return a "solid" whose shell has gaps; it has no inside, so its IoU is undefined
    (``metrics.iou`` refuses it). Like ``cadlab.synth.validate``, the course counts such a result as
    invalid.
    """
    return result.mesh if result.ok and result.mesh.is_watertight else None


def why_invalid(result) -> str:
    """One line saying why ``closed_solid(result)`` is None."""
    if result.ok:
        return "the solid is not closed (its surface has open edges)"
    return f"{result.kind}: {result.message}"


def to_frame_of(mesh, reference):
    """A copy of ``mesh`` moved and scaled so its bounding box has ``reference``'s centre and longest side.

    p' = (p - c_mesh) * L_ref / L_mesh + c_ref, with c the bounding-box centre and L the longest
    side. The metrics compare shapes in exactly this way (each in its own unit frame), so this is
    how a prediction in code units is laid over the input it came from.
    """
    from cadlab.pointcloud import normalize_mesh

    moved = normalize_mesh(mesh)                       # centre 0, longest side 2
    moved.apply_scale(float(np.max(reference.extents)) / 2.0)
    moved.apply_translation(reference.bounds.mean(axis=0))
    return moved


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------
def draw_mesh(ax, mesh, title: str = "", color: str = "#8fb8de") -> None:
    """A trimesh on a matplotlib 3-D axis, equal aspect, no axes."""
    v = mesh.vertices
    ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=mesh.faces, color=color, edgecolor="#33333322",
                    linewidth=0.2, shade=True)
    ax.set_box_aspect(np.maximum(np.ptp(v, axis=0), 1e-3))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_points(ax, points, title: str = "") -> None:
    """A point cloud on a matplotlib 3-D axis, coloured by height."""
    points = np.asarray(points)
    ax.scatter(*points.T, s=5, c=points[:, 2], cmap="viridis")
    ax.set_box_aspect(np.maximum(np.ptp(points, axis=0), 1e-3))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_reconstruction(fig, points, prediction=None, truth=None, title: str = "prediction") -> None:
    """Side by side on ``fig``: the input points, the predicted solid, and (if given) the ground truth.

    Meshes are shown in the normalized frame (``normalize_mesh``), the frame of the points.
    """
    from cadlab.pointcloud import normalize_mesh

    panels = 2 + (truth is not None)
    draw_points(fig.add_subplot(1, panels, 1, projection="3d"), points, f"input: {len(points)} points")
    ax = fig.add_subplot(1, panels, 2, projection="3d")
    if prediction is None:
        ax.text2D(0.5, 0.5, "no valid solid", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    else:
        draw_mesh(ax, normalize_mesh(prediction), title, color="#f4b183")
    if truth is not None:
        draw_mesh(fig.add_subplot(1, panels, 3, projection="3d"), normalize_mesh(truth), "ground truth")


def save_preview(path, points, prediction=None, title: str = "prediction") -> None:
    """Write a PNG of ``draw_reconstruction`` (the Agg canvas: no display, no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    draw_reconstruction(fig, points, prediction, title=title)
    fig.tight_layout()
    fig.savefig(path)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
class UserError(Exception):
    """A problem with what the user passed; main() prints it and exits with status 1."""


def _samples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_SAMPLES}, got {text!r}") from None
    if not 1 <= value <= MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_SAMPLES}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadlab reconstruct",
        description="Reconstruct a CAD part as CadQuery code with CAD-Recode: the mesh's 256-point cloud goes "
                    "in, a program comes out; it runs in a sandbox and the solid is compared with the input. "
                    "The program is printed on stdout; DIR receives STEM.py, STEM_pred.stl (the solid laid over "
                    "the input by bounding box) and STEM_preview.png.",
        epilog="Exit status: 0 valid solid written, 1 bad input, 2 bad arguments, 3 no valid solid.")
    parser.add_argument("part", metavar="PART.stl", help="the mesh to reconstruct (.stl, .obj or .ply)")
    parser.add_argument("-o", "--output", metavar="DIR", default=".", help="output folder (default: current folder;"
                        " created if missing)")
    parser.add_argument("--samples", metavar="K", type=_samples, default=1,
                        help="1: greedy decoding (default); K > 1: K sampled programs, the one with the smallest "
                             "Chamfer distance to the input is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling with K > 1 (default 0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for K > 1 (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help=f"longest program in tokens (default {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a CAD-Recode checkpoint folder or hub id (default: the course's mini CAD-Recode, "
                             "shipped with cadlab); e.g. filapro/cad-recode-v1.5 if you have it")
    return parser


def _writable_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} exists and is not a folder; pass another -o DIR.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cadlab-write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write into output folder {folder} ({error.strerror or error}); "
                        "pass a folder you may write to with -o DIR.") from None
    return folder


def _load_model(name_or_path, err):
    """``load_cadrecode`` with its note and no progress bar on stderr (stdout carries only the program)."""
    import contextlib

    from transformers.utils import logging

    from cadlab.cadrecode import load_cadrecode

    logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(err):
            model, tokenizer = load_cadrecode(name_or_path)
    except (OSError, ValueError, ImportError, RuntimeError) as error:
        where = name_or_path or "the shipped mini CAD-Recode"
        raise UserError(f"could not load the model from {where}: {error}") from None
    return model.eval(), tokenizer


def run(args, out=None, err=None) -> int:
    """The command after argument parsing (stdout/stderr by default); raises ``UserError`` for bad input."""
    from cadlab.metrics import CD_SCALE
    from cadlab.pointcloud import load_mesh, normalize_mesh

    out, err = out or sys.stdout, err or sys.stderr
    part = Path(args.part)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    if not (args.temperature > 0 and np.isfinite(args.temperature)):
        raise UserError(f"--temperature must be a positive number, got {args.temperature}.")
    try:
        mesh = load_mesh(part)
        normalize_mesh(mesh)           # refuses a mesh whose bounding box has no size
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
    folder = _writable_folder(Path(args.output))
    paths = {kind: folder / f"{part.stem}{suffix}"
             for kind, suffix in (("py", ".py"), ("stl", "_pred.stl"), ("png", "_preview.png"))}
    model, tokenizer = _load_model(args.model, err)

    threads = torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)      # tiny matmuls: a second thread costs more in synchronisation than it gives
    try:
        result = reconstruct(mesh, model, tokenizer, samples=args.samples, seed=args.seed,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    finally:
        torch.set_num_threads(threads)
    print(result.code, file=out, end="" if result.code.endswith("\n") else "\n")
    paths["py"].write_text(result.code)
    for index, (sample, cd) in enumerate(zip(result.results, result.chamfers)):
        if args.samples > 1:
            score = f"CD x1000 = {cd * CD_SCALE:.3f}" if cd is not None else why_invalid(sample)[:120]
            print(f"sample {index}: {score}{'  <- kept' if index == result.best else ''}", file=err)
    timing = (f"generation {result.generate_seconds:.2f} s, execution {result.execute_seconds:.2f} s "
              f"for {args.samples} sample(s)")
    if result.ok:
        to_frame_of(result.mesh, mesh).export(paths["stl"])
        title = f"prediction: CD x1000 = {result.chamfer * CD_SCALE:.3f}"
    else:
        title = "prediction"
    save_preview(paths["png"], result.points, result.mesh, title=title)
    written = [paths["py"]] + ([paths["stl"]] if result.ok else []) + [paths["png"]]
    print(f"wrote {', '.join(str(p) for p in written)}", file=err)
    if not result.ok:
        print(f"cadlab reconstruct: no sample gave a valid solid (sample 0: {why_invalid(result.results[0])[:300]}); "
              f"try --samples 8. {timing}.", file=err)
        return 3
    print(f"Chamfer distance x1000 to the input: {result.chamfer * CD_SCALE:.3f}; {timing}.", file=err)
    return 0


def main(argv=None) -> int:
    """``cadlab reconstruct`` with ``argv`` (without the program name); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:        # argparse has printed the usage and the problem (or --help)
        return int(exit_.code or 0)
    try:
        return run(args)
    except UserError as error:
        print(f"cadlab reconstruct: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cadlab reconstruct: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
