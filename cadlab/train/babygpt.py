"""Train babyGPT on its corpus: ``cadlab train-babygpt [--max-steps N] [--out FOLDER]``.

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
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cadlab import arguments
from cadlab.lm.babygpt import CORPUS, BabyGPT, CharTokenizer, count_parameters
from cadlab.paths import BABYGPT_DIR
from cadlab.train import loop
from cadlab.train.loop import LoopSettings, setting


def load_corpus(path=CORPUS, val_fraction: float = 0.1):
    """(tokenizer, train ids, val ids): a character vocabulary of the whole text, then a 90/10 split.
    A text that is not UTF-8, or empty, raises ``ValueError`` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"the corpus {path} is not UTF-8 text ({error.reason} at byte {error.start}): "
                         "save it as UTF-8") from None
    if not text:
        raise ValueError(f"the corpus {path} is empty: give a text file to learn from")
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


class BabyGPTRecipe:
    """babyGPT for ``cadlab.train.loop``: a batch of random windows of the training text per step,
    drawn by one generator seeded with ``seed`` (its state travels with the run, so a resumed run
    draws the windows an uninterrupted one would have drawn)."""
    name = "babyGPT"

    def __init__(self, model_config: dict, tokenizer: CharTokenizer, train_ids: torch.Tensor, val_ids: torch.Tensor,
                 batch_size: int, seed: int, eval_batches: int, model: BabyGPT | None = None, training=None):
        self.model_config, self.tokenizer, self.training = model_config, tokenizer, training or {}
        self.train_ids, self.val_ids = train_ids, val_ids
        self.batch_size, self.eval_batches, self.given = batch_size, eval_batches, model
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def position(self) -> dict:
        return {"generator": self.generator.get_state()}

    @position.setter
    def position(self, value: dict) -> None:
        self.generator.set_state(value["generator"])

    def can_continue(self, folder: Path) -> bool:
        return (Path(folder) / "model.pth").is_file() and (Path(folder) / "config.json").is_file()

    def load_model(self, folder: Path) -> BabyGPT:
        model = BabyGPT(**json.loads((Path(folder) / "config.json").read_text())["model"])
        model.load_state_dict(torch.load(Path(folder) / "model.pth", weights_only=True))
        return model

    def new_model(self) -> BabyGPT:
        return self.given if self.given is not None else BabyGPT(**self.model_config)

    def optimizer(self, model) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), weight_decay=0.01)     # the loop sets the lr at each step

    def config(self, model) -> dict:
        return {"parameters": count_parameters(model), "block_size": model.block_size}

    def step(self, model, step: int) -> dict:
        loss = lm_loss(model, *get_batch(self.train_ids, self.batch_size, model.block_size, self.generator))
        loss.backward()
        return {"loss": loss.item()}

    def held_out(self, model) -> dict:
        return {"train": estimate_loss(model, self.train_ids, self.batch_size, self.eval_batches),
                "val": estimate_loss(model, self.val_ids, self.batch_size, self.eval_batches)}

    def save(self, model, folder: Path, log: dict, shipped: bool) -> None:
        """model.pth (the state dict), config.json and tokenizer.json; shipped, also train_log.json (every
        step's loss, the estimates, seconds, and the runs) and loss_curve.png."""
        folder = Path(folder)
        torch.save(model.state_dict(), folder / "model.pth")
        self.tokenizer.save(folder / "tokenizer.json")
        config = {"model": self.model_config, "training": self.training}
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        if shipped:
            shipped_log = {**legacy_log(log), "parameters": count_parameters(model), "torch": torch.__version__,
                           "python": platform.python_version(), "threads": torch.get_num_threads(),
                           "runs": log["runs"]}
            (folder / "train_log.json").write_text(json.dumps(shipped_log) + "\n")
            plot_log(shipped_log, folder / "loss_curve.png")


def settings_for(steps: int, lr: float, seed: int | None, eval_every: int, **more) -> LoopSettings:
    """The loop's settings for babyGPT: ``steps`` steps, no warm-up, a cosine from ``lr`` to ``lr / 10``,
    no bf16 (a model this small gains nothing), held-out losses every ``eval_every`` steps. ``seed``
    None leaves torch's random state (dropout) as the caller has it."""
    return LoopSettings(max_steps=steps, lr=lr, warmup=0, lr_floor=0.1, checkpoint_every=eval_every, bf16=False,
                        from_shipped=False, seed=seed, **more)


def legacy_log(log: dict) -> dict:
    """The loop's log in babyGPT's own form: every step's loss, the train/val estimates, seconds."""
    return {"train_loss": [r["loss"] for r in log["train"]],
            "eval": [{"step": r["step"], "train": r["train"], "val": r["val"]} for r in log["val"] if r["step"] > 0],
            "seconds": log.get("total_seconds", 0.0)}


