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
the code. With ``--model cadrille`` (or ``--model FOLDER`` of a saved Cadrille, with ``--mode``) it
decodes greedily from the point cloud, the four rendered views or a description.

Everything that can be checked is checked before the work, in this order, and refused with one line
on stderr: the flags (argparse types, and how they combine), the model folder (config.json and the
safetensors headers: the kind of checkpoint, undamaged weights, its context length against
``--max-new-tokens`` and ``--text``), the output folder and files (writable, nothing in the way), then
the mesh (``cadlab.cad.pointcloud.load_solid``: readable, repaired where that is safe, closed). Only
then is the model loaded; DIR is created when the results are written, so a refusal leaves nothing.

Exit status: 0 a valid solid was written; 1 bad input (missing, unreadable or not closed mesh,
missing, foreign or damaged model); 2 bad arguments (flags, unwritable output); 3 the model wrote no
program that gives a valid solid (the .py and the preview are still written).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from transformers.utils import logging

from cadlab import arguments
from cadlab.arguments import fail
from cadlab.cad import cadrecode, cadrille
from cadlab.cad.cadrille_processor import MODES, collate, mode_item
from cadlab.cad.metrics import CD_SCALE, chamfer_distance, iou
from cadlab.cad.plots import save_preview
from cadlab.cad.pointcloud import load_solid
from cadlab.cad.program_grammar import LEVELS
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
from cadlab.paths import MINI_CADRECODE_DIR

PROG = "cadlab reconstruct"
BAD_INPUT = 1                      # exit status for a mesh or a model that cannot be used (2: bad arguments)
LARGE_MESH_BYTES = 50_000_000      # about a million triangles of binary STL (50 bytes each): say it takes a while
N_SURFACE_SAMPLES = 8192           # what the models see of any mesh (mesh_to_point_cloud's n_pre_points)


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
        prog=PROG,
        description="Reconstruct a CAD part as CadQuery code with CAD-Recode: the mesh's 256-point cloud goes "
                    "in, a program comes out; it runs in a sandbox and the solid is compared with the input. "
                    "The program is printed on stdout; DIR receives STEM.py, STEM_pred.stl (the solid laid over "
                    "the input by bounding box) and STEM_preview.png.",
        epilog="Exit status: 0 valid solid written, 1 bad input (mesh or model), 2 bad arguments, 3 no valid solid.")
    parser.add_argument("part", metavar="PART.stl", help="the mesh to reconstruct (.stl, .obj or .ply), a closed "
                        "solid; zero-area triangles and duplicate vertices are repaired")
    parser.add_argument("-o", "--output", metavar="DIR", default=".", help="output folder (default: current folder;"
                        " created if missing)")
    parser.add_argument("--samples", metavar="K", type=_samples, default=DEFAULT_SAMPLES,
                        help=f"programs in the pool: the greedy one plus K-1 sampled ones; the one closest to the "
                             f"input cloud (Chamfer distance) is kept (default {DEFAULT_SAMPLES}; 1 = greedy only)")
    parser.add_argument("--fit", action=argparse.BooleanOptionalAction, default=True,
                        help="adjust the kept program's numbers to fit the input cloud (default on; --no-fit: off)")
    parser.add_argument("--fit-seconds", metavar="S", type=arguments.non_negative_float, default=DEFAULT_FIT_SECONDS,
                        help=f"time budget of the fit (default {DEFAULT_FIT_SECONDS:g} s)")
    parser.add_argument("--seed", type=arguments.seed, default=0,
                        help=f"seed of the sampling, 0 to {arguments.MAX_SEED} (default 0)")
    parser.add_argument("--temperature", metavar="T", type=arguments.temperature, default=DEFAULT_TEMPERATURE,
                        help=f"temperature of the sampled programs, at least {arguments.MIN_TEMPERATURE:g} "
                             f"(default {DEFAULT_TEMPERATURE:g}; 0 = greedy, only with --samples 1)")
    parser.add_argument("--max-new-tokens", metavar="N", type=arguments.positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                        help=f"longest program in tokens, at most the model's context (default "
                             f"{DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a CAD-Recode checkpoint folder or hub id (default: the course's mini CAD-Recode, "
                             "shipped with cadlab); e.g. filapro/cad-recode-v1.5 if you have it")
    parser.add_argument("--grammar", choices=LEVELS, default=None,
                        help="decode under a grammar of the course's part language (notebook 10): 'syntax' (any "
                             "integers), 'grid' (numbers in the -100..100 frame) or 'box' (numbers inside the "
                             "input cloud's bounding box); default: none. Only for models that write that "
                             "language (the mini CAD-Recode), not the real checkpoint")
    return parser


