"""Train the course's mini CAD-Recode on synthetic programs, and evaluate it on held-out shapes.

    python -m cadlab.train_cadrecode                 # train (resumes from the last checkpoint)
    python -m cadlab.train_cadrecode --eval          # held-out metrics of the shipped checkpoint

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
import random
import time
from pathlib import Path

import numpy as np
import torch

from cadlab.cadrecode import CADRecode, END_TOKEN, N_POINTS, POINT_TOKEN, START_TOKEN, extract_code, prepare_inputs

WEIGHTS_DIR = Path(__file__).parent / "weights" / "mini-cadrecode"
SPECIAL_TOKENS = (END_TOKEN, START_TOKEN, POINT_TOKEN)   # ids 0, 1, 2 in the mini tokenizer
CHUNK = 500                   # training seeds per cached chunk: chunk k = seeds k*CHUNK .. (k+1)*CHUNK-1
TEST_START, TEST_SEEDS = 10_000_000, 240
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
def test_set(progress: bool = True) -> dict:
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


@torch.no_grad()
def mean_loss(model, tokenizer, programs, clouds, batch_size: int = 16) -> float:
    """Mean code-token loss (no noise) over a fixed set: the validation curve. Leaves the model's
    train/eval mode as it found it."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(programs), batch_size):
        batch = collate(tokenizer, programs[i:i + batch_size], clouds[i:i + batch_size])
        n_tok = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * n_tok
        count += n_tok
    model.train(was_training)
    return total / count


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


