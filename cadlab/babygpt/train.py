"""Train babyGPT on its corpus: ``python -m cadlab.babygpt.train [--steps N] [--out FOLDER]``.

Next-character prediction: for a random window x = ids[i : i + block_size] the targets are
y = ids[i + 1 : i + block_size + 1], and the loss is the mean cross-entropy
-log softmax(logits)[y] over every position of every window in the batch. AdamW, learning
rate decayed along a cosine from ``lr`` to ``lr / 10``. The first 90 % of the corpus trains,
the last 10 % is held out for the validation loss.

Seeded (``--seed``: initial weights, dropout and batch order). Writes to ``--out`` (default:
this package's folder, i.e. the shipped checkpoint): model.pth (the state dict), config.json,
tokenizer.json, train_log.json (losses, wall time) and loss_curve.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cadlab.babygpt import CORPUS, HERE, BabyGPT, CharTokenizer, count_parameters


def load_corpus(path=CORPUS, val_fraction: float = 0.1):
    """(tokenizer, train ids, val ids): a character vocabulary of the whole text, then a 90/10 split."""
    text = Path(path).read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n_val = int(len(ids) * val_fraction)
    return tokenizer, ids[:-n_val], ids[-n_val:]


def get_batch(ids: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
    """``batch_size`` random windows x [B, block_size] and their targets y (x shifted by one)."""
    starts = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([ids[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + block_size + 1] for s in starts.tolist()])
    return x, y


def lm_loss(model: BabyGPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of next-token prediction over all B x T positions."""
    logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def estimate_loss(model: BabyGPT, ids: torch.Tensor, batch_size: int, batches: int, seed: int = 1234) -> float:
    """Mean loss on ``batches`` fixed (seeded) batches, in eval mode."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    losses = [lm_loss(model, *get_batch(ids, batch_size, model.block_size, generator)).item()
              for _ in range(batches)]
    model.train(was_training)
    return sum(losses) / len(losses)


def train_model(model: BabyGPT, train_ids: torch.Tensor, val_ids: torch.Tensor, *, steps: int, batch_size: int = 32,
                lr: float = 1e-3, seed: int = 0, eval_every: int = 100, eval_batches: int = 10,
                progress: bool = True) -> dict:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the log (step, train/val loss, seconds).

    ``log["train_loss"]`` holds the loss of every step; ``log["eval"]`` the estimated train and
    val losses every ``eval_every`` steps and at the end.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    log = {"train_loss": [], "eval": [], "seconds": 0.0}
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc="training babyGPT", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:   # cosine from lr down to lr / 10
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps)))
        loss = lm_loss(model, *get_batch(train_ids, batch_size, model.block_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        log["train_loss"].append(loss.item())
        if step % eval_every == 0 or step == steps:
            point = {"step": step, "train": estimate_loss(model, train_ids, batch_size, eval_batches),
                     "val": estimate_loss(model, val_ids, batch_size, eval_batches)}
            log["eval"].append(point)
            bar.set_postfix(train=f"{point['train']:.3f}", val=f"{point['val']:.3f}")
    log["seconds"] = time.perf_counter() - t0
    model.eval()
    return log


def plot_log(log: dict, path=None):
    """Per-step training loss and the periodic train/val estimates; saved to ``path`` if given."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(log["train_loss"]) + 1), log["train_loss"], lw=0.6, alpha=0.5, label="train (batch)")
    ax.plot([p["step"] for p in log["eval"]], [p["train"] for p in log["eval"]], "o-", label="train (estimate)")
    ax.plot([p["step"] for p in log["eval"]], [p["val"] for p in log["eval"]], "s-", label="validation")
    ax.set(xlabel="step", ylabel="cross-entropy (nats / char)", title="babyGPT training")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadlab.babygpt.train", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--out", default=str(HERE), help="folder for model.pth, config.json, tokenizer.json, logs")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not Path(args.corpus).is_file():
        parser.error(f"corpus file not found: {args.corpus}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    tokenizer, train_ids, val_ids = load_corpus(args.corpus)
    model_config = dict(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                        n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    model = BabyGPT(**model_config)
    print(f"babyGPT: {count_parameters(model):,} parameters, vocab {tokenizer.vocab_size}, "
          f"{len(train_ids):,} train / {len(val_ids):,} val characters, torch threads {torch.get_num_threads()}")
    log = train_model(model, train_ids, val_ids, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, eval_every=args.eval_every)

    torch.save(model.state_dict(), out / "model.pth")
    tokenizer.save(out / "tokenizer.json")
    training = {k: v for k, v in vars(args).items() if k != "out"} | {"corpus": Path(args.corpus).name}
    (out / "config.json").write_text(json.dumps({"model": model_config, "training": training}, indent=1) + "\n")
    log.update(parameters=count_parameters(model), torch=torch.__version__, python=platform.python_version(),
               threads=torch.get_num_threads())
    (out / "train_log.json").write_text(json.dumps(log) + "\n")
    plot_log(log, out / "loss_curve.png")
    final = log["eval"][-1]
    print(f"done in {log['seconds']:.0f} s: train loss {final['train']:.3f}, val loss {final['val']:.3f}; "
          f"saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
