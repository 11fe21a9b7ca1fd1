"""Train the course's mini CAD-Recode on synthetic programs, and evaluate it on held-out shapes.

    cadlab train-cadrecode --minutes 80              # train (resumes its run, else the shipped model)
    cadlab train-cadrecode --eval                    # held-out metrics of the shipped model: greedy,
                                                     # best of 8, + fitted numbers (cadlab.cad.reconstruct)

Data (``cadlab.cad.part_sets``). ``cadlab.cad.synth.build_dataset`` turns seeds into (program,
256-point cloud) pairs. Training seeds come in chunks of ``CHUNK`` from 0 upwards; the held-out
test set is seeds ``TEST_START .. TEST_START + TEST_SEEDS - 1``, far from any training chunk. A run
trains on every chunk in the cache when it starts (``--min-chunks`` builds the missing ones).

Tokenizer. A byte-level BPE trained on the programs (``build_tokenizer``). Every digit is split
off before BPE, as Qwen2's own pre-tokenizer does, so ``-148`` is written ``-``, ``1``, ``4``, ``8``
and the merges learn only the fixed syntax (``.finalize().extrude(``). Digits make a number a
short sequence of 10-way choices whose first choice is coarse (is the side above 100?) instead of
one of ~450 unrelated whole-number tokens (the model card next to the weights says what a
whole-number tokenizer did). The three Qwen special tokens keep their roles: ``<|im_end|>`` is
the placeholder at the 256 point positions (and the pad), ``<|im_start|>`` opens the code,
``<|endoftext|>`` ends it. Byte-level, so any text round-trips.

One training example, with C the code's token ids::

    input_ids      = [<|im_end|>] * 256 + [<|im_start|>] + C + [<|endoftext|>]
    attention_mask = [-1] * 256         + [1] * (len(C) + 2)
    labels         = [-100] * 257       + C + [<|endoftext|>]

``Qwen2ForCausalLM`` shifts the labels, so the loss is the mean over code tokens (and the end
token) of ``-log p(token | points, previous code)``: the points are never predicted. Batches are
right-padded (mask 0, label -100). Augmentation as in CAD-Recode: with probability 1/2 a cloud
gets Gaussian noise of std 0.01 (in the [-1, 1] frame) on every coordinate.

Training is ``cadlab.train.loop`` with the recipe ``CADRecodeRecipe``: AdamW (betas 0.9, 0.98;
weight decay 0.05 on matrices), warm-up and cosine over the budget, bf16 autocast (a CPU with bf16
instructions multiplies bf16 matrices about twice as fast; weights stay fp32), resumable
checkpoints; the model, tokenizer, log and curves go to ``cadlab/weights/mini-cadrecode``, whose
README is the model card. The held-out loss (``loss_report``) is computed in fp32.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config

from cadlab import arguments
from cadlab.cad.baselines import RetrievalLibrary, bounding_box_program, load_library
from cadlab.cad.cadrecode import END_TOKEN, POINT_TOKEN, START_TOKEN, CADRecode, load_cadrecode
from cadlab.cad.part_sets import (
    CHUNK,
    NOISE_P,
    NOISE_STD,
    TEST_SEEDS,
    TEST_START,
    held_out_set,
    train_data,
    workshop_parts,
)
from cadlab.cad.metrics import CD_SCALE
from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.program_errors import program_errors
from cadlab.cad.reconstruct import reconstruct, score_program
from cadlab.cad.sandbox import run_cadquery
from cadlab.paths import MINI_CADRECODE_DIR, cache_dir
from cadlab.train import loop
from cadlab.train.evaluate import TokenLoss, score_against_truth, summarize_stage
from cadlab.train.loop import LoopSettings, setting

WEIGHTS_DIR = MINI_CADRECODE_DIR
SPECIAL_TOKENS = (END_TOKEN, START_TOKEN, POINT_TOKEN)   # ids 0, 1, 2 in the mini tokenizer
RUN_DIR = cache_dir() / "mini-cadrecode-run"


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def build_tokenizer(codes, vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``codes``, Qwen's three special tokens first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),      # one token per digit, as in Qwen2
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(codes), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_TOKEN, pad_token=POINT_TOKEN,
                                   bos_token=START_TOKEN, padding_side="right", clean_up_tokenization_spaces=False)


def tokenizer_corpus(data: dict, n: int = 20_000) -> list[str]:
    """Programs to train the tokenizer on: the first ``n`` training programs (normalized, as the
    model will write them)."""
    return list(data["codes"][:n])


def encode_program(tokenizer, code: str) -> list[int]:
    """``[<|im_start|>] + tokens(code) + [<|endoftext|>]``: the part of a sequence after the points."""
    ids = tokenizer(code, add_special_tokens=False)["input_ids"]
    return [tokenizer.convert_tokens_to_ids(START_TOKEN)] + ids + [tokenizer.convert_tokens_to_ids(END_TOKEN)]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def mini_config(vocab_size: int, hidden_size: int = 256, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                intermediate_size: int = 768):
    """A few-layer Qwen2 config (tied embeddings, RoPE) for the mini model; ids follow ``SPECIAL_TOKENS``."""
    return Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       bos_token_id=1, eos_token_id=0, pad_token_id=2)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def program_batch(tokenizer, programs: list[list[int]], clouds, noise: bool = False, generator=None) -> dict:
    """Right-padded batch of ``(256 points) + [<|im_start|>] + code + [<|endoftext|>]`` with code-only labels."""
    pad = tokenizer.convert_tokens_to_ids(POINT_TOKEN)
    n = clouds.shape[1]
    width = n + max(len(p) for p in programs)
    batch = len(programs)
    input_ids = torch.full((batch, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    attention_mask[:, :n] = -1
    for i, program in enumerate(programs):
        ids = torch.tensor(program)
        input_ids[i, n:n + len(ids)] = ids
        attention_mask[i, n:n + len(ids)] = 1
        labels[i, n + 1:n + len(ids)] = ids[1:]
    points = torch.as_tensor(np.asarray(clouds), dtype=torch.float32).clone()
    if noise:
        noisy = torch.rand(batch, generator=generator) < NOISE_P
        points[noisy] += NOISE_STD * torch.randn(points[noisy].shape, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "point_cloud": points}


def batches(lengths, batch_size: int, rng: random.Random):
    """Index batches for one epoch: shuffled, then grouped by length inside pools of 8 batches (less padding)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = 8 * batch_size
    out = []
    for i in range(0, len(order), pool):
        part = sorted(order[i:i + pool], key=lambda j: lengths[j])
        out += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------------------
