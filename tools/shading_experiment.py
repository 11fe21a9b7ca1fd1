"""Does the mini Cadrille read flat-shaded pictures better than Cadrille's smooth ones?

    python tools/shading_experiment.py --minutes 12 --train-parts 2400

Cadrille renders its input pictures with vertex normals smoothed across sharp edges (``render.render_views``,
shading "smooth"); a flat face then shades as a gradient. The experiment continues the shipped mini Cadrille
twice, with the same settings, data and minutes, once on smooth pictures and once on flat ones (one normal
per face, ``shading="flat"``), on one CPU thread each (the two at once, or one after the other with
``--one-at-a-time`` when another job holds a core), and then evaluates every mode of both on the held-out parts, their pictures rendered the way each run was trained. The result goes into the
shipped model's log under ``shading_experiment``; both models stay in ``--work`` for the one to keep.

Both runs start from a model trained on smooth pictures only, which favours smooth: a flat win is the
stronger evidence of the two outcomes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cadlab.cad.cadrille import MINI_CADRILLE_DIR
from cadlab.cad.cadrille_parts import held_out_parts, part_dataset
from cadlab.train.cadrille import EVAL_SHAPES

SHADINGS = ("smooth", "flat")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "chat_template.jinja", "training_log.json")


def build(shading: str, train_parts: int) -> str:
    part_dataset(train_parts, progress=False, shading=shading)
    held_out_parts(EVAL_SHAPES, progress=False, shading=shading)
    return shading


def cadlab(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "cadlab.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


def wait_all(processes) -> None:
    codes = [p.wait() for p in processes]
    if any(codes):
        raise SystemExit(f"a run failed (exit codes {codes}); see the logs in the work folder")


def summary(log: dict) -> dict:
    run, ev = log["runs"][-1], log["eval"]
    modes = {mode: {"mean_iou_invalid_as_0": round(ev[mode]["mean_iou_invalid_as_0"], 4),
                    "mean_iou_valid": round(ev[mode]["mean_iou"], 4) if ev[mode]["mean_iou"] is not None else None,
                    "invalid_ratio": ev[mode]["invalid_ratio"],
                    "iou_by_seed": {r["seed"]: (r["score"]["iou"] if r["score"] else 0.0) for r in ev[mode]["rows"]}}
             for mode in ("pc", "img", "text")}
    return {"steps": run["steps"], "seconds": run["seconds"], "val_at_end": log["val"][-1], "modes": modes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="training minutes of each run")
    parser.add_argument("--train-parts", type=int, default=2400, help="training seeds of both runs")
    parser.add_argument("--work", type=Path, default=Path("build/shading-experiment"), help="where the runs live")
    parser.add_argument("--one-at-a-time", action="store_true", help="build, train and evaluate one shading after the other")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    with ProcessPoolExecutor(1 if args.one_at_a_time else 2) as pool:
        list(pool.map(build, SHADINGS, [args.train_parts] * 2))
    print(f"parts built in {time.time() - t0:.0f} s")

    runs = []
    for shading in SHADINGS:
        out = args.work / f"model-{shading}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(args.work / f"run-{shading}", ignore_errors=True)
        out.mkdir(parents=True)
        for name in MODEL_FILES:
            shutil.copy(MINI_CADRILLE_DIR / name, out / name)
        runs.append(cadlab("train-cadrille", "--minutes", str(args.minutes), "--threads", "1", "--shading", shading,
                           "--train-parts", str(args.train_parts), "--rows", "pc=6,img=4,text=20", "--lr", "5e-4",
                           "--vision-lr", "1e-3", "--run-dir", str(args.work / f"run-{shading}"), "--out", str(out),
                           log=args.work / f"train-{shading}.log"))
        if args.one_at_a_time:
            wait_all(runs[-1:])
    wait_all(runs)
    print(f"both runs done at {time.time() - t0:.0f} s")
    evals = []
    for shading in SHADINGS:
        evals.append(cadlab("train-cadrille", "--eval", "--threads", "1", "--out", str(args.work / f"model-{shading}"),
                            log=args.work / f"eval-{shading}.log"))
        if args.one_at_a_time:
            wait_all(evals[-1:])
    wait_all(evals)

    result = {"minutes": args.minutes, "train_parts": args.train_parts, "shapes": EVAL_SHAPES,
              "together": not args.one_at_a_time,
              "started_from": "the shipped model (trained on smooth pictures)", "threads_per_run": 1}
    for shading in SHADINGS:
        result[shading] = summary(json.loads((args.work / f"model-{shading}" / "training_log.json").read_text()))
    smooth, flat = (result[s]["modes"]["img"]["iou_by_seed"] for s in SHADINGS)
    diff = np.array([flat[s] - smooth[s] for s in smooth])
    result["img_flat_minus_smooth"] = {"mean": round(float(diff.mean()), 4),
                                       "standard_error": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                                       "flat_better": int((diff > 0).sum()), "smooth_better": int((diff < 0).sum())}
    path = MINI_CADRILLE_DIR / "training_log.json"
    log = json.loads(path.read_text())
    log["shading_experiment"] = result
    path.write_text(json.dumps(log, indent=1))
    for shading in SHADINGS:
        m = result[shading]["modes"]
        print(f"{shading:6s} {result[shading]['steps']} steps: " + ", ".join(
            f"{mode} {m[mode]['mean_iou_invalid_as_0']:.3f}" for mode in ("pc", "img", "text")))
    print("img, flat - smooth:", result["img_flat_minus_smooth"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