# --------------------------------------------------------------------------------------------
# Checks before the work (each fails with one line)
# --------------------------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    """An exception's message with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(error).split())


WHAT_RUNS_IT = {
    "CAD-Recode": "drop --mode (and --text) to run it: CAD-Recode reads a part's point cloud",
    "Cadrille": "add --mode pc, --mode img or --mode text to run it (Cadrille reads a point cloud, rendered views "
                "or a description)",
}


def check_checkpoint(model: str | None, wanted: str):
    """The checkpoint ``--model`` names, read without loading it (``cadrecode.inspect_checkpoint``), or ``fail``.

    ``model``: None for the shipped mini model of ``wanted`` ("CAD-Recode" or "Cadrille"), a folder, or
    (CAD-Recode only) a hub id, which must be in the local Hugging Face cache: there is no network. A
    checkpoint of the other kind is refused naming the flags that run it; a damaged one naming the file.
    """
    shipped = cadrecode.MINI_MODEL_DIR if wanted == "CAD-Recode" else cadrille.MINI_CADRILLE_DIR
    named = "the shipped mini " + wanted if model is None else model
    folder = shipped if model is None else Path(model).expanduser()
    hub_id = wanted == "CAD-Recode" and model is not None and not folder.exists() \
        and model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if hub_id:
        try:
            config = try_to_load_from_cache(model, "config.json")
        except ValueError:               # huggingface_hub's HFValidationError: not a hub id's spelling
            config = None
        if not isinstance(config, str):
            fail(PROG, f"could not load the model from {model}: it is not a folder, and not a hub id in your "
                       "Hugging Face cache (there is no network here); give a CAD-Recode checkpoint folder, or "
                       "nothing for the shipped mini CAD-Recode", BAD_INPUT)
        folder = Path(config).parent
    elif not folder.is_dir():
        fail(PROG, f"could not load the model from {named}: it is not a folder; give a saved {wanted} checkpoint "
                   f"folder{' or a hub id in your Hugging Face cache' if wanted == 'CAD-Recode' else ''}",
             BAD_INPUT)
    try:
        checkpoint = cadrecode.inspect_checkpoint(folder)
    except (FileNotFoundError, ValueError) as error:
        fail(PROG, f"could not load the model from {named}: {one_line(error)}", BAD_INPUT)
    if checkpoint.kind != wanted:
        use = WHAT_RUNS_IT.get(checkpoint.kind, f"give a {wanted} checkpoint folder, or leave --model out for the "
                                                f"shipped mini {wanted}")
        fail(PROG, f"--model {model} holds {checkpoint.what}, not a {wanted} checkpoint: {use}", BAD_INPUT)
    return checkpoint


def check_max_new_tokens(max_new_tokens: int, checkpoint) -> None:
    """A program cannot be longer than the model's context (prompt and program together)."""
    if checkpoint.context is not None and max_new_tokens > checkpoint.context:
        fail(PROG, f"--max-new-tokens {max_new_tokens} is more than the model's context of {checkpoint.context} "
                   f"tokens (prompt and program together); give at most {checkpoint.context}")


def check_grammar(grammar: str | None, model: str | None) -> None:
    """``--grammar`` describes the course's part language (``cadlab.cad.synth``); the released
    CAD-Recode writes a wider one (several workplanes, other operations), which the grammar would cut."""
    if grammar is not None and model is not None and Path(model).resolve() != MINI_CADRECODE_DIR.resolve():
        fail(PROG, f"--grammar {grammar} describes the course's part language, which only the mini CAD-Recode "
                   f"writes; {model} may write programs outside it. Drop --grammar for this model.")


def check_outputs(folder, names) -> dict:
    """``{name: folder / name}`` once ``folder`` (-o) and each file in it are known writable; nothing is created.

    The folder may be missing (it is created when the results are written, so a refusal after this leaves
    nothing behind); where it exists, no output file may be a folder or read-only.
    """
    folder = arguments.writable_folder(folder, PROG, "-o", create=False)
    paths = {name: folder / name for name in names}
    if folder.is_dir():
        for path in paths.values():
            arguments.writable_file(path, PROG)
    return paths