# Training: the recipe for cadlab.train.loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainSettings(LoopSettings):
    """Everything a mini CAD-Recode run depends on (the loop's settings, and these)."""
    minutes: float = setting(80.0, "wall-clock budget of this run, in minutes")
    lr: float = setting(2e-3, "peak learning rate")
    warmup: int = setting(40, "linear warm-up over this many steps of the run")
    batch_size: int = setting(16, "programs per step")
    hidden_size: int = setting(256, "a new model's hidden size")
    layers: int = setting(4, "a new model's decoder layers")
    intermediate_size: int = setting(768, "a new model's MLP width")
    heads: int = setting(4, "a new model's attention heads")
    kv_heads: int = setting(2, "a new model's key/value heads (GQA)")
    min_chunks: int = setting(4, f"build at least this many chunks of {CHUNK} training programs")
    max_chunks: int = setting(10_000, "use at most this many chunks")

    def __post_init__(self):
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise ValueError(f"--hidden-size {self.hidden_size} must be --heads {self.heads} times an even head "
                             "size (RoPE turns pairs of dimensions): e.g. --hidden-size 256 --heads 4")
        if self.heads % self.kv_heads:
            raise ValueError(f"--heads {self.heads} must be a multiple of --kv-heads {self.kv_heads} (each key/value "
                             "head serves a group of query heads): e.g. --heads 4 --kv-heads 2")
        if self.max_chunks < self.min_chunks:
            raise ValueError(f"--max-chunks {self.max_chunks} is below --min-chunks {self.min_chunks}: "
                             "raise --max-chunks or lower --min-chunks")


