"""Train the course's mini Cadrille on synthetic parts, in all three modes, and evaluate it per mode.

    cadlab train-cadrille --minutes 30 --threads 1    # build the data, train (resumes its run,
                                                      # else continues from the shipped model)
    cadlab train-cadrille --eval --shapes 60          # held-out metrics per mode into the log

The model. A tiny Qwen2-VL (``cadlab.cad.cadrille.Cadrille``): its language model is the mini CAD-Recode's
(``load_language_model``: same tokenizer plus Qwen2-VL's special tokens, same backbone shape), its point
encoder is the mini CAD-Recode's, and its vision tower (Qwen2-VL's, a few blocks wide enough for
268 x 268 pictures) is trained from scratch. The copy is exact on text because with text-only
positions Qwen2-VL's mrope is 1-D RoPE: all three position rows are equal, so every one of the
``head_dim / 2`` rotation frequencies turns by ``p * theta_j`` whichever axis (t, h, w) it belongs to,
which is RoPE's rotation. ``check_text_mrope`` asserts it on the real models before training
(cos/sin equal exactly, and Cadrille's logits equal CAD-Recode's on a text prompt).

Data: ``cadlab.cad.cadrille_parts`` (each training part's program, point cloud, four-view picture and
four descriptions, cached; the held-out parts are the mini CAD-Recode's).

One optimizer step = one micro-batch per mode (``rows`` pc, img and text items), each built by
``cadlab.cad.cadrille_processor.collate(eval=False)`` and each loss the mean over its answer tokens; the step's
loss is their mean, so each mode weighs the same whatever its length. (A mixed collate gives the same
per-row losses, but pads the short text rows to the 256 extra positions of the point rows.) Text rows
take the expert level most often (``LEVEL_WEIGHTS``). Point clouds get CAD-Recode's noise (std 0.01
with probability 1/2). Training is ``cadlab.train.loop`` with the recipe ``CadrilleRecipe``: AdamW, the
language model and point encoder at a lower peak rate than the new vision tower (``--vision-lr``),
warm-up and cosine over the budget, bf16 autocast, resumable checkpoints; the model, tokenizer, log
and curves go to ``cadlab/weights/mini-cadrille``, whose README is the model card.

Evaluation (``evaluate``): greedy, one part at a time, for each mode through the course's one score path
(``cadlab.cad.reconstruct.score_program``: the sandbox, ``closed_solid``) and
``cadlab.train.evaluate.score_against_truth`` (IoU and Chamfer x1000 in the papers' frame: each solid by its
own bounding box into [0, 1]^3, 8192 surface samples); invalid rate and seconds per reconstruction.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from cadlab import arguments
from cadlab.cad.cadrecode import MINI_MODEL_DIR, load_cadrecode
from cadlab.cad.cadrille import (
    MINI_CADRILLE_DIR,
    Cadrille,
    cadrille_config,
    generate_code,
    load_cadrille,
    load_language_model,
    model_shading,
)
from cadlab.cad.cadrille_parts import (
    FRESH_TEXT_START,
    PART_CHUNK,
    fresh_text_item,
    held_out_parts,
    make_items,
    measure_part_seconds,
    part_dataset,
)
from cadlab.cad.cadrille_processor import MODES, CadrilleProcessor, collate, mini_tokenizer, token_ids
from cadlab.cad.describe import LEVELS, describer_words
from cadlab.cad.part_sets import TEST_START
from cadlab.cad.program_errors import program_errors
from cadlab.cad.render import SHADINGS
from cadlab.cad.reconstruct import score_program
from cadlab.cad.sandbox import run_cadquery
from cadlab.paths import cache_dir
from cadlab.train import loop
from cadlab.train.evaluate import TokenLoss, score_against_truth, summarize_stage
from cadlab.train.loop import LoopSettings, setting

WEIGHTS_DIR = MINI_CADRILLE_DIR
CACHE = cache_dir()
RUN_DIR = CACHE / "mini-cadrille-run"
EVAL_MAX_NEW_TOKENS = 400             # Cadrille's 768 is for real parts; the longest synth program is ~140 tokens here
EVAL_MINUTES = 10.0                   # the evaluation's time budget (it stops after the part in progress)
EVAL_SHAPES = 50                      # held-out parts evaluated per mode (the validation loss uses the first val_parts)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
@dataclass
class VisionSettings:
    depth: int = 4
    embed_dim: int = 128
    heads: int = 4


def new_model(lm, tokenizer, vision: VisionSettings = VisionSettings(), seed: int = 0) -> Cadrille:
    """A Cadrille whose language model and point encoder are ``lm``'s (a mini CAD-Recode), vision tower new."""
    c = lm.config
    config = cadrille_config(len(tokenizer), token_ids(tokenizer), hidden_size=c.hidden_size,
                             layers=c.num_hidden_layers, heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                             intermediate_size=c.intermediate_size, vision_depth=vision.depth,
                             vision_embed_dim=vision.embed_dim, vision_heads=vision.heads,
                             rope_theta=c.rope_parameters["rope_theta"],
                             max_position_embeddings=max(c.max_position_embeddings, 1024),
                             rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings)
    torch.manual_seed(seed)
    model = Cadrille(config)
    load_language_model(model, lm)
    return model


