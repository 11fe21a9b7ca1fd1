"""The ``cadlab reconstruct`` command: one mesh in, CadQuery code and its solid out.

    cadlab reconstruct PART.stl [-o DIR] [--samples K] [--no-fit] [--seed S] [--model PATH]
    cadlab reconstruct PART.stl --samples 1 --no-fit     (plain greedy decoding, as the demo)
    cadlab reconstruct [PART.stl] --model cadrille --mode pc|img|text [--text "..."]   (the mini Cadrille)

With CAD-Recode (the default) it runs ``cadlab.cad.reconstruct.reconstruct``: best of K programs
chosen by Chamfer distance to the input cloud, then the kept program's numbers fitted. It writes
into DIR: ``{stem}.py`` (the kept program), ``{stem}_pred.stl`` (its solid, moved and scaled by
bounding box into the input's frame so it overlays PART.stl) and ``{stem}_preview.png`` (the
input's 256 points next to the prediction). It prints the program on stdout and everything else
(what was written, CD, times) on stderr, so ``cadlab reconstruct part.stl > part.py`` keeps only
the code. With ``--model cadrille`` it decodes greedily from the point cloud, the four rendered
views or a description.

Exit status: 0 a valid solid was written; 1 bad input (missing, unreadable or degenerate mesh,
unwritable DIR, unloadable model); 2 bad arguments; 3 the model wrote no program that gives a
valid solid (the .py and the preview are still written).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

from cadlab.cad.cadrecode import load_cadrecode
from cadlab.cad.cadrille import generate_code, load_cadrille
from cadlab.cad.cadrille_processor import MODES, mode_item
from cadlab.cad.metrics import CD_SCALE, chamfer_distance, iou
from cadlab.cad.plots import save_preview
from cadlab.cad.pointcloud import load_mesh, normalize_mesh
from cadlab.cad.reconstruct import (
    DEFAULT_FIT_SECONDS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SAMPLES,
    DEFAULT_TEMPERATURE,
    MAX_SAMPLES,
    SMALL_MODEL,
    reconstruct,
    to_frame_of,
)
from cadlab.cad.sandbox import closed_solid, run_cadquery, why_invalid


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
    parser.add_argument("--samples", metavar="K", type=_samples, default=DEFAULT_SAMPLES,
                        help=f"programs in the pool: the greedy one plus K-1 sampled ones; the one closest to the "
                             f"input cloud (Chamfer distance) is kept (default {DEFAULT_SAMPLES}; 1 = greedy only)")
    parser.add_argument("--fit", action=argparse.BooleanOptionalAction, default=True,
                        help="adjust the kept program's numbers to fit the input cloud (default on; --no-fit: off)")
    parser.add_argument("--fit-seconds", type=float, default=DEFAULT_FIT_SECONDS,
                        help=f"time budget of the fit (default {DEFAULT_FIT_SECONDS:g} s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help=f"sampling temperature (default {DEFAULT_TEMPERATURE:g})")
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
    if not mesh.is_watertight:
        raise UserError(f"{part} is not a closed solid: its surface is open ({len(mesh.faces)} faces, edges "
                        "with a single face), so it has no inside to rebuild. Export the part as a closed solid "
                        "body (in your CAD tool: the solid, not a surface, sheet or single face), e.g. "
                        "STL of the body, then try again.")
    folder = _writable_folder(Path(args.output))
    paths = {kind: folder / f"{part.stem}{suffix}"
             for kind, suffix in (("py", ".py"), ("stl", "_pred.stl"), ("png", "_preview.png"))}
    model, tokenizer = _load_model(args.model, err)

    threads = torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)      # tiny matmuls: a second thread costs more in synchronisation than it gives
    try:
        result = reconstruct(mesh, model, tokenizer, samples=args.samples, fit=args.fit, seed=args.seed,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             fit_seconds=args.fit_seconds)
    finally:
        torch.set_num_threads(threads)
    print(result.code, file=out, end="" if result.code.endswith("\n") else "\n")
    paths["py"].write_text(result.code)
    for index, candidate in enumerate(result.candidates):
        if args.samples > 1:
            score = (f"CD x1000 to the input cloud = {candidate.score * CD_SCALE:.3f}" if candidate.score is not None
                     else why_invalid(candidate.result)[:120])
            print(f"{candidate.source}: {score}{'  <- best' if index == result.best else ''}", file=err)
    if result.fitted is not None:
        print(f"fit: {result.fit_evaluations} programs tried in {result.fit_seconds:.1f} s, CD x1000 to the input "
              f"cloud {result.candidates[result.best].score * CD_SCALE:.3f} -> {result.fitted.score * CD_SCALE:.3f}",
              file=err)
    timing = (f"generation {result.generate_seconds:.2f} s, execution {result.execute_seconds:.2f} s "
              f"for {args.samples} program(s), fit {result.fit_seconds:.2f} s")
    if result.ok:
        chamfer = chamfer_distance(mesh, result.mesh)
        to_frame_of(result.mesh, mesh).export(paths["stl"])
        title = f"prediction: CD x1000 = {chamfer * CD_SCALE:.3f}"
    else:
        title = "prediction"
    save_preview(paths["png"], result.points, result.mesh, title=title)
    written = [paths["py"]] + ([paths["stl"]] if result.ok else []) + [paths["png"]]
    print(f"wrote {', '.join(str(p) for p in written)}", file=err)
    if not result.ok:
        print(f"cadlab reconstruct: no program gave a valid solid (greedy: {why_invalid(result.greedy.result)[:300]}); "
              f"try --samples 16. {timing}.", file=err)
        return 3
    print(f"Chamfer distance x1000 to the input mesh (papers' frame): {chamfer * CD_SCALE:.3f}; {timing}.", file=err)
    return 0


def _cadrille_requested(argv) -> bool:
    """``--model cadrille`` (or ``--mode``/``--text``) selects the mini Cadrille's command."""
    return any(a in ("--mode", "--text") or a.startswith(("--mode=", "--text=", "--model=cadrille")) for a in argv) \
        or any(a == "--model" and b == "cadrille" for a, b in zip(argv, argv[1:]))


