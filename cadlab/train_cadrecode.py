"""Train the course's mini CAD-Recode on synthetic programs, and evaluate it on held-out shapes.

    python -m cadlab.train_cadrecode                 # train (resumes from the last checkpoint)
    python -m cadlab.train_cadrecode --eval          # held-out metrics of the shipped model: greedy,
                                                     # best of 8, + fitted numbers (cadlab.reconstruct)

Data. ``cadlab.synth.build_dataset`` turns seeds into (program, 256-point cloud) pairs. Training
seeds come in chunks of ``CHUNK`` from 0 upwards; the held-out test set is seeds
``TEST_START .. TEST_START + TEST_SEEDS - 1``, far from any training chunk. Training uses every
chunk already in the cache, and looks again at the start of every epoch, so a dataset built in
another process joins the run as it grows.

Tokenizer. A byte-level BPE trained on the programs (``build_tokenizer``). Every digit is split
off before BPE, as Qwen2's own pre-tokenizer does, so ``-148`` is written ``-``, ``1``, ``4``, ``8``
and the merges learn only the fixed syntax (``.finalize().extrude(``). Digits make a number a
short sequence of 10-way choices whose first choice is coarse (is the side above 100?) instead of
one of ~450 unrelated whole-number tokens; a first run with whole-number tokens learned the
programs' prior and barely read the points (held-out loss 2.112 with the true clouds vs 2.131 with
shuffled ones after 1,700 steps). The three Qwen special tokens keep their roles: ``<|im_end|>`` is
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

Mixed precision (``--bf16``, the default): the forward and backward passes run under
``torch.autocast("cpu", dtype=torch.bfloat16)`` -- a CPU with bf16 instructions (AVX512-BF16,
AMX) multiplies bf16 matrices about twice as fast -- while weights, gradients and AdamW's state
stay fp32, so the saved checkpoint is an ordinary fp32 model. The validation loss is computed in fp32.

Optimisation: AdamW, linear warm-up, then a cosine decay driven by the fraction of the wall-time
budget (``--minutes``) used, so a run on a busy CPU still ends with a small learning rate.
Checkpoints (model, optimizer, step, log) are written every few minutes; the model, config,
tokenizer, loss-curve PNG and log JSON also go to ``cadlab/weights/mini-cadrecode``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from cadlab.cadrecode import CADRecode, END_TOKEN, N_POINTS, POINT_TOKEN, START_TOKEN

WEIGHTS_DIR = Path(__file__).parent / "weights" / "mini-cadrecode"
SPECIAL_TOKENS = (END_TOKEN, START_TOKEN, POINT_TOKEN)   # ids 0, 1, 2 in the mini tokenizer
CHUNK = 500                   # training seeds per cached chunk: chunk k = seeds k*CHUNK .. (k+1)*CHUNK-1
TEST_START, TEST_SEEDS = 10_000_000, 240    # held-out seeds: far from every training chunk
RUN_DIR = Path(os.environ.get("CADLAB_CACHE", "~/.cache/cadlab")).expanduser() / "mini-cadrecode-run"
NOISE_STD, NOISE_P = 0.01, 0.5


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def build_tokenizer(codes, vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``codes``, Qwen's three special tokens first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       bos_token_id=1, eos_token_id=0, pad_token_id=2)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def held_out_set(progress: bool = True) -> dict:
    """The held-out shapes (seeds ``TEST_START ..``), built once and cached."""
    from cadlab.synth import build_dataset

    return build_dataset(TEST_SEEDS, start=TEST_START, progress=progress)


def cached_train_chunks(max_chunks: int = 10_000) -> list[int]:
    """Indices k of the training chunks already in the synth cache (consecutive from 0)."""
    from cadlab.synth import DEFAULT_CACHE, _cache_path

    chunks = []
    for k in range(max_chunks):
        if not _cache_path(DEFAULT_CACHE, k * CHUNK, CHUNK, N_POINTS).exists():
            break
        chunks.append(k)
    return chunks


def train_data(min_chunks: int = 1, max_chunks: int = 10_000, progress: bool = True) -> dict:
    """Codes and clouds of every cached training chunk; builds chunks until there are ``min_chunks``."""
    from cadlab.synth import build_dataset

    k = len(cached_train_chunks(max_chunks))
    for j in range(k, min_chunks):
        build_dataset(CHUNK, start=j * CHUNK, progress=progress)
    chunks = [build_dataset(CHUNK, start=j * CHUNK, progress=False) for j in cached_train_chunks(max_chunks)]
    seeds = [s for c in chunks for s in c["seeds"]]
    assert min(seeds) >= 0 and max(seeds) < TEST_START, "training seeds must stay clear of the test seeds"
    return {"codes": [code for c in chunks for code in c["codes"]], "seeds": seeds,
            "points": np.concatenate([c["points"] for c in chunks])}


def collate(tokenizer, programs: list[list[int]], clouds, noise: bool = False, generator=None) -> dict:
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
# Training
# --------------------------------------------------------------------------------------------
def learning_rate(progress: float, step: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``peak/20`` as ``progress`` goes 0 -> 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(max(progress, 0.0), 1.0)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def save_shipped(model, tokenizer, log: dict, out_dir: Path) -> None:
    """Model (safetensors), config, generation config, tokenizer, log JSON and loss PNG into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(POINT_TOKEN)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
    model.generation_config.bos_token_id = tokenizer.convert_tokens_to_ids(START_TOKEN)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=1))
    plot_curves(log, out_dir / "loss_curves.png")