@torch.no_grad()
def add_word_tokens(model: Cadrille, tokenizer, words):
    """A copy of ``tokenizer`` with ``words`` (those it lacks) as whole tokens, appended after its last
    id, and ``model``'s embedding (and output) rows grown to match, in place. Each new row starts as the
    mean of the rows of the pieces the old tokenizer split the word into, so a word means at first what
    its letters meant together. Returns the new tokenizer."""
    new = list(dict.fromkeys(w for w in words if w not in tokenizer.get_vocab()))
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in new]
    extended = copy.deepcopy(tokenizer)
    extended.add_tokens(new)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(extended), mean_resizing=False)
    ids = [extended.convert_tokens_to_ids(w) for w in new]
    assert ids == list(range(old, old + len(new))), "the new words must take the ids after the old vocabulary"
    matrices = [model.get_input_embeddings().weight]
    if not model.config.tie_word_embeddings:
        matrices.append(model.get_output_embeddings().weight)
    for weight in matrices:
        for i, piece in zip(ids, pieces):
            weight[i] = weight[piece].mean(0)
    return extended


@torch.no_grad()
def check_text_mrope(cadrille: Cadrille, lm, processor: CadrilleProcessor) -> dict:
    """Assert that with text-only positions mrope is 1-D RoPE, and so that the copied language model computes
    what ``lm`` did on text: cos/sin equal exactly, and the logits on a text prompt agree. Returns the diffs."""
    positions = torch.arange(512)[None]
    probe = torch.zeros(1, dtype=torch.float32)
    cos3, sin3 = cadrille.model.language_model.rotary_emb(probe, positions[None].expand(3, -1, -1))
    cos1, sin1 = lm.model.rotary_emb(probe, positions)
    rope = max(float((cos3 - cos1).abs().max()), float((sin3 - sin1).abs().max()))
    assert rope == 0.0, f"text-only mrope differs from 1-D RoPE by {rope}"
    ids = collate([{"description": "a disc of radius 100 with a centre hole"}], processor)["input_ids"]
    ids = ids[:, ids[0] < lm.config.vocab_size]          # tokens the source vocabulary has
    was = cadrille.training, lm.training
    cadrille.eval(), lm.eval()
    ours = cadrille(input_ids=ids).logits[..., :lm.config.vocab_size]
    theirs = lm(input_ids=ids).logits
    cadrille.train(was[0]), lm.train(was[1])
    logits = float((ours - theirs).abs().max())
    assert logits < 1e-4, f"Cadrille with the copied language model differs from it on text by {logits}"
    return {"rope_cos_sin_max_diff": rope, "text_logits_max_diff": logits}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _shading(text: str) -> str:
    """``--shading``: one of ``render.SHADINGS``."""
    if text not in SHADINGS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SHADINGS)}, got {text!r}")
    return text