def train_model(model: BabyGPT, train_ids: torch.Tensor, val_ids: torch.Tensor, *, steps: int, batch_size: int = 32,
                lr: float = 1e-3, seed: int = 0, eval_every: int = 100, eval_batches: int = 10,
                progress: bool = True) -> dict:
    """Train ``model`` in place for ``steps`` AdamW steps with ``cadlab.train.loop`` (nothing saved);
    returns the log: ``log["train_loss"]`` the loss of every step, ``log["eval"]`` the estimated train
    and val losses every ``eval_every`` steps and at the end, ``log["seconds"]`` the time."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    recipe = BabyGPTRecipe({}, None, train_ids, val_ids, batch_size, seed, eval_batches, model=model)
    log = loop.train(recipe, None, None, settings_for(steps, lr, None, eval_every), progress=progress)
    model.eval()
    return legacy_log(log)


def plot_log(log: dict, path=None):
    """Per-step training loss and the periodic train/val estimates; saved to ``path`` if given."""
    import matplotlib  # deferred: the backend must be chosen before pyplot is imported
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


@dataclass
class TrainSettings(LoopSettings):
    """A babyGPT run: the loop's settings (steps, lr, seed...) and the model's shape."""
    max_steps: int | None = setting(1500, "optimizer steps")
    lr: float = setting(2e-3, "peak learning rate")
    warmup: int = setting(0, "linear warm-up over this many steps of the run")
    lr_floor: float = setting(0.1, "the cosine ends at this fraction of the peak")
    checkpoint_every: int | None = setting(250, "steps between held-out estimates and checkpoints")
    bf16: bool = setting(False, "forward and backward under bf16 autocast")
    from_shipped: bool = setting(False, "with no run state, continue from the model in --out")
    batch_size: int = setting(32, "windows per step")
    block_size: int = setting(128, "characters per window (the context)")
    n_layer: int = setting(4, "transformer blocks")
    n_head: int = setting(4, "attention heads")
    n_embd: int = setting(128, "embedding width")
    dropout: float = setting(0.1, "dropout probability", arguments.fraction)
    eval_batches: int = setting(10, "batches per held-out estimate")

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"--n-embd {self.n_embd} is not divisible by --n-head {self.n_head}: each head takes "
                             f"n_embd / n_head of the embedding; choose e.g. --n-embd "
                             f"{max(self.n_head, self.n_embd // self.n_head * self.n_head)}")


def check_corpus_length(path, train_ids, val_ids, block_size: int) -> None:
    """``ValueError`` unless the training and the held-out part (the last tenth) each hold one window of
    ``block_size`` characters and its next character, with room to draw it."""
    shortest = min(len(train_ids), len(val_ids))
    if shortest < block_size + 2:
        total = len(train_ids) + len(val_ids)
        raise ValueError(f"the corpus {path} is too short: {total:,} characters, of which the last tenth is held "
                         f"out, and each part needs more than --block-size {block_size} + 1; give a text of at "
                         f"least {10 * (block_size + 2):,} characters or a smaller --block-size")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab train-babygpt", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(CORPUS), help="the text to learn")
    parser.add_argument("--out", default=str(BABYGPT_DIR),
                        help="folder for model.pth, config.json, tokenizer.json, logs")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where a resumable run state is kept (default: none)")
    loop.flags(parser, TrainSettings)
    args = parser.parse_args(argv)
    settings = loop.settings_from(args, TrainSettings, parser)
    if Path(args.corpus).is_dir():
        parser.error(f"--corpus {args.corpus} is a folder: give a text file")
    if not Path(args.corpus).is_file():
        parser.error(f"corpus file not found: {args.corpus} (give --corpus a text file)")
    try:
        tokenizer, train_ids, val_ids = load_corpus(args.corpus)
        check_corpus_length(args.corpus, train_ids, val_ids, settings.block_size)
    except ValueError as error:
        parser.error(str(error))
    if args.run_dir is not None:
        arguments.writable_folder(args.run_dir, parser.prog, "--run-dir", create=False)
    out = arguments.writable_folder(args.out, parser.prog, "--out", create=False)
    loop.apply_threads(settings)
    model_config = dict(vocab_size=tokenizer.vocab_size, block_size=settings.block_size, n_layer=settings.n_layer,
                        n_head=settings.n_head, n_embd=settings.n_embd, dropout=settings.dropout)
    print(f"babyGPT: {count_parameters(BabyGPT(**model_config)):,} parameters, vocab {tokenizer.vocab_size}, "
          f"{len(train_ids):,} train / {len(val_ids):,} val characters, torch threads {torch.get_num_threads()}")
    training = asdict(settings) | {"corpus": Path(args.corpus).name}
    recipe = BabyGPTRecipe(model_config, tokenizer, train_ids, val_ids, settings.batch_size, settings.seed,
                           settings.eval_batches, training=training)
    log = loop.train(recipe, args.run_dir, out, settings)
    final = log["val"][-1]
    print(f"done in {log['total_seconds']:.0f} s: train loss {final['train']:.3f}, val loss {final['val']:.3f}; "
          f"saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