def draw_curves(ax, log: dict) -> None:
    """Training loss (per logged step, and smoothed) and held-out loss against steps, log scale, on ``ax``."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

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


def plot_curves(log: dict, path: Path) -> None:
    """``draw_curves`` into a PNG file (a bare matplotlib ``Figure``: no pyplot, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    draw_curves(fig.subplots(), log)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


@dataclass
class TrainSettings:
    """Everything a training run depends on. ``minutes`` is the wall-time budget of this run's
    steps; the cosine schedule is driven by the fraction of it used."""
    minutes: float = 80.0
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 40
    hidden_size: int = 256
    layers: int = 4
    intermediate_size: int = 768
    heads: int = 4
    kv_heads: int = 2
    bf16: bool = True               # bf16 autocast for forward/backward; weights, grads, AdamW state fp32
    min_chunks: int = 1             # build at least this many chunks of CHUNK programs before training
    max_chunks: int = 10_000
    checkpoint_minutes: float = 5.0
    seed: int = 0
    max_steps: int | None = None    # tests: a step budget instead of the wall-time budget
    from_shipped: bool = True       # with no run state: start from the shipped model's weights (if compatible)


def _tokens_by_kind(tokenizer, labels: torch.Tensor) -> torch.Tensor:
    """A bool mask, True where a label is a digit token (the numbers the points must determine)."""
    digits = {i for t, i in tokenizer.get_vocab().items() if t.isdigit()}
    return torch.isin(labels, torch.tensor(sorted(digits))) if digits else torch.zeros_like(labels, dtype=torch.bool)


@torch.no_grad()
def loss_report(model, tokenizer, programs, clouds, batch_size: int = 16, shuffle_seed: int = 0) -> dict:
    """Held-out code-token cross-entropy: all tokens, digit tokens, syntax (non-digit) tokens, and all
    tokens again with each program paired with *another* example's cloud (a derangement). If the model
    reads the points, the shuffled loss is clearly higher than the true one."""
    was_training = model.training
    model.eval()
    perm = list(range(len(programs)))
    if len(perm) > 1:
        perm = perm[1:] + perm[:1]                    # each program gets its neighbour's cloud
    sums = {"loss": 0.0, "digits": 0.0, "syntax": 0.0, "shuffled": 0.0}
    counts = {k: 0 for k in sums}
    for i in range(0, len(programs), batch_size):
        for key, order in (("loss", list(range(i, min(i + batch_size, len(programs))))),
                           ("shuffled", perm[i:i + batch_size])):
            batch = collate(tokenizer, programs[i:i + batch_size], clouds[order])
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                    reduction="none")
            valid = labels != -100
            sums[key] += float(nll[valid].sum())
            counts[key] += int(valid.sum())
            if key == "loss":
                digit = _tokens_by_kind(tokenizer, labels) & valid
                sums["digits"] += float(nll[digit].sum())
                counts["digits"] += int(digit.sum())
                sums["syntax"] += float(nll[valid & ~digit].sum())
                counts["syntax"] += int((valid & ~digit).sum())
    model.train(was_training)
    return {k: round(sums[k] / max(counts[k], 1), 5) for k in sums}


def _compatible(model_dir: Path, settings: TrainSettings, tokenizer_vocab: int | None = None) -> bool:
    """Whether ``model_dir`` holds a mini CAD-Recode of the shape ``settings`` ask for."""
    config_path = Path(model_dir) / "config.json"
    if not config_path.exists() or not (Path(model_dir) / "model.safetensors").exists():
        return False
    config = json.loads(config_path.read_text())
    return (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("intermediate_size")) == \
        (settings.hidden_size, settings.layers, settings.intermediate_size)