@dataclass
class TrainSettings(LoopSettings):
    """Everything a mini Cadrille run depends on (the loop's settings, and these)."""
    minutes: float = setting(30.0, "wall-clock budget of this run, in minutes")
    lr: float = setting(1e-3, "peak learning rate of the language model and the point encoder (pretrained)")
    vision_lr: float = setting(2e-3, "peak learning rate of the vision tower (new)")
    checkpoint_minutes: float = setting(4.0, "minutes between checkpoints (held-out loss, run state, model)")
    rows: dict = setting({"pc": 6, "img": 4, "text": 10}, "rows per mode in each step")
    fresh_text: float = setting(0.5, "share of text rows drawn from never-run programs", arguments.proportion)
    train_parts: int = setting(600, "training seeds to build")
    build_workers: int = setting(1, f"processes that build missing training parts (cached in chunks of {PART_CHUNK})")
    val_parts: int = setting(16, "held-out parts for the per-mode validation loss")
    word_tokens: bool = setting(True, "give the describer's English words whole tokens")
    shading: str = setting("smooth", "the pictures' shading: smooth (vertex normals, as Cadrille's renderer) or "
                                     "flat (one normal per face)", _shading)
    vision: VisionSettings = field(default_factory=VisionSettings)

    def __post_init__(self):
        unknown = sorted(set(self.rows) - set(MODES))
        if unknown:
            raise ValueError(f"--rows names unknown modes {unknown}: the modes are {', '.join(MODES)}")
        if any(n < 0 for n in self.rows.values()) or not sum(self.rows.values()):
            raise ValueError(f"--rows {self.rows}: give each mode 0 or more rows, and at least one row in all "
                             "(e.g. pc=6,img=4,text=10)")


def mode_loss(model: Cadrille, processor: CadrilleProcessor, items: list[dict]):
    """The mean answer-token cross-entropy of one batch of ``items`` (one mode)."""
    device = next(model.parameters()).device
    batch = collate(items, processor, eval=False)
    return model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}).loss