def load_part(part, err):
    """``load_solid(part)`` (the one input check: readable, repaired where safe, a closed solid), or ``fail``.

    A file of more than ``LARGE_MESH_BYTES`` gets a note first: reading and checking it takes seconds per
    million triangles, while the models see only 8,192 surface samples. Repairs are reported on ``err``.
    """
    path = Path(part)
    if path.is_file() and path.stat().st_size > LARGE_MESH_BYTES:
        print(f"{PROG}: note: {part} is {path.stat().st_size / 1e6:.0f} MB; reading and checking a mesh this large "
              f"takes a few seconds per million triangles, and the model sees only {N_SURFACE_SAMPLES:,} surface "
              "samples of it, so a coarser export gives it the same input.", file=err, flush=True)
    try:
        mesh = load_solid(path)
    except (FileNotFoundError, ValueError) as error:
        fail(PROG, one_line(error), BAD_INPUT)
    if mesh.metadata.get("repairs"):
        print(f"{PROG}: repaired {part}: {', '.join(mesh.metadata['repairs'])} (after merging duplicate "
              "vertices); the rest is a closed solid.", file=err)
    return mesh


def _load_model(name_or_path, err):
    """``load_cadrecode`` with its note and no progress bar on stderr (stdout carries only the program)."""
    logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(err):
            model, tokenizer = cadrecode.load_cadrecode(name_or_path)
    except (OSError, ValueError, RuntimeError) as error:
        fail(PROG, f"could not load the model from {name_or_path or 'the shipped mini CAD-Recode'}: "
                   f"{one_line(error)}", BAD_INPUT)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------