def main(argv=None) -> int:
    """``cadlab reconstruct`` with ``argv`` (without the program name); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if _cadrille_requested(argv):      # --model cadrille --mode pc|img|text
        return run_cadrille(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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



def run_cadrille(argv) -> int:
    """``cadlab reconstruct --model cadrille --mode pc|img|text [PART.stl] [--text "..."]``.

    pc and img read PART.stl (its 256-point cloud, or its four rendered views); text reads ``--text``.
    Greedy decoding, as Cadrille's test script. The program goes to stdout and to DIR/STEM.py (STEM is the
    part's name, or ``text``); the rest to stderr. Exit status: 0 a valid solid, 1 bad input (unreadable
    mesh, missing model), 2 bad arguments (``--mode text`` without ``--text``, ``--text`` with pc/img, a
    part with text, no part with pc/img), 3 the program gives no valid solid.
    """
    parser = argparse.ArgumentParser(
        prog="cadlab reconstruct --model cadrille",
        description="Reconstruct a CAD part as CadQuery code with the course's mini Cadrille, from the part's "
                    "point cloud (--mode pc), its four rendered views (--mode img) or a description (--mode text).",
        epilog="Exit status: 0 valid solid, 1 bad input, 2 bad arguments, 3 no valid solid.")
    parser.add_argument("part", metavar="PART.stl", nargs="?", help="the mesh (pc and img modes)")
    parser.add_argument("--model", required=True, help="'cadrille' (the shipped mini Cadrille) or a folder")
    parser.add_argument("--mode", required=True, choices=MODES, help="which input Cadrille reads")
    parser.add_argument("--text", default=None, help="the description (text mode only)")
    parser.add_argument("-o", "--output", metavar="DIR", default=".", help="output folder (default: .)")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    def usage_error(message: str) -> int:
        print(f"cadlab reconstruct: error: {message}", file=sys.stderr)
        return 2

    if args.mode == "text":
        if args.text is None or not args.text.strip():
            return usage_error('--mode text needs a description: --text "a plate 200 by 100, 10 thick, ..."')
        if args.part is not None:
            return usage_error(f"--mode text reads --text, not a part file ({args.part}); drop the file or use "
                               "--mode pc / --mode img.")
    else:
        if args.text is not None:
            return usage_error(f"--text is for --mode text only; --mode {args.mode} reads PART.stl.")
        if args.part is None:
            return usage_error(f"--mode {args.mode} needs a part: cadlab reconstruct PART.stl --model cadrille "
                               f"--mode {args.mode}")
    if args.max_new_tokens < 1:
        return usage_error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")

    mesh = None
    if args.part is not None:
        try:
            mesh = load_mesh(args.part)
            normalize_mesh(mesh)
        except (FileNotFoundError, ValueError) as error:
            print(f"cadlab reconstruct: error: {error}", file=sys.stderr)
            return 1
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model, processor = load_cadrille(None if args.model == "cadrille" else args.model)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"cadlab reconstruct: error: {error}", file=sys.stderr)
        return 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # a few-million-parameter model: one thread is fastest
    try:
        start = time.perf_counter()
        item = mode_item(args.mode, mesh=mesh, text=args.text)
        code = generate_code(model, processor, [item], max_new_tokens=args.max_new_tokens)[0]
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    stem = Path(args.part).stem if args.part else "text"
    (folder / f"{stem}.py").write_text(code)
    print(code, end="" if code.endswith("\n") else "\n")
    result = run_cadquery(code)
    solid = closed_solid(result)
    print(f"wrote {folder / f'{stem}.py'}; generation {seconds:.2f} s ({args.mode} mode)", file=sys.stderr)
    if solid is None:
        print(f"cadlab reconstruct: the program gives no valid solid: {why_invalid(result)[:300]}", file=sys.stderr)
        return 3
    if mesh is not None:
        print(f"IoU {iou(mesh, solid):.3f}, Chamfer x1000 {chamfer_distance(mesh, solid) * CD_SCALE:.3f} "
              "to the input mesh (papers' frame)", file=sys.stderr)
    solid.export(folder / f"{stem}_pred.stl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