@torch.no_grad()
def val_losses(model: Cadrille, processor: CadrilleProcessor, val: dict, batch: int = 8) -> dict:
    """Per-mode held-out loss per answer token (``TokenLoss``; fp32, no noise, expert descriptions for text)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for mode in MODES:
        loss = TokenLoss(processor.tokenizer)
        for s in range(0, len(val["codes"]), batch):
            index = range(s, min(s + batch, len(val["codes"])))
            if mode == "text":
                items = [{"description": val["descriptions"][i][LEVELS.index("expert")], "answer": val["codes"][i]}
                         for i in index]
            else:
                items = make_items(val, index, mode, random.Random(0), noise=False)
            inputs = collate(items, processor, eval=False)
            labels = inputs.pop("labels")
            with torch.no_grad():
                logits = model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}).logits
            loss.add(logits, labels)
        out[mode] = round(loss.mean("all"), 5)
    model.train(was)
    return out


class CadrilleRecipe:
    """The mini Cadrille for ``cadlab.train.loop``: each step has a batch of every mode (``rows``), each
    mode's loss back-propagated with weight 1 / (number of modes). The parts of step ``s`` are drawn by
    a generator seeded by ``s``, so a resumed run sees what an uninterrupted one would have seen."""
    name = "mini Cadrille"

    def __init__(self, settings: TrainSettings, data: dict, val: dict, lm=None, tokenizer=None):
        self.settings, self.data, self.val = settings, data, val
        self.lm, self.tokenizer = lm, tokenizer
        self.extra = {}

    def can_continue(self, folder: Path) -> bool:
        return (Path(folder) / "model.safetensors").exists() and (Path(folder) / "config.json").exists()

    def load_model(self, folder: Path) -> Cadrille:
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        return self._with_words(Cadrille.from_pretrained(folder))

    def new_model(self) -> Cadrille:
        """Language model and point encoder from the mini CAD-Recode, a new vision tower; first the proof
        that with text-only positions mrope is the language model's 1-D RoPE."""
        if self.lm is None:
            self.lm, base = load_cadrecode()
            self.tokenizer = mini_tokenizer(base)
        model = new_model(self.lm, self.tokenizer, self.settings.vision, seed=self.settings.seed)
        proof = check_text_mrope(model, self.lm, CadrilleProcessor(self.tokenizer))
        print(f"text-only mrope == 1-D RoPE: {proof}")
        self.extra["text_mrope_equals_rope"] = proof
        return self._with_words(model)

    def _with_words(self, model: Cadrille) -> Cadrille:
        if self.settings.word_tokens:
            missing = [w for w in describer_words() if w not in self.tokenizer.get_vocab()]
            if missing:
                self.tokenizer = add_word_tokens(model, self.tokenizer, missing)
                self.extra["word_tokens_added"] = len(missing)
                print(f"{len(missing)} word tokens added (vocabulary {len(self.tokenizer)}): {missing[:8]} ...")
        self.processor = CadrilleProcessor(self.tokenizer)
        return model

    def optimizer(self, model) -> torch.optim.Optimizer:
        s = self.settings
        vision = [(n, p) for n, p in model.named_parameters() if n.startswith("model.visual.")]
        rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.visual.")]
        groups = loop.no_weight_decay_groups(rest, s.lr, 0.05) + loop.no_weight_decay_groups(vision, s.vision_lr, 0.05)
        return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.98))

    def config(self, model) -> dict:
        return dict(params=sum(p.numel() for p in model.parameters()),
                    vision_params=sum(p.numel() for p in model.model.visual.parameters()),
                    hidden_size=model.config.text_config.hidden_size,
                    layers=model.config.text_config.num_hidden_layers, vocab_size=len(self.tokenizer),
                    vision=asdict(self.settings.vision), train_parts=len(self.data["codes"]),
                    shading=self.settings.shading, **self.extra)

    def step(self, model, step: int) -> dict:
        s = self.settings
        rng = random.Random(s.seed * 1_000_003 + step)
        modes = [m for m in MODES if s.rows.get(m, 0)]
        n_parts = len(self.data["codes"])
        losses = {}
        for mode in modes:
            k = s.rows[mode]
            index = [rng.randrange(n_parts) for _ in range(k)]
            items = make_items(self.data, index, mode, rng)
            if mode == "text":
                fresh = sum(rng.random() < s.fresh_text for _ in range(k))
                for j in range(fresh):
                    try:
                        items[j] = fresh_text_item(FRESH_TEXT_START + step * k + j, rng)
                    except ValueError:           # never seen in 4,000 seeds; a pool item stands in
                        pass
            loss = mode_loss(model, self.processor, items)
            (loss / len(modes)).backward()
            losses[mode] = round(loss.item(), 5)
        return {"loss": round(float(np.mean(list(losses.values()))), 5), **losses}

    def held_out(self, model) -> dict:
        return val_losses(model, self.processor, self.val)

    def save(self, model, folder: Path, log: dict, shipped: bool) -> None:
        """Model (fp32 safetensors), config, generation config and tokenizer; shipped, the log and curves too."""
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.generation_config.eos_token_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.do_sample = False
        loop.save_pretrained(model, self.tokenizer, folder, log, shipped, draw_curves)