# CAD-Recode
# --------------------------------------------------------------------------------------------
def run(args, out=None, err=None) -> int:
    """The command after argument parsing (stdout/stderr by default); ``fail`` (SystemExit) for bad input."""
    out, err = out or sys.stdout, err or sys.stderr
    part = Path(args.part)
    if args.temperature == 0 and args.samples > 1:
        fail(PROG, f"--temperature 0 is greedy decoding, and the pool's first program is already the greedy one: "
                   f"give the {args.samples - 1} sampled programs a temperature of at least "
                   f"{arguments.MIN_TEMPERATURE:g}, or use --samples 1 for greedy only")
    check_grammar(args.grammar, args.model)
    check_max_new_tokens(args.max_new_tokens, check_checkpoint(args.model, "CAD-Recode"))
    paths = check_outputs(args.output, [f"{part.stem}{suffix}" for suffix in (".py", "_pred.stl", "_preview.png")])
    py, stl, png = paths.values()
    mesh = load_part(part, err)
    model, tokenizer = _load_model(args.model, err)

    threads = torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)      # tiny matmuls: a second thread costs more in synchronisation than it gives
    try:
        result = reconstruct(mesh, model, tokenizer, samples=args.samples, fit=args.fit, seed=args.seed,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             fit_seconds=args.fit_seconds, grammar=args.grammar)
    finally:
        torch.set_num_threads(threads)
    print(result.code, file=out, end="" if result.code.endswith("\n") else "\n")
    py.parent.mkdir(parents=True, exist_ok=True)
    py.write_text(result.code)
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
        to_frame_of(result.mesh, mesh).export(stl)
        title = f"prediction: CD x1000 = {chamfer * CD_SCALE:.3f}"
    else:
        title = "prediction"
    save_preview(png, result.points, result.mesh, title=title)
    written = [py] + ([stl] if result.ok else []) + [png]
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
    try:
        if _cadrille_requested(argv):      # --model cadrille --mode pc|img|text
            return run_cadrille(argv)
        return run(build_parser().parse_args(argv))
    except SystemExit as exit_:            # argparse or fail() has printed the problem (or --help)
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except KeyboardInterrupt:
        print("cadlab reconstruct: interrupted.", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------
# Cadrille
# --------------------------------------------------------------------------------------------
def check_text(text: str, processor, checkpoint) -> None:
    """``--text`` must fit the model's context: its chat prompt, measured with the folder's tokenizer only.

    An over-long description is refused before the model loads: past its context the model reads
    positions it never saw in training and writes nothing usable, slowly (attention grows with the square
    of the prompt). Text the prompt builder refuses (e.g. a literal ``<|video_pad|>``) is refused here too.
    """
    try:
        prompt = collate([mode_item("text", text=text)], processor)["input_ids"].shape[1]
    except ValueError as error:
        fail(PROG, f"--text cannot be used as a description: {one_line(error)}")
    context = checkpoint.context
    if context is not None and prompt >= context:
        words = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        limit = context - 1 - (prompt - words)
        fail(PROG, f"--text is too long: {words:,} tokens ({len(text):,} characters), but the model reads at most "
                   f"{context} tokens, prompt and program together, so a description may take at most {limit} "
                   "tokens; shorten it")


def run_cadrille(argv) -> int:
    """``cadlab reconstruct --model cadrille --mode pc|img|text [PART.stl] [--text "..."]``.

    pc and img read PART.stl (its 256-point cloud, or its four rendered views); text reads ``--text``.
    Greedy decoding, as Cadrille's test script. The program goes to stdout and to DIR/STEM.py (STEM is the
    part's name, or ``text``); the rest to stderr. Exit status: 0 a valid solid, 1 bad input (unreadable
    or open mesh, missing, foreign or damaged model), 2 bad arguments (``--mode text`` without ``--text``,
    ``--text`` with pc/img or too long, a part with text, no part with pc/img, unwritable output), 3 the
    program gives no valid solid.
    """
    parser = argparse.ArgumentParser(
        prog="cadlab reconstruct --model cadrille",
        description="Reconstruct a CAD part as CadQuery code with the course's mini Cadrille, from the part's "
                    "point cloud (--mode pc), its four rendered views (--mode img) or a description (--mode text).",
        epilog="Exit status: 0 valid solid, 1 bad input (mesh or model), 2 bad arguments, 3 no valid solid.")
    parser.add_argument("part", metavar="PART.stl", nargs="?", help="the mesh (pc and img modes), a closed solid")
    parser.add_argument("--model", required=True, help="'cadrille' (the shipped mini Cadrille) or a folder")
    parser.add_argument("--mode", required=True, choices=MODES, help="which input Cadrille reads")
    parser.add_argument("--text", default=None, help="the description (text mode only), within the model's context")
    parser.add_argument("-o", "--output", metavar="DIR", default=".", help="output folder (default: .)")
    parser.add_argument("--max-new-tokens", metavar="N", type=arguments.positive_int, default=768,
                        help="longest program in tokens, at most the model's context (default 768)")
    parser.add_argument("--grammar", choices=LEVELS[:2], default=None,
                        help="decode under a grammar of the course's part language (notebook 10): 'syntax' or "
                             "'grid' (default: none)")
    args = parser.parse_args(argv)

    if args.mode == "text":
        if args.text is None or not args.text.strip():
            fail(PROG, '--mode text needs a description: --text "a plate 200 by 100, 10 thick, ..."')
        if args.part is not None:
            fail(PROG, f"--mode text reads --text, not a part file ({args.part}); drop the file or use "
                       "--mode pc / --mode img.")
    else:
        if args.text is not None:
            fail(PROG, f"--text is for --mode text only; --mode {args.mode} reads PART.stl.")
        if args.part is None:
            fail(PROG, f"--mode {args.mode} needs a part: cadlab reconstruct PART.stl --model cadrille "
                       f"--mode {args.mode}")
    folder = None if args.model == "cadrille" else args.model
    checkpoint = check_checkpoint(folder, "Cadrille")
    check_max_new_tokens(args.max_new_tokens, checkpoint)
    if args.mode == "text":
        try:
            processor = cadrille.load_cadrille_processor(folder)
        except (OSError, ValueError) as error:
            fail(PROG, f"could not load the tokenizer of {args.model}: {one_line(error)}", BAD_INPUT)
        check_text(args.text, processor, checkpoint)
    stem = Path(args.part).stem if args.part else "text"
    py, stl = check_outputs(args.output, [f"{stem}.py", f"{stem}_pred.stl"]).values()
    mesh = load_part(args.part, sys.stderr) if args.part is not None else None
    try:
        model, processor = cadrille.load_cadrille(folder)
    except (OSError, ValueError, RuntimeError) as error:
        fail(PROG, f"could not load the model from {args.model}: {one_line(error)}", BAD_INPUT)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # a few-million-parameter model: one thread is fastest
    try:
        start = time.perf_counter()
        item = mode_item(args.mode, mesh=mesh, text=args.text, shading=processor.shading)
        code = cadrille.generate_code(model, processor, [item], max_new_tokens=args.max_new_tokens,
                                      grammar=args.grammar)[0]
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    py.parent.mkdir(parents=True, exist_ok=True)
    py.write_text(code)
    print(code, end="" if code.endswith("\n") else "\n")
    result = run_cadquery(code)
    solid = closed_solid(result)
    print(f"wrote {py}; generation {seconds:.2f} s ({args.mode} mode)", file=sys.stderr)
    if solid is None:
        print(f"cadlab reconstruct: the program gives no valid solid: {why_invalid(result)[:300]}", file=sys.stderr)
        return 3
    if mesh is not None:
        try:
            overlap = f"IoU {iou(mesh, solid):.3f}"
        except ValueError as error:      # manifold3d refuses a self-touching mesh; the Chamfer distance still holds
            overlap = f"IoU not computed ({one_line(error)})"
        print(f"{overlap}, Chamfer x1000 {chamfer_distance(mesh, solid) * CD_SCALE:.3f} "
              "to the input mesh (papers' frame)", file=sys.stderr)
    solid.export(stl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