def train(run_dir: Path = RUN_DIR, out_dir: Path = WEIGHTS_DIR, settings: TrainSettings | None = None,
          data: dict | None = None, val: dict | None = None, progress: bool = True) -> dict:
    """Train (or resume) a mini CAD-Recode; returns the log. ``data``/``val`` override the synth chunks (tests).

    Resuming: if ``run_dir`` holds a run state (model, optimizer, step), the run continues exactly.
    Otherwise, with ``settings.from_shipped``, training starts from the shipped model in ``out_dir``
    (its weights, tokenizer and log; a fresh optimizer), so training time adds up over runs and
    sessions: ``log["runs"]`` lists every run and ``log["total_seconds"]`` their sum.
    """
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast

    settings = settings or TrainSettings()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    if data is None:
        data = train_data(min_chunks=settings.min_chunks, max_chunks=settings.max_chunks, progress=progress)
    if val is None:
        val = held_out_set(progress=progress)
        val = {"codes": val["codes"][:48], "points": val["points"][:48]}   # the validation-loss subset

    state_path = run_dir / "state.pt"
    if state_path.exists() and (run_dir / "model.safetensors").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(run_dir)
        model = CADRecode.from_pretrained(run_dir)
        state = torch.load(state_path, weights_only=True)
        print(f"resuming the run in {run_dir} at step {state['step']}")
    elif settings.from_shipped and _compatible(out_dir, settings):
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir)
        model = CADRecode.from_pretrained(out_dir)
        log = json.loads((out_dir / "training_log.json").read_text())
        log.setdefault("runs", [])
        state = {"step": log["train"][-1]["step"] if log.get("train") else 0, "seconds": 0.0,
                 "tokens": log["train"][-1]["tokens"] if log.get("train") else 0, "epoch": 0, "log": log}
        print(f"starting from the shipped model in {out_dir} (step {state['step']}; a fresh optimizer)")
        tokenizer.save_pretrained(run_dir)
    else:
        tokenizer = build_tokenizer(tokenizer_corpus(data))
        tokenizer.save_pretrained(run_dir)
        model = CADRecode(mini_config(len(tokenizer), settings.hidden_size, settings.layers, settings.heads,
                                      settings.kv_heads, settings.intermediate_size))
        state = {"step": 0, "seconds": 0.0, "tokens": 0, "epoch": 0,
                 "log": {"train": [], "val": [], "config": {}, "eval": None, "runs": []}}
    log = state["log"]
    if "run_index" not in state:                       # a new run (not a resumed one): register it
        log["runs"].append({"started_at_step": state["step"], "seconds": 0.0, "steps": 0,
                            "settings": asdict(settings), "torch_threads": torch.get_num_threads()})
        state["run_index"] = len(log["runs"]) - 1
    run = log["runs"][state["run_index"]]
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=settings.lr, betas=(0.9, 0.98))
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    log["config"].update(dict(params=sum(p.numel() for p in model.parameters()), hidden_size=model.config.hidden_size,
                              layers=model.config.num_hidden_layers, vocab_size=len(tokenizer),
                              noise_std=NOISE_STD, noise_p=NOISE_P))
    val_programs = [encode_program(tokenizer, c) for c in val["codes"]]
    val_points = np.asarray(val["points"])
    seconds_before = sum(r["seconds"] for r in log["runs"]) - run["seconds"]

    def checkpoint():
        log["val"].append({"step": state["step"], "seconds": round(seconds_before + run["seconds"], 1),
                           **loss_report(model, tokenizer, val_programs, val_points)})
        log["total_seconds"] = round(sum(r["seconds"] for r in log["runs"]), 1)
        model.save_pretrained(run_dir)
        state.update(optimizer=optimizer.state_dict(), log=log)
        torch.save(state, state_path)
        save_shipped(model, tokenizer, log, out_dir)

    budget = settings.minutes * 60.0
    bar = tqdm(total=settings.max_steps, desc="train mini CAD-Recode", disable=not progress)
    last_ckpt = time.time()
    done = False
    while not done:
        if run["steps"] > 0 and data.get("refresh", True) and "seeds" in data:
            fresh = train_data(max_chunks=settings.max_chunks, progress=False)   # chunks built meanwhile join in
            if len(fresh["codes"]) > len(data["codes"]):
                data = fresh
        programs = [encode_program(tokenizer, c) for c in data["codes"]]
        rng = random.Random(settings.seed * 1000 + state["epoch"])
        generator = torch.Generator().manual_seed(settings.seed * 1000 + state["epoch"])
        run["train_programs_last_epoch"] = len(programs)
        for index in batches([len(p) for p in programs], settings.batch_size, rng):
            t0 = time.time()
            progress_now = run["seconds"] / budget if settings.max_steps is None else run["steps"] / settings.max_steps
            lr_now = learning_rate(progress_now, run["steps"], settings.lr, settings.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            batch = collate(tokenizer, [programs[i] for i in index], data["points"][index], noise=True,
                            generator=generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.time() - t0
            state["step"] += 1
            run["steps"] += 1
            run["seconds"] += dt
            state["tokens"] += int(batch["input_ids"].numel())
            log["train"].append({"step": state["step"], "loss": round(loss.item(), 5), "lr": lr_now,
                                 "seconds": round(seconds_before + run["seconds"], 1), "tokens": state["tokens"],
                                 "epoch": state["epoch"]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{batch['input_ids'].numel() / dt:.0f}",
                            n=len(programs))
            done = (run["seconds"] >= budget) if settings.max_steps is None else run["steps"] >= settings.max_steps
            if done or time.time() - last_ckpt > settings.checkpoint_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
            if done:
                break
        else:
            state["epoch"] += 1
    bar.close()
    return log


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
    from cadlab.cadexec import run_cadquery
    from cadlab.cadrecode import load_cadrecode

    log_path = Path(out_dir) / "training_log.json"
    base = json.loads(log_path.read_text())["runs"][0]["settings"]
    data = train_data(min_chunks=chunks, max_chunks=chunks, progress=progress)
    data["refresh"] = False
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
def score_against_truth(candidate, truth) -> dict | None:
    """IoU and Chamfer x1000 of a pool candidate against the true solid, in the papers' frame (each
    solid by its own bounding box into a unit cube, 8192 surface samples); None if it is invalid."""
    from cadlab.metrics import CD_SCALE, chamfer_distance, iou

    if candidate is None or candidate.mesh is None:
        return None
    try:
        return {"iou": float(iou(truth, candidate.mesh)), "cd_x1000": float(chamfer_distance(truth, candidate.mesh) * CD_SCALE)}
    except Exception:                 # noqa: BLE001 - a non-manifold result counts as invalid
        return None


def summarize_stage(scores) -> dict:
    """Mean IoU (valid only, and with invalid as 0), median / mean Chamfer x1000 and the invalid ratio."""
    valid = [s for s in scores if s is not None]
    return {
        "shapes": len(scores),
        "mean_iou": float(np.mean([s["iou"] for s in valid])) if valid else None,
        "mean_iou_invalid_as_0": float(np.sum([s["iou"] for s in valid]) / len(scores)) if scores else None,
        "median_cd_x1000": float(np.median([s["cd_x1000"] for s in valid])) if valid else None,
        "mean_cd_x1000": float(np.mean([s["cd_x1000"] for s in valid])) if valid else None,
        "invalid_ratio": 1 - len(valid) / len(scores) if scores else None,
    }


def evaluate_set(model, tokenizer, truths, clouds=None, samples: int = 8, fit: bool = True,
                 fit_seconds: float = 5.0, names=None, truth_codes=None, progress: bool = True) -> dict:
    """Run ``cadlab.reconstruct.reconstruct`` (the course's one pipeline) on every true solid and score
    each stage against the truth: ``greedy`` (the pool's first program), ``best_of_k`` (chosen by
    Chamfer distance to the input cloud, no ground truth) and ``fit`` (its numbers fitted).
    Returns a summary per stage, per-shape rows and seconds per shape; with the true programs
    (``truth_codes``, in the training programs' form) also ``anatomy``: ``error_anatomy`` of the greedy
    and the fitted programs (right plane, right kind of part, right skeleton, numbers off by how much)."""
    from tqdm.auto import tqdm

    from cadlab.reconstruct import error_anatomy, reconstruct

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
        result["anatomy"] = {stage: error_anatomy([{"code": r[f"{stage}_code"], "truth_code": r["truth_code"]}
                                                   for r in rows]) for stage in ("greedy", "fit") if stage in stages}
    return {**result, "rows": rows}


def workshop_parts(folder=None) -> dict:
    """The hand-written part programs in ``tests/data/parts`` (name -> code): parts one finds in a workshop,
    written by hand, not drawn from the generator."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent.parent / "tests" / "data" / "parts"
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.py"))}


def evaluate(model_dir=WEIGHTS_DIR, n_shapes: int | None = None, pipeline_shapes: int | None = None,
             samples: int = 8, fit_seconds: float = 5.0, progress: bool = True) -> dict:
    """Held-out metrics into the log: (a) the synthetic held-out set, greedy on ``n_shapes`` (default
    all) and the whole pipeline (best of ``samples`` + fit) on the first ``pipeline_shapes``; (b) the
    hand-written workshop parts, the same three stages. Every program runs in the sandbox."""
    from cadlab.cadexec import run_cadquery
    from cadlab.cadrecode import load_cadrecode

    model, tokenizer = load_cadrecode(model_dir)
    test = held_out_set(progress=progress)
    n = len(test["codes"]) if n_shapes is None else min(n_shapes, len(test["codes"]))
    truths = [run_cadquery(code).mesh for code in test["codes"][:n]]
    result = {"held_out_seeds": [TEST_START, TEST_START + TEST_SEEDS - 1], "torch_threads": torch.get_num_threads(),
              "frame": "papers' frame: each solid by its own bounding box into a unit cube; Chamfer with 8192 "
                       "surface samples each, squared distances, both directions summed, x1000"}
    log_path = Path(model_dir) / "training_log.json"

    def write_log():
        log = json.loads(log_path.read_text()) if log_path.exists() else {}
        log["eval"] = result
        log_path.write_text(json.dumps(log, indent=1))

    result["held_out_greedy"] = evaluate_set(model, tokenizer, truths, test["points"][:n], samples=1, fit=False,
                                             names=test["seeds"][:n], truth_codes=test["codes"][:n], progress=progress)
    write_log()                                  # greedy results are kept even if the rest is cut short
    m = n if pipeline_shapes is None else min(pipeline_shapes, n)
    if m:
        result["held_out_pipeline"] = evaluate_set(model, tokenizer, truths[:m], test["points"][:m], samples=samples,
                                                   fit=True, fit_seconds=fit_seconds, names=test["seeds"][:m],
                                                   truth_codes=test["codes"][:m], progress=progress)
        write_log()
    parts = workshop_parts()
    if parts:
        meshes = [run_cadquery(code).mesh for code in parts.values()]
        result["workshop_parts"] = evaluate_set(model, tokenizer, meshes, samples=samples, fit=True,
                                                fit_seconds=fit_seconds, names=list(parts), progress=progress)
        write_log()
    return result


def print_eval(result: dict) -> None:
    """One line per set and stage: mean IoU, median CD x1000, invalid ratio, time per shape."""
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


def main(argv=None) -> int:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m cadlab.train_cadrecode", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", action="store_true", help="evaluate the model in --out on the held-out set")
    parser.add_argument("--ablate", nargs="*", metavar="NAME", default=None,
                        help="train the ABLATIONS (all, or the NAMEs given) from scratch for --minutes each, "
                             "on the same --min-chunks chunks, and add the results to the shipped log")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where the resumable training state lives")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the shipped model is written")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="wall-time budget of this run's steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="linear warm-up steps")
    parser.add_argument("--hidden", dest="hidden_size", type=int, default=defaults.hidden_size)
    parser.add_argument("--layers", type=int, default=defaults.layers)
    parser.add_argument("--intermediate", dest="intermediate_size", type=int, default=defaults.intermediate_size)
    parser.add_argument("--min-chunks", type=int, default=4, help=f"build at least this many chunks of {CHUNK} programs")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=defaults.bf16,
                        help="train under bf16 autocast (fp32 weights); --no-bf16 for plain fp32")
    parser.add_argument("--from-shipped", action=argparse.BooleanOptionalAction, default=defaults.from_shipped,
                        help="with no run state, start from the shipped model's weights (--no-from-shipped: from scratch)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice; --eval: 1)")
    parser.add_argument("--shapes", type=int, default=None, help="--eval: held-out shapes for greedy (default all)")
    parser.add_argument("--pipeline-shapes", type=int, default=None,
                        help="--eval: held-out shapes for the whole pipeline (default all)")
    parser.add_argument("--samples", type=int, default=8, help="--eval: the pool size of best-of-k (greedy + k-1 sampled)")
    parser.add_argument("--fit-seconds", type=float, default=5.0, help="--eval: time budget of the fit per shape")
    args = parser.parse_args(argv)
    if args.eval:
        torch.set_num_threads(args.threads or 1)
        print_eval(evaluate(args.out, n_shapes=args.shapes, pipeline_shapes=args.pipeline_shapes,
                            samples=args.samples, fit_seconds=args.fit_seconds))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ablate is not None:
        unknown = [n for n in args.ablate if n not in ABLATIONS]
        if unknown:
            parser.error(f"unknown ablation {unknown}; choose from {list(ABLATIONS)}")
        ablate(args.minutes, args.ablate or None, chunks=args.min_chunks)
        return 0
    names = {f.name for f in fields(TrainSettings)}
    settings = TrainSettings(**{k: v for k, v in vars(args).items() if k in names})
    train(args.run_dir, args.out, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