def train(run_dir: Path = RUN_DIR, out_dir: Path = WEIGHTS_DIR, settings: TrainSettings | None = None,
          data: dict | None = None, val: dict | None = None, lm=None, tokenizer=None, progress: bool = True) -> dict:
    """Train (or resume) the mini Cadrille with ``cadlab.train.loop``; returns the log. ``data``, ``val``,
    ``lm`` and ``tokenizer`` override the cached parts, the held-out parts and the shipped mini
    CAD-Recode (tests)."""
    hf_logging.disable_progress_bar()         # no "Writing model shards" bars at every checkpoint
    settings = settings or TrainSettings()
    built = {}
    if data is None:
        built["seconds_per_part"] = measure_part_seconds()
        print(f"data: seconds per part {built['seconds_per_part']}")
        t0 = time.time()
        data = part_dataset(settings.train_parts, progress=progress, workers=settings.build_workers,
                            shading=settings.shading)
        built["build_seconds"] = round(time.time() - t0, 1)
    if val is None:
        val = held_out_parts(max(settings.val_parts, EVAL_SHAPES), progress=progress, shading=settings.shading)
    val = {k: (v[:settings.val_parts] if k != "rejected" else v) for k, v in val.items()}
    recipe = CadrilleRecipe(settings, data, val, lm=lm, tokenizer=tokenizer)
    recipe.extra.update(built)
    return loop.train(recipe, run_dir, out_dir, settings, progress=progress)


def draw_curves(ax, log: dict) -> None:
    """Per-mode training loss (smoothed) and held-out loss against steps, log scale."""
    colours = {"pc": "C0", "img": "C1", "text": "C2"}
    train = log.get("train", [])
    for mode in MODES:
        rows = [r for r in train if mode in r]
        if rows:
            steps, losses = [r["step"] for r in rows], [r[mode] for r in rows]
            k = max(1, len(losses) // 30)
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, lw=1.2, color=colours[mode], label=f"{mode} train (mean of {k})")
        val = [r for r in log.get("val", []) if mode in r]
        if val:
            ax.plot([r["step"] for r in val], [r[mode] for r in val], "o--", ms=3, color=colours[mode],
                    label=f"{mode} held-out")
    ax.set_yscale("log")
    for k, run in enumerate(log.get("runs", []), start=1):           # where each run began, and on how many seeds
        ax.axvline(run["started_at_step"], color="0.6", lw=0.7, ls=":")
        ax.annotate(f"run {k}: {run['settings']['train_parts']:,} seeds", (run["started_at_step"], 1.0),
                    xycoords=("data", "axes fraction"), xytext=(2, 2 + 8 * ((k - 1) % 3)), textcoords="offset points",
                    va="bottom", fontsize=6, color="0.35", annotation_clip=False)   # above the plot, three rows
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per answer token")
    ax.set_title("mini Cadrille", pad=28)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def held_out_items(parts: dict, i: int) -> dict:
    """Part ``i`` of the held-out parts in each mode (text: the expert description)."""
    return {"pc": {"point_cloud": np.asarray(parts["points"][i], dtype=np.float32)},
            "img": {"video": [Image.fromarray(np.asarray(parts["images"][i]))]},
            "text": {"description": parts["descriptions"][i][LEVELS.index("expert")]}}


def _mode_summary(rows: list[dict]) -> dict:
    summary = summarize_stage([r["score"] for r in rows])
    summary["seconds_per_reconstruction"] = {"median": float(np.median([r["seconds"] for r in rows])),
                                             "max": float(np.max([r["seconds"] for r in rows]))}
    by_family = {}
    for r in rows:
        by_family.setdefault(r["family"], []).append(r["score"]["iou"] if r["score"] else 0.0)
    summary["iou_invalid_as_0_by_family"] = {f: round(float(np.mean(v)), 3) for f, v in sorted(by_family.items())}
    return {**summary, "rows": rows}


