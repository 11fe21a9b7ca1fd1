"""What a grammar changes, measured: the mini CAD-Recode's and the mini Cadrille's held-out parts decoded
with and without the part language's grammar (``cadlab.cad.program_grammar``).

    cadlab eval-grammar --model cadrecode          # 236 held-out clouds, about 15 min on one thread
    cadlab eval-grammar --model cadrille           # 50 held-out parts x 3 modes, about 10 min

Every part is decoded greedy and sampled (temperature 0.8, no top-k / top-p cut, seeded by the part's
index, so with and without a grammar draw from the same random numbers), under each level: ``none``,
``syntax``, ``grid`` and, for CAD-Recode, ``box`` (its own cloud's bounding box). Each program gets one
``OUTCOMES`` category, first that applies:

* ``no parse``: Python cannot parse it (``ast.parse``);
* ``outside the language``: it parses but is not a sentence of the syntax grammar;
* ``no solid``: it is in the language but the sandbox gives no valid closed solid;
* ``valid``: a solid, scored by IoU with the truth in the papers' frame (invalid counts 0).

The rows and a summary per decoding and level go into the model's ``training_log.json`` under
``grammar``; notebook 10 reads them.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cadlab import arguments
from cadlab.cad.cadrecode import load_cadrecode
from cadlab.cad.cadrille import generate_code, load_cadrille, model_shading
from cadlab.cad.cadrille_processor import MODES
from cadlab.cad.program_grammar import program_grammar
from cadlab.cad.reconstruct import DEFAULT_TEMPERATURE, generate_codes, score_program
from cadlab.cad.sandbox import run_cadquery
from cadlab.lm.grammar import Automaton
from cadlab.paths import MINI_CADRECODE_DIR, MINI_CADRILLE_DIR
from cadlab.train.cadrecode import held_out_set
from cadlab.train.cadrille import EVAL_MAX_NEW_TOKENS, EVAL_SHAPES, held_out_items, held_out_parts
from cadlab.train.evaluate import score_against_truth

OUTCOMES = ("valid", "no solid", "outside the language", "no parse")
DECODINGS = ("greedy", "sampled")
CADRECODE_LEVELS = ("none", "syntax", "grid", "box")
CADRILLE_LEVELS = ("none", "syntax", "grid")


@lru_cache(maxsize=1)
def _language() -> Automaton:
    return Automaton(program_grammar("syntax"))


def outcome(code: str, truth, cloud) -> dict:
    """``{"outcome": one of OUTCOMES, "iou": IoU with the truth (0 unless valid)}`` of one program."""
    try:
        ast.parse(code)
    except SyntaxError:
        return {"outcome": "no parse", "iou": 0.0}
    if not _language().matches(code):
        return {"outcome": "outside the language", "iou": 0.0}
    score = score_against_truth(score_program(code, cloud), truth)
    if score is None:
        return {"outcome": "no solid", "iou": 0.0}
    return {"outcome": "valid", "iou": score["iou"]}


def summarize(rows: list[dict]) -> dict:
    """Share of each outcome and mean IoU (invalid as 0) of a list of rows."""
    n = len(rows)
    return {"n": n, **{name: sum(r["outcome"] == name for r in rows) / n for name in OUTCOMES},
            "mean_iou": float(np.mean([r["iou"] for r in rows]))}


def summarize_by(rows: list[dict], fields) -> dict:
    """``summarize`` of the rows grouped by ``fields``, keyed by their values joined with spaces
    (``"greedy syntax"``), in the order the groups first appear."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(" ".join(r[f] for f in fields), []).append(r)
    return {key: summarize(group) for key, group in groups.items()}