def train(run_dir: Path, out_dir: Path = WEIGHTS_DIR, minutes: float = 80.0, batch_size: int = 16,
          lr: float = 2e-3, warmup: int = 40, max_steps: int | None = None, min_chunks: int = 1,
          max_chunks: int = 10_000, hidden_size: int = 256, layers: int = 4, intermediate_size: int = 768,
          heads: int = 4, kv_heads: int = 2, checkpoint_minutes: float = 5.0, seed: int = 0,
          data: dict | None = None, val: dict | None = None, bf16: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a mini CAD-Recode; returns the log. ``data``/``val`` override the synth chunks (tests)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if data is None:
        data = train_data(min_chunks=min_chunks, max_chunks=max_chunks, progress=progress)
    if val is None:
        val = test_set(progress=progress)
        val = {"codes": val["codes"][:48], "points": val["points"][:48]}   # the validation-loss subset

    state_path = run_dir / "state.pt"
    if (run_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(run_dir)
    else:
        tokenizer = build_tokenizer(tokenizer_corpus(data))
        tokenizer.save_pretrained(run_dir)
    if (run_dir / "model.safetensors").exists() and state_path.exists():
        model = CADRecode.from_pretrained(run_dir)
        state = torch.load(state_path, weights_only=False)
        print(f"resuming from {run_dir} at step {state['step']}")
    else:
        model = CADRecode(mini_config(len(tokenizer), hidden_size, layers, heads, kv_heads, intermediate_size))
        state = {"step": 0, "seconds": 0.0, "tokens": 0, "epoch": 0,
                 "log": {"train": [], "val": [], "config": {}, "eval": None}}
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98))
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    log = state["log"]
    n_params = sum(p.numel() for p in model.parameters())
    log["config"].update(dict(params=n_params, hidden_size=model.config.hidden_size, layers=model.config.num_hidden_layers,
                              vocab_size=len(tokenizer), batch_size=batch_size, lr=lr, warmup=warmup, minutes=minutes,
                              noise_std=NOISE_STD, noise_p=NOISE_P, torch_threads=torch.get_num_threads(),
                              bf16_autocast=bf16))
    val_programs = [encode_program(tokenizer, c) for c in val["codes"]]

    def checkpoint():
        model.save_pretrained(run_dir)
        state.update(optimizer=optimizer.state_dict(), log=log)
        torch.save(state, state_path)
        save_shipped(model, tokenizer, log, out_dir)

    budget = minutes * 60.0
    bar = tqdm(total=max_steps, initial=state["step"], desc="train mini CAD-Recode", disable=not progress)
    last_ckpt = time.time()
    done = False
    while not done:
        if state["epoch"] > 0 and data.get("refresh", True) and "seeds" in data:
            fresh = train_data(max_chunks=max_chunks, progress=False)   # chunks built meanwhile join in
            if len(fresh["codes"]) > len(data["codes"]):
                data = fresh
        programs = [encode_program(tokenizer, c) for c in data["codes"]]
        rng = random.Random(seed * 1000 + state["epoch"])
        generator = torch.Generator().manual_seed(seed * 1000 + state["epoch"])
        log["config"]["train_programs_last_epoch"] = len(programs)
        for index in batches([len(p) for p in programs], batch_size, rng):
            t0 = time.time()
            lr_now = learning_rate(state["seconds"] / budget if max_steps is None else state["step"] / max_steps,
                                   state["step"], lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            batch = collate(tokenizer, [programs[i] for i in index], data["points"][index], noise=True,
                            generator=generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.time() - t0
            state["step"] += 1
            state["seconds"] += dt
            state["tokens"] += int(batch["input_ids"].numel())
            log["train"].append({"step": state["step"], "loss": round(loss.item(), 5), "lr": lr_now,
                                 "seconds": round(state["seconds"], 1), "tokens": state["tokens"],
                                 "epoch": state["epoch"]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{batch['input_ids'].numel() / dt:.0f}",
                            n=len(programs))
            done = (state["seconds"] >= budget) if max_steps is None else state["step"] >= max_steps
            if done or time.time() - last_ckpt > checkpoint_minutes * 60:
                log["val"].append({"step": state["step"], "seconds": round(state["seconds"], 1),
                                   "loss": round(mean_loss(model, tokenizer, val_programs, val["points"]), 5)})
                checkpoint()
                last_ckpt = time.time()
            if done:
                break
        else:
            state["epoch"] += 1
    bar.close()
    return log


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_codes(model, tokenizer, clouds, batch_size: int = 16, max_new_tokens: int = 256,
                   n_samples: int = 1, progress: bool = True, **generate_kwargs) -> list[list[str]]:
    """Programs for each cloud: ``n_samples`` per cloud (greedy unless ``do_sample=True`` is passed)."""
    from tqdm.auto import tqdm

    pad = tokenizer.convert_tokens_to_ids(POINT_TOKEN)
    out = []
    for i in tqdm(range(0, len(clouds), batch_size), desc="generate", disable=not progress):
        inputs = prepare_inputs(np.asarray(clouds[i:i + batch_size]), tokenizer)
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                num_return_sequences=n_samples, **generate_kwargs)
        texts = [extract_code(t) for t in tokenizer.batch_decode(tokens, skip_special_tokens=False)]
        out += [texts[j:j + n_samples] for j in range(0, len(texts), n_samples)]
    return out


def score(codes_per_shape, targets, progress: bool = True) -> dict:
    """Run every candidate in the sandbox; best-of-k Chamfer / IoU against the target meshes."""
    from tqdm.auto import tqdm

    from cadlab.cadexec import run_cadquery
    from cadlab.metrics import CD_SCALE, chamfer_distance, iou

    rows = []
    for codes, target in tqdm(list(zip(codes_per_shape, targets)), desc="execute + score", disable=not progress):
        best_cd, best_iou, kinds = None, None, []
        for code in codes:
            result = run_cadquery(code, timeout=3.0)
            kinds.append(result.kind)
            mesh = result.mesh if result.ok and len(result.mesh.faces) > 2 else None
            if mesh is None:
                continue
            try:
                cd, inter = chamfer_distance(target, mesh) * CD_SCALE, iou(target, mesh)
            except Exception:             # a non-manifold result counts as invalid
                continue
            best_cd = cd if best_cd is None else min(best_cd, cd)
            best_iou = inter if best_iou is None else max(best_iou, inter)
        rows.append({"cd_x1000": best_cd, "iou": best_iou, "kinds": kinds})
    valid = [r for r in rows if r["cd_x1000"] is not None]
    return {
        "shapes": len(rows),
        "mean_iou": float(np.mean([r["iou"] for r in valid])) if valid else None,
        "mean_iou_invalid_as_0": float(np.sum([r["iou"] for r in valid]) / len(rows)),
        "median_cd_x1000": float(np.median([r["cd_x1000"] for r in valid])) if valid else None,
        "mean_cd_x1000": float(np.mean([r["cd_x1000"] for r in valid])) if valid else None,
        "invalid_ratio": 1 - len(valid) / len(rows),
        "rows": rows,
    }


def evaluate(model_dir=WEIGHTS_DIR, n_shapes: int | None = None, k: int = 5, n_best: int | None = None,
             temperature: float = 0.8, timing_shapes: int = 10, progress: bool = True) -> dict:
    """Held-out metrics: greedy one sample, best-of-``k`` sampled, seconds per reconstruction; into the log."""
    from cadlab.cadexec import run_cadquery
    from cadlab.cadrecode import load_cadrecode

    model, tokenizer = load_cadrecode(model_dir)
    test = test_set(progress=progress)
    n = len(test["codes"]) if n_shapes is None else min(n_shapes, len(test["codes"]))
    targets = [run_cadquery(code).mesh for code in test["codes"][:n]]
    t0 = time.time()
    greedy = generate_codes(model, tokenizer, test["points"][:n], progress=progress)
    greedy_seconds = time.time() - t0
    result = {"greedy": score(greedy, targets, progress=progress), "greedy_generate_seconds": greedy_seconds,
              "test_seeds": [TEST_START, TEST_START + TEST_SEEDS - 1], "torch_threads": torch.get_num_threads()}
    result["greedy"]["codes"] = [c[0] for c in greedy]
    log_path = Path(model_dir) / "training_log.json"

    def write_log():
        log = json.loads(log_path.read_text()) if log_path.exists() else {}
        log["eval"] = result
        log_path.write_text(json.dumps(log, indent=1))

    write_log()                                  # greedy results are kept even if the rest is cut short
    nb = n if n_best is None else min(n_best, n)
    if k > 1 and nb > 0:
        torch.manual_seed(0)
        sampled = generate_codes(model, tokenizer, test["points"][:nb], batch_size=8, n_samples=k,
                                 do_sample=True, temperature=temperature, top_k=50, progress=progress)
        result[f"best_of_{k}"] = score(sampled, targets[:nb], progress=progress)
        result[f"best_of_{k}"]["temperature"] = temperature
    # one reconstruction, as a user runs it: batch of 1, greedy, then the sandbox (worker already warm)
    times = []
    for cloud in test["points"][:timing_shapes]:
        t = time.time()
        code = generate_codes(model, tokenizer, cloud[None], batch_size=1, progress=False)[0][0]
        run_cadquery(code)
        times.append(time.time() - t)
    result["seconds_per_reconstruction"] = {"median": float(np.median(times)), "mean": float(np.mean(times)),
                                            "shapes": len(times), "threads": torch.get_num_threads()}
    write_log()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cadlab.train_cadrecode", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", action="store_true", help="evaluate the checkpoint in --out on the held-out set")
    parser.add_argument("--run-dir", type=Path, default=Path("~/.cache/cadlab/mini-cadrecode-run").expanduser(),
                        help="where the resumable training state lives")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the shipped model is written")
    parser.add_argument("--minutes", type=float, default=80.0, help="wall-time budget of the training steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-chunks", type=int, default=4, help=f"build at least this many chunks of {CHUNK} programs")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=768)
    parser.add_argument("--warmup", type=int, default=40, help="linear warm-up steps")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="train under bf16 autocast (fp32 weights); --no-bf16 for plain fp32")
    parser.add_argument("--shapes", type=int, default=None, help="--eval: held-out shapes to use (default all)")
    parser.add_argument("--k", type=int, default=5, help="--eval: samples per shape for best-of-k")
    parser.add_argument("--n-best", type=int, default=None, help="--eval: shapes for best-of-k (default all)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=1,
                        help="--eval: torch threads (one is faster for a model this small, above all on a busy CPU)")
    args = parser.parse_args(argv)
    if args.eval:
        torch.set_num_threads(args.threads)
        result = evaluate(args.out, n_shapes=args.shapes, k=args.k, n_best=args.n_best, temperature=args.temperature)
        for name in ("greedy", f"best_of_{args.k}"):
            if name in result:
                r = result[name]
                print(f"{name}: shapes {r['shapes']}, mean IoU {r['mean_iou']}, median CD x1000 "
                      f"{r['median_cd_x1000']}, invalid {r['invalid_ratio']:.3f}")
        print("seconds per reconstruction:", result["seconds_per_reconstruction"])
        return
    train(args.run_dir, args.out, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
          min_chunks=args.min_chunks, hidden_size=args.hidden, layers=args.layers,
          intermediate_size=args.intermediate, warmup=args.warmup, bf16=args.bf16)


if __name__ == "__main__":
    main()