def evaluate(model_dir=WEIGHTS_DIR, n_shapes: int = EVAL_SHAPES, modes=MODES, max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
             minutes: float | None = EVAL_MINUTES, progress: bool = True, write: bool = True) -> dict:
    """Greedy held-out metrics per mode (see the module docstring), written into the log's ``eval``.

    Parts are taken in order and each part goes through every mode before the next, so a run stopped by its
    time budget (``minutes``) has scored the same parts in every mode; the log is rewritten after each part."""
    began = time.time()
    model, processor = load_cadrille(model_dir)
    shading = model_shading(model_dir)
    parts = held_out_parts(n_shapes, progress=progress, shading=shading)
    result = {"shading": shading, "shapes_asked": len(parts["codes"]), "held_out_seeds_from": TEST_START, "greedy": True, "batch": 1,
              "max_new_tokens": max_new_tokens, "torch_threads": torch.get_num_threads(), "text_level": "expert",
              "frame": "papers' frame: each solid by its own bounding box into [0,1]^3; Chamfer: 8192 surface "
                       "samples each, squared distances, both directions, x1000"}
    log_path = Path(model_dir) / "training_log.json"
    rows = {mode: [] for mode in modes}
    for i in tqdm(range(len(parts["codes"])), desc="evaluate (every mode per part)", disable=not progress):
        if minutes is not None and time.time() - began > minutes * 60:
            result["stopped_by_time_budget_minutes"] = minutes
            break
        truth = run_cadquery(parts["codes"][i]).mesh
        for mode in modes:
            start = time.perf_counter()
            code = generate_code(model, processor, [held_out_items(parts, i)[mode]], max_new_tokens=max_new_tokens)[0]
            generated = time.perf_counter()
            candidate = score_program(code, parts["points"][i], mode)
            score = score_against_truth(candidate, truth)
            rows[mode].append({"seed": parts["seeds"][i], "family": parts["families"][i], "score": score,
                               "generate_seconds": round(generated - start, 3),
                               "seconds": round(time.perf_counter() - start, 3), "code": code,
                               "truth_code": parts["codes"][i]})
        result["shapes"] = i + 1
        for mode in modes:
            result[mode] = _mode_summary(rows[mode])
            result[mode]["anatomy"] = program_errors(rows[mode])
        result["mini_cadrecode_same_shapes"] = cadrecode_baseline(parts["seeds"][:i + 1])
        if write and log_path.exists():
            log = json.loads(log_path.read_text())
            log["eval"] = result
            log_path.write_text(json.dumps(log, indent=1))
    return result


def evaluate_text_levels(model_dir=WEIGHTS_DIR, n_shapes: int = EVAL_SHAPES, levels=LEVELS,
                         max_new_tokens: int = EVAL_MAX_NEW_TOKENS, progress: bool = True, write: bool = True) -> dict:
    """Text mode at every description level (``cadlab.cad.describe.LEVELS``, abstract to expert) on the same
    held-out parts, greedy, scored as ``evaluate`` scores a mode; written into the log's ``eval_text_levels``.
    The expert level states every number of the program, so its score measures transcription; the levels
    below it leave sizes and places out, and the model must guess them."""
    model, processor = load_cadrille(model_dir)
    parts = held_out_parts(n_shapes, progress=progress)
    rows = {level: [] for level in levels}
    for i in tqdm(range(len(parts["codes"])), desc="text levels", disable=not progress):
        truth = run_cadquery(parts["codes"][i]).mesh
        for level in levels:
            start = time.perf_counter()
            description = parts["descriptions"][i][LEVELS.index(level)]
            code = generate_code(model, processor, [{"description": description}], max_new_tokens=max_new_tokens)[0]
            score = score_against_truth(score_program(code, parts["points"][i], "text"), truth)
            rows[level].append({"seed": parts["seeds"][i], "family": parts["families"][i], "score": score,
                                "seconds": round(time.perf_counter() - start, 3), "code": code})
    result = {"shapes": len(parts["codes"]), "greedy": True, "max_new_tokens": max_new_tokens,
              **{level: _mode_summary(rows[level]) for level in levels}}
    log_path = Path(model_dir) / "training_log.json"
    if write and log_path.exists():
        log = json.loads(log_path.read_text())
        log["eval_text_levels"] = result
        log_path.write_text(json.dumps(log, indent=1))
    return result