def evaluate_cadrecode(model_dir=MINI_CADRECODE_DIR, n_shapes: int | None = None, levels=CADRECODE_LEVELS,
                       progress: bool = True) -> dict:
    """Every held-out cloud, greedy and sampled, under every level; seconds spent decoding per level."""
    model, tokenizer = load_cadrecode(model_dir)
    test = held_out_set(progress=progress)
    n = len(test["codes"]) if n_shapes is None else min(n_shapes, len(test["codes"]))
    rows, seconds = [], {}
    for i in tqdm(range(n), desc="CAD-Recode, with and without grammars", disable=not progress):
        truth, cloud = run_cadquery(test["codes"][i]).mesh, test["points"][i]
        for decoding in DECODINGS:
            for level in levels:
                start = time.perf_counter()
                code = generate_codes(model, tokenizer, cloud, samples=1, seed=i, greedy_first=decoding == "greedy",
                                      temperature=DEFAULT_TEMPERATURE, grammar=None if level == "none" else level)[0]
                key = f"{decoding} {level}"
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
                rows.append({"seed": test["seeds"][i], "decoding": decoding, "level": level, "code": code,
                             **outcome(code, truth, cloud)})
    return {"shapes": n, "temperature": DEFAULT_TEMPERATURE, "torch_threads": torch.get_num_threads(),
            "summary": summarize_by(rows, ("decoding", "level")),
            "generate_seconds": {k: round(v, 1) for k, v in seconds.items()}, "rows": rows}


def evaluate_cadrille(model_dir=MINI_CADRILLE_DIR, n_shapes: int = EVAL_SHAPES, levels=CADRILLE_LEVELS,
                      progress: bool = True) -> dict:
    """Every held-out part in every mode, greedy and sampled, under every level."""
    model, processor = load_cadrille(model_dir)
    parts = held_out_parts(n_shapes, progress=progress, shading=model_shading(model_dir))
    rows, seconds = [], {}
    for i in tqdm(range(len(parts["codes"])), desc="Cadrille, with and without grammars", disable=not progress):
        truth, cloud = run_cadquery(parts["codes"][i]).mesh, parts["points"][i]
        items = held_out_items(parts, i)
        for mode in MODES:
            for decoding in DECODINGS:
                sampling = {} if decoding == "greedy" else {
                    "do_sample": True, "temperature": DEFAULT_TEMPERATURE, "top_k": 0, "top_p": 1.0, "seed": i}
                for level in levels:
                    start = time.perf_counter()
                    code = generate_code(model, processor, [items[mode]], max_new_tokens=EVAL_MAX_NEW_TOKENS,
                                         grammar=None if level == "none" else level, **sampling)[0]
                    key = f"{mode} {decoding} {level}"
                    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
                    rows.append({"seed": parts["seeds"][i], "mode": mode, "decoding": decoding, "level": level,
                                 "code": code, **outcome(code, truth, cloud)})
    return {"shapes": len(parts["codes"]), "temperature": DEFAULT_TEMPERATURE, "torch_threads": torch.get_num_threads(),
            "summary": summarize_by(rows, ("mode", "decoding", "level")), "generate_seconds": {k: round(v, 1) for k, v in seconds.items()}, "rows": rows}


def write(model_dir: Path, result: dict) -> None:
    path = Path(model_dir) / "training_log.json"
    log = json.loads(path.read_text())
    log["grammar"] = result
    path.write_text(json.dumps(log, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab eval-grammar", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["cadrecode", "cadrille"], required=True,
                        help="which shipped model's held-out set to decode")
    parser.add_argument("--shapes", type=arguments.positive_int, default=None,
                        help="only the first N parts (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.model == "cadrecode":
        result = evaluate_cadrecode(n_shapes=args.shapes)
        write(MINI_CADRECODE_DIR, result)
    else:
        result = evaluate_cadrille(n_shapes=args.shapes or EVAL_SHAPES)
        write(MINI_CADRILLE_DIR, result)
    for key, s in result["summary"].items():
        print(f"{key:24s} " + ", ".join(f"{name} {s[name]:.3f}" for name in OUTCOMES) + f", mean IoU {s['mean_iou']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