def draw_curves(ax, log: dict) -> None:
    """Training loss (per logged step, and smoothed) and held-out loss against steps, log scale, on ``ax``."""
    train = log.get("train", [])
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="train (per step)")
        k = max(1, len(losses) // 40)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"train (mean of {k})")
    val = log.get("val", [])
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="held-out")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step")
    ax.set_ylabel("code-token cross-entropy (nats)")
    ax.set_title("mini CAD-Recode training")
    ax.legend()


@torch.no_grad()
def loss_report(model, tokenizer, programs, clouds, batch_size: int = 16) -> dict:
    """Held-out code-token cross-entropy (``TokenLoss``): all tokens, digit tokens, syntax (non-digit)
    tokens, and all tokens again with each program paired with *another* example's cloud (a
    derangement). If the model reads the points, the shuffled loss is clearly higher than the true one."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    perm = list(range(len(programs)))
    if len(perm) > 1:
        perm = perm[1:] + perm[:1]                    # each program gets its neighbour's cloud
    true, shuffled = TokenLoss(tokenizer), TokenLoss(tokenizer)
    for i in range(0, len(programs), batch_size):
        in_order = list(range(i, min(i + batch_size, len(programs))))
        for loss, order in ((true, in_order), (shuffled, perm[i:i + batch_size])):
            batch = program_batch(tokenizer, programs[i:i + batch_size], clouds[order])
            logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits
            loss.add(logits, batch["labels"])
    model.train(was_training)
    return {"loss": round(true.mean("all"), 5), "digits": round(true.mean("digits"), 5),
            "syntax": round(true.mean("other"), 5), "shuffled": round(shuffled.mean("all"), 5)}


class CADRecodeRecipe:
    """The mini CAD-Recode for ``cadlab.train.loop``: batches of programs with their clouds.

    An epoch is every training program once, shuffled and grouped by length (``batches``); the
    batch of global step ``s`` is batch ``s mod n`` of epoch ``s // n`` (n batches per epoch), and its
    point noise is drawn from a generator seeded by ``s``: the data of a step is a function of the
    step, so a resumed run sees what an uninterrupted one would have seen."""
    name = "mini CAD-Recode"

    def __init__(self, settings: TrainSettings, data: dict, val: dict):
        self.settings, self.data, self.val = settings, data, val
        self.tokenizer = None
        self._epochs = {}

    def can_continue(self, folder: Path) -> bool:
        """Whether ``folder`` holds a mini CAD-Recode of the shape the settings ask for."""
        config_path = Path(folder) / "config.json"
        if not config_path.exists() or not (Path(folder) / "model.safetensors").exists():
            return False
        config = json.loads(config_path.read_text())
        s = self.settings
        return (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("intermediate_size")) == \
            (s.hidden_size, s.layers, s.intermediate_size)

    def load_model(self, folder: Path) -> CADRecode:
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        return self._ends(CADRecode.from_pretrained(folder))

    def new_model(self) -> CADRecode:
        s = self.settings
        self.tokenizer = build_tokenizer(tokenizer_corpus(self.data))
        return self._ends(CADRecode(mini_config(len(self.tokenizer), s.hidden_size, s.layers, s.heads, s.kv_heads,
                                                s.intermediate_size)))

    def _ends(self, model: CADRecode) -> CADRecode:
        """The special tokens in the generation config, so the saved model decodes on its own."""
        model.generation_config.pad_token_id = self.tokenizer.convert_tokens_to_ids(POINT_TOKEN)
        model.generation_config.eos_token_id = self.tokenizer.convert_tokens_to_ids(END_TOKEN)
        model.generation_config.bos_token_id = self.tokenizer.convert_tokens_to_ids(START_TOKEN)
        return model

    def optimizer(self, model) -> torch.optim.Optimizer:
        groups = loop.no_weight_decay_groups(model.named_parameters(), self.settings.lr, weight_decay=0.05)
        return torch.optim.AdamW(groups, lr=self.settings.lr, betas=(0.9, 0.98))

    def config(self, model) -> dict:
        return dict(params=sum(p.numel() for p in model.parameters()), hidden_size=model.config.hidden_size,
                    layers=model.config.num_hidden_layers, vocab_size=len(self.tokenizer), noise_std=NOISE_STD,
                    noise_p=NOISE_P, train_programs=len(self.data["codes"]))

    def _programs(self) -> list[list[int]]:
        if "programs" not in self._epochs:
            self._epochs["programs"] = [encode_program(self.tokenizer, c) for c in self.data["codes"]]
        return self._epochs["programs"]

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epochs:
            rng = random.Random(self.settings.seed * 1000 + epoch)
            self._epochs[epoch] = batches([len(p) for p in self._programs()], self.settings.batch_size, rng)
        return self._epochs[epoch]

    def step(self, model, step: int) -> dict:
        programs = self._programs()
        n = len(self._epoch(0))
        epoch = step // n
        index = self._epoch(epoch)[step % n]
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + step)
        batch = program_batch(self.tokenizer, [programs[i] for i in index], self.data["points"][index], noise=True,
                              generator=generator)
        loss = model(**{k: v.to(self.device) for k, v in batch.items()}).loss
        loss.backward()
        return {"loss": round(loss.item(), 5), "tokens": int(batch["input_ids"].numel()), "epoch": epoch}

    def held_out(self, model) -> dict:
        programs = [encode_program(self.tokenizer, c) for c in self.val["codes"]]
        return loss_report(model, self.tokenizer, programs, np.asarray(self.val["points"]))

    def save(self, model, folder: Path, log: dict, shipped: bool) -> None:
        """Model (safetensors), config, generation config and tokenizer; shipped, also the log and curves."""
        loop.save_pretrained(model, self.tokenizer, folder, log, shipped, draw_curves)


def train(run_dir: Path = RUN_DIR, out_dir: Path = WEIGHTS_DIR, settings: TrainSettings | None = None,
          data: dict | None = None, val: dict | None = None, progress: bool = True) -> dict:
    """Train (or resume) a mini CAD-Recode with ``cadlab.train.loop``; returns the log. ``data`` and
    ``val`` override the cached training chunks and the held-out programs (tests)."""
    settings = settings or TrainSettings()
    if data is None:
        data = train_data(min_chunks=settings.min_chunks, max_chunks=settings.max_chunks, progress=progress)
    if val is None:
        val = held_out_set(progress=progress)
        val = {"codes": val["codes"][:48], "points": val["points"][:48]}   # the validation-loss subset
    return loop.train(CADRecodeRecipe(settings, data, val), run_dir, out_dir, settings, progress=progress)


# --------------------------------------------------------------------------------------------
# Measure before you scale: the same budget, one change at a time
# --------------------------------------------------------------------------------------------
ABLATIONS = {                   # name -> what differs from the shipped run's settings
    "as shipped (hidden 256, 4 layers, batch 16)": {},
    "smaller: hidden 192, 3 layers": {"hidden_size": 192, "layers": 3, "intermediate_size": 576},
    "larger: hidden 384, 6 layers": {"hidden_size": 384, "layers": 6, "intermediate_size": 1152},
    "batch 8": {"batch_size": 8},
    "batch 32": {"batch_size": 32},
    "peak lr x2 (3e-3)": {"lr": 3e-3},
}
ABLATION_DIR = RUN_DIR.parent / "mini-cadrecode-ablations"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def ablate(minutes: float = 12.0, names=None, chunks: int = 8, n_shapes: int = 40, root: Path = ABLATION_DIR,
           out_dir: Path = WEIGHTS_DIR, progress: bool = True) -> list[dict]:
    """Train each of ``ABLATIONS`` (or those in ``names``) from scratch for the same ``minutes`` of
    steps on the same programs (the first ``chunks`` cached chunks, fixed for the whole run), then
    record its held-out losses (all tokens, digits, syntax, shuffled clouds) and its greedy IoU on the
    first ``n_shapes`` held-out shapes. The base settings are the shipped run's own (``log["runs"][0]``).

    A finished row is kept in ``root/<name>/result.json``, so a rerun skips it and two processes can
    share the list; every finished row (in ``ABLATIONS`` order) is then copied into the shipped log as
    ``log["ablations"]``."""
    log_path = Path(out_dir) / "training_log.json"
    base = json.loads(log_path.read_text())["runs"][0]["settings"]
    data = train_data(min_chunks=chunks, max_chunks=chunks, progress=progress)
    test = held_out_set(progress=progress)
    truths = [run_cadquery(code).mesh for code in test["codes"][:n_shapes]]
    for name in names or ABLATIONS:
        folder = Path(root) / _slug(name)
        if (folder / "result.json").exists():
            continue
        settings = TrainSettings(**{**base, **ABLATIONS[name], "minutes": minutes, "from_shipped": False,
                                    "max_steps": None, "min_chunks": chunks, "max_chunks": chunks})
        log = train(folder / "run", folder / "model", settings, data=data, progress=progress)
        model, tokenizer = load_cadrecode(folder / "model")
        greedy = evaluate_set(model, tokenizer, truths, test["points"][:n_shapes], samples=1, fit=False,
                              progress=progress)["greedy"]
        run = log["runs"][-1]
        row = {"name": name, "changes": ABLATIONS[name], "params": log["config"]["params"], "minutes": minutes,
               "steps": run["steps"], "programs_seen": run["steps"] * settings.batch_size,
               "train_programs": len(data["codes"]), "torch_threads": run["torch_threads"],
               "val": log["val"][-1], "greedy": greedy}
        (folder / "result.json").write_text(json.dumps(row, indent=1))
    rows = [json.loads(p.read_text()) for name in ABLATIONS
            if (p := Path(root) / _slug(name) / "result.json").exists()]
    shipped = json.loads(log_path.read_text())
    shipped["ablations"] = rows
    log_path.write_text(json.dumps(shipped, indent=1))
    return rows


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def evaluate_set(model, tokenizer, truths, clouds=None, samples: int = 8, fit: bool = True,
                 fit_seconds: float = 5.0, names=None, truth_codes=None, progress: bool = True) -> dict:
    """Run ``cadlab.cad.reconstruct.reconstruct`` (the course's one pipeline) on every true solid and score
    each stage against the truth: ``greedy`` (the pool's first program), ``best_of_k`` (chosen by
    Chamfer distance to the input cloud, no ground truth) and ``fit`` (its numbers fitted).
    Returns a summary per stage, per-shape rows and seconds per shape; with the true programs
    (``truth_codes``, in the training programs' form) also ``anatomy``: ``program_errors`` of the greedy
    and the fitted programs (right plane, right kind of part, right skeleton, numbers off by how much)."""
    rows = []
    for i, truth in enumerate(tqdm(truths, desc="reconstruct + score", disable=not progress)):
        rec = reconstruct(truth, model, tokenizer, samples=samples, fit=fit, fit_seconds=fit_seconds,
                          points=None if clouds is None else clouds[i])
        row = {"name": None if names is None else names[i], "seconds": rec.seconds,
               "generate_seconds": rec.generate_seconds, "greedy": score_against_truth(rec.greedy, truth),
               "greedy_code": rec.greedy.code}
        if truth_codes is not None:
            row["truth_code"] = truth_codes[i]
        if samples > 1:
            row["best_of_k"] = score_against_truth(rec.candidates[rec.best] if rec.best is not None else None, truth)
            row["best_source"] = None if rec.best is None else rec.candidates[rec.best].source
        if fit:
            row["fit"] = score_against_truth(rec.final if rec.ok else None, truth)
            row["fit_code"] = rec.final.code
            row["fit_evaluations"] = rec.fit_evaluations
        rows.append(row)
    stages = ["greedy"] + (["best_of_k"] if samples > 1 else []) + (["fit"] if fit else [])
    result = {"samples": samples, "fit_numbers": fit, "fit_seconds": fit_seconds,
              **{stage: summarize_stage([r[stage] for r in rows]) for stage in stages},
              "seconds_per_shape": {"median": float(np.median([r["seconds"] for r in rows])),
                                    "max": float(np.max([r["seconds"] for r in rows]))}}
    if truth_codes is not None:
        result["anatomy"] = {stage: program_errors([{"code": r[f"{stage}_code"], "truth_code": r["truth_code"]}
                                                   for r in rows]) for stage in ("greedy", "fit") if stage in stages}
    return {**result, "rows": rows}


def evaluate_baselines(truths, clouds, library, names=None, progress: bool = True) -> dict:
    """The two model-free reconstructions of ``cadlab.cad.baselines`` on every true solid, scored as
    ``evaluate_set`` scores the model: ``bounding_box`` (the box spanning the cloud) and ``retrieval``
    (the library's training program whose cloud is nearest to the input cloud)."""
    rows = []
    for i, truth in enumerate(tqdm(truths, desc="baselines", disable=not progress)):
        cloud = clouds[i]
        box = score_program(bounding_box_program(cloud), cloud, "bounding box")
        seed, code, distance = library.nearest(cloud)[0]
        retrieved = score_program(code, cloud, "retrieval")
        rows.append({"name": None if names is None else names[i],
                     "bounding_box": score_against_truth(box, truth), "retrieval": score_against_truth(retrieved, truth),
                     "retrieved_seed": seed, "retrieval_cloud_cd_x1000": distance * CD_SCALE})
    return {"library_programs": len(library),
            **{stage: summarize_stage([r[stage] for r in rows]) for stage in ("bounding_box", "retrieval")},
            "rows": rows}


def evaluate_pool(model, tokenizer, truths, clouds, samples: int = 8, names=None, progress: bool = True) -> dict:
    """Every program of the pool (greedy + ``samples`` - 1 sampled, as ``reconstruct`` draws them, no fit)
    scored both against the input cloud (what a user has) and against the truth (what a benchmark has),
    so that a summary can be counted either way (``count_pool``)."""
    rows = []
    for i, truth in enumerate(tqdm(truths, desc="pool vs truth", disable=not progress)):
        rec = reconstruct(truth, model, tokenizer, samples=samples, fit=False, points=clouds[i])
        rows.append({"name": None if names is None else names[i],
                     "pool": [None if c.score is None else {"cloud_cd": c.score, **(score_against_truth(c, truth) or {})}
                              for c in rec.candidates]})
    return {"samples": samples, **count_pool(rows), "rows": rows}


def count_pool(rows, ks=(1, 8)) -> dict:
    """Mean IoU of the first k programs of each pool, counted two ways:

    * ``by_cloud_invalid_as_0`` (the course): the program nearest to the input cloud is kept; a shape
      with no valid program scores 0; the mean is over all shapes.
    * ``by_truth_valid_only`` (the cadrille evaluation script): the program with the highest IoU
      against the true solid is kept; shapes with no valid program are left out of the mean (their
      share is reported as invalid)."""
    out = {}
    for k in ks:
        by_cloud, by_truth = [], []
        for row in rows:
            valid = [c for c in row["pool"][:k] if c is not None and "iou" in c]
            by_cloud.append(min(valid, key=lambda c: c["cloud_cd"])["iou"] if valid else 0.0)
            if valid:
                by_truth.append(max(c["iou"] for c in valid))
        out[f"k{k}"] = {"by_cloud_invalid_as_0": float(np.mean(by_cloud)) if by_cloud else None,
                        "by_truth_valid_only": float(np.mean(by_truth)) if by_truth else None,
                        "invalid_ratio": 1 - len(by_truth) / len(rows) if rows else None}
    return out


EVAL_PARTS = ("model", "baselines", "pool")


def evaluate(model_dir=WEIGHTS_DIR, n_shapes: int | None = None, pipeline_shapes: int | None = None,
             samples: int = 8, fit_seconds: float = 5.0, progress: bool = True, parts=EVAL_PARTS,
             library_path=None) -> dict:
    """Held-out metrics into the log: (a) the synthetic held-out set, greedy on ``n_shapes`` (default
    all) and the whole pipeline (best of ``samples`` + fit) on the first ``pipeline_shapes``; (b) the
    hand-written workshop parts, the same three stages. ``parts`` chooses what runs: ``model`` (a, b),
    ``baselines`` (``evaluate_baselines`` on both sets) and ``pool`` (``evaluate_pool`` on both sets);
    what is not run keeps its earlier entry in the log. Every program runs in the sandbox."""
    model, tokenizer = load_cadrecode(model_dir)
    test = held_out_set(progress=progress)
    n = len(test["codes"]) if n_shapes is None else min(n_shapes, len(test["codes"]))
    truths = [run_cadquery(code).mesh for code in test["codes"][:n]]
    clouds, names = test["points"][:n], test["seeds"][:n]
    parts_by_name = workshop_parts()
    shop_truths = [run_cadquery(code).mesh for code in parts_by_name.values()]
    shop_clouds = [mesh_to_point_cloud(mesh, n_points=256, seed=0) for mesh in shop_truths]   # reconstruct's input
    log_path = Path(model_dir) / "training_log.json"
    result = (json.loads(log_path.read_text()) if log_path.exists() else {}).get("eval", {})
    result.update({"held_out_seeds": [TEST_START, TEST_START + TEST_SEEDS - 1], "torch_threads": torch.get_num_threads(),
                   "frame": "papers' frame: each solid by its own bounding box into a unit cube; Chamfer with 8192 "
                            "surface samples each, squared distances, both directions summed, x1000"})

    def save_result():
        log = json.loads(log_path.read_text()) if log_path.exists() else {}
        log["eval"] = result
        log_path.write_text(json.dumps(log, indent=1))

    if "model" in parts:
        result["held_out_greedy"] = evaluate_set(model, tokenizer, truths, clouds, samples=1, fit=False,
                                                 names=names, truth_codes=test["codes"][:n], progress=progress)
        save_result()                                # greedy results are kept even if the rest is cut short
        m = n if pipeline_shapes is None else min(pipeline_shapes, n)
        if m:
            result["held_out_pipeline"] = evaluate_set(model, tokenizer, truths[:m], clouds[:m], samples=samples,
                                                       fit=True, fit_seconds=fit_seconds, names=names[:m],
                                                       truth_codes=test["codes"][:m], progress=progress)
            save_result()
        if parts_by_name:
            result["workshop_parts"] = evaluate_set(model, tokenizer, shop_truths, samples=samples, fit=True,
                                                    fit_seconds=fit_seconds, names=list(parts_by_name),
                                                    progress=progress)
            save_result()
    if "baselines" in parts:
        library = load_library(library_path) if library_path else load_library()
        result["baselines"] = {"held_out": evaluate_baselines(truths, clouds, library, names, progress),
                               "workshop_parts": evaluate_baselines(shop_truths, shop_clouds, library,
                                                                    list(parts_by_name), progress)}
        save_result()
    if "pool" in parts:
        result["pool"] = {"held_out": evaluate_pool(model, tokenizer, truths, clouds, samples, names, progress),
                          "workshop_parts": evaluate_pool(model, tokenizer, shop_truths, shop_clouds, samples,
                                                          list(parts_by_name), progress)}
        save_result()
    return result


def build_library(path=None, max_chunks: int = 10_000, progress: bool = True) -> RetrievalLibrary:
    """The retrieval baseline's library from the training programs in the cache (every cached chunk,
    at most ``max_chunks``), written to ``path`` (default: the shipped file)."""
    data = train_data(min_chunks=1, max_chunks=max_chunks, progress=progress)
    library = RetrievalLibrary.from_data(data)
    library.save(path) if path else library.save()
    return library


def print_eval(result: dict) -> None:
    """One line per set and stage: mean IoU, median CD x1000, invalid ratio, time per shape; then the
    baselines and the pool counted both ways, where the log has them."""
    for set_name in ("held_out_greedy", "held_out_pipeline", "workshop_parts"):
        if set_name not in result:
            continue
        r = result[set_name]
        for stage in ("greedy", "best_of_k", "fit"):
            if isinstance(r.get(stage), dict):
                st = r[stage]
                print(f"{set_name:18s} {stage:9s}: shapes {st['shapes']}, mean IoU {st['mean_iou']:.3f}, median CD "
                      f"x1000 {st['median_cd_x1000']:.3f}, invalid {st['invalid_ratio']:.3f}")
        print(f"{set_name:18s} seconds per shape: median {r['seconds_per_shape']['median']:.2f}, "
              f"max {r['seconds_per_shape']['max']:.2f}")
    for set_name, r in result.get("baselines", {}).items():
        for stage in ("bounding_box", "retrieval"):
            st = r[stage]
            print(f"{set_name:18s} {stage:12s}: shapes {st['shapes']}, mean IoU {st['mean_iou']:.3f}, median CD "
                  f"x1000 {st['median_cd_x1000']:.3f} (library: {r['library_programs']:,} training programs)")
    for set_name, r in result.get("pool", {}).items():
        for k, counted in r.items():
            if k.startswith("k"):
                print(f"{set_name:18s} first {k[1:]} of the pool: picked by cloud, invalid as 0 "
                      f"{counted['by_cloud_invalid_as_0']:.3f}; picked by truth, valid only "
                      f"{counted['by_truth_valid_only']:.3f} (invalid {counted['invalid_ratio']:.3f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab train-cadrecode", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", action="store_true", help="evaluate the model in --out on the held-out set")
    parser.add_argument("--eval-only", nargs="+", choices=EVAL_PARTS, default=list(EVAL_PARTS), metavar="PART",
                        help=f"--eval: run only these parts of the evaluation ({', '.join(EVAL_PARTS)}); the others "
                             "keep their entries in the log")
    parser.add_argument("--build-library", action="store_true",
                        help="write the retrieval baseline's library (cadlab/data/retrieval_library.npz) from the "
                             "training programs in the cache")
    parser.add_argument("--ablate", nargs="*", metavar="NAME", default=None,
                        help="train the ABLATIONS (all, or the NAMEs given) from scratch for --minutes each, "
                             "on the same --min-chunks chunks, and add the results to the shipped log")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where the resumable training state lives")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the shipped model is written")
    loop.flags(parser, TrainSettings)
    parser.add_argument("--shapes", type=arguments.positive_int, default=None,
                        help="--eval: held-out shapes for greedy (default all)")
    parser.add_argument("--pipeline-shapes", type=arguments.non_negative_int, default=None,
                        help="--eval: held-out shapes for the whole pipeline (default all; 0: none)")
    parser.add_argument("--samples", type=arguments.positive_int, default=8,
                        help="--eval: the pool size of best-of-k (greedy + k-1 sampled)")
    parser.add_argument("--fit-seconds", type=arguments.positive_float, default=5.0,
                        help="--eval: time budget of the fit per shape")
    args = parser.parse_args(argv)
    settings = loop.settings_from(args, TrainSettings, parser)
    if args.eval:
        out = loop.check_model_folder(parser, args.out, "cadrecode", "CAD-Recode checkpoint",
                                      ("config.json", "model.safetensors"), "cadlab train-cadrecode --out FOLDER")
        torch.set_num_threads(settings.threads or 1)
        print_eval(evaluate(out, n_shapes=args.shapes, pipeline_shapes=args.pipeline_shapes,
                            samples=args.samples, fit_seconds=args.fit_seconds, parts=args.eval_only))
        return 0
    if args.build_library:
        library = build_library(max_chunks=settings.max_chunks)
        print(f"{len(library):,} training programs in the retrieval library")
        return 0
    if args.ablate is not None:             # each ablation has its folder under ABLATION_DIR
        unknown = [n for n in args.ablate if n not in ABLATIONS]
        if unknown:
            parser.error(f"unknown ablation {unknown}; choose from {list(ABLATIONS)}")
        if not (WEIGHTS_DIR / "training_log.json").is_file():
            parser.error(f"--ablate starts from the shipped run's settings, but {WEIGHTS_DIR}/training_log.json "
                         "is missing: train the shipped model first")
        arguments.writable_folder(ABLATION_DIR, parser.prog, "--ablate", create=False)
        loop.apply_threads(settings)
        ablate(settings.minutes, args.ablate or None, chunks=settings.min_chunks)
        return 0
    arguments.writable_folder(args.run_dir, parser.prog, "--run-dir", create=False)
    arguments.writable_folder(args.out, parser.prog, "--out", create=False)
    loop.apply_threads(settings)
    train(args.run_dir, args.out, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