def cadrecode_baseline(seeds) -> dict | None:
    """The mini CAD-Recode's greedy held-out results on the same shapes, read from its shipped log."""
    path = MINI_MODEL_DIR / "training_log.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text()).get("eval", {}).get("held_out_greedy", {}).get("rows", [])
    by_seed = {r["name"]: r["greedy"] for r in rows}
    if not all(s in by_seed for s in seeds):
        return None
    return summarize_stage([by_seed[s] for s in seeds])


def print_eval(result: dict) -> None:
    for mode in MODES:
        if isinstance(result.get(mode), dict):
            r = result[mode]
            iou = "n/a" if r["mean_iou"] is None else f"{r['mean_iou']:.3f}"
            cd = "n/a" if r["median_cd_x1000"] is None else f"{r['median_cd_x1000']:.3f}"
            print(f"{mode:5s}: shapes {r['shapes']}, mean IoU {iou} (invalid as 0: {r['mean_iou_invalid_as_0']:.3f}), "
                  f"median CD x1000 {cd}, invalid {r['invalid_ratio']:.3f}, "
                  f"{r['seconds_per_reconstruction']['median']:.2f} s per reconstruction")
    if result.get("mini_cadrecode_same_shapes"):
        b = result["mini_cadrecode_same_shapes"]
        print(f"mini CAD-Recode, same shapes: mean IoU {b['mean_iou']:.3f} (invalid as 0: "
              f"{b['mean_iou_invalid_as_0']:.3f}), median CD x1000 {b['median_cd_x1000']:.3f}, "
              f"invalid {b['invalid_ratio']:.3f}")


def _modes(text: str) -> list[str]:
    """``--modes``: a comma-separated list of Cadrille's input modes."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"expected modes from {', '.join(MODES)} separated by commas, got {text!r}")
    return modes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab train-cadrille", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", action="store_true", help="evaluate the model in --out on the held-out parts")
    parser.add_argument("--eval-text-levels", action="store_true",
                        help="evaluate text mode at every description level (abstract .. expert) on the held-out parts")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where the resumable training state lives")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the shipped model is written")
    loop.flags(parser, TrainSettings)
    parser.add_argument("--shapes", type=arguments.positive_int, default=EVAL_SHAPES,
                        help="--eval: held-out parts per mode")
    parser.add_argument("--modes", type=_modes, default=list(MODES), help="--eval: which modes (default pc,img,text)")
    parser.add_argument("--max-new-tokens", type=arguments.positive_int, default=EVAL_MAX_NEW_TOKENS,
                        help="--eval: longest program")
    parser.add_argument("--eval-minutes", type=arguments.positive_float, default=EVAL_MINUTES,
                        help="--eval: time budget")
    args = parser.parse_args(argv)
    settings = loop.settings_from(args, TrainSettings, parser)
    if args.eval or args.eval_text_levels:
        out = loop.check_model_folder(parser, args.out, "cadrille", "Cadrille checkpoint",
                                      ("config.json", "model.safetensors", "tokenizer.json"),
                                      "cadlab train-cadrille --out FOLDER")
        torch.set_num_threads(settings.threads or 1)
        if args.eval_text_levels:
            result = evaluate_text_levels(out, n_shapes=args.shapes, max_new_tokens=args.max_new_tokens)
            for level in LEVELS:
                r = result[level]
                print(f"text, {level:12s}: shapes {r['shapes']}, mean IoU invalid as 0 {r['mean_iou_invalid_as_0']:.3f}, "
                      f"invalid {r['invalid_ratio']:.3f}")
            return 0
        print_eval(evaluate(out, n_shapes=args.shapes, modes=args.modes, max_new_tokens=args.max_new_tokens,
                            minutes=args.eval_minutes))
        return 0
    arguments.writable_folder(args.run_dir, parser.prog, "--run-dir", create=False)
    arguments.writable_folder(args.out, parser.prog, "--out", create=False)
    loop.apply_threads(settings)
    train(args.run_dir, args.out, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
