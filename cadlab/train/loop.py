"""The course's one training loop. Every shipped model is trained by it, through a short recipe.

A recipe (``cadlab.train.babygpt``, ``.cadrecode``, ``.cadrille``, ``.autocomplete``) says what is
particular to its model; the loop does what is the same for all of them::

    model     = the run's last checkpoint | the shipped model | a new model      (resume rule below)
    optimizer = recipe.optimizer(model)           (AdamW; each parameter group carries its peak lr)
    repeat until the budget (minutes of wall clock, or a number of steps) is spent:
        lr      = schedule(budget used, run step) (linear warm-up, then cosine down to floor x peak)
        metrics = recipe.step(model, step)        (forward and backward of one batch, under autocast)
        clip the gradient norm to 1, optimizer step, zero the gradients
        every few minutes and at the end: recipe.held_out(model), save the run state and the model

The recipe's interface, plain methods on a plain class:

    name                          a few words for the progress bar
    new_model()                   the model when training starts from scratch
    load_model(folder)            the model saved in ``folder`` (a run's or the shipped one)
    can_continue(folder)          whether ``folder`` holds a model this recipe can continue
    optimizer(model)              a ``torch.optim`` optimizer whose groups carry ``"peak"`` (their lr)
    step(model, step)             forward + backward of the batch of global step ``step``; a dict of
                                  numbers to log, with ``"loss"`` among them
    held_out(model)               a dict of held-out numbers (losses), logged at each checkpoint
    save(model, folder, log, shipped)   the weights (and, shipped, the log and curves) into ``folder``
    position                      (optional) a JSON-able dict the loop saves and restores with the
                                  run: where the recipe is in its data, when that is not a function
                                  of the step alone

Resume rule. ``run_dir/state.pt`` holds a run's step, optimizer, random-number state, log and the
recipe's position. If it exists, training continues that run exactly: a run stopped at step N and
resumed gives the same losses and weights as one never stopped. If the run had finished (its
budget spent), the same command starts a *new* run from its weights and optimizer. With no run
state, a new run starts from the shipped model in ``out_dir`` (``from_shipped``, a fresh optimizer, and
the recipe's position as the shipped log saved it, so the new run goes on to data it has not seen),
else from scratch. ``log["runs"]`` lists every run (steps, seconds, settings, threads) and
``log["total_seconds"]`` adds them up, so a model's training time adds up across machines.

Schedule. With peak lr ``p``, warm-up ``w`` steps of *this run* (a new run has a fresh optimizer,
and warms up again) and ``x`` the fraction of the budget spent (steps, or seconds of wall clock)::

    lr = p * (s + 1) / w                                  for run step s < w
    lr = p * (floor + (1 - floor) * (1 + cos(pi x)) / 2)  after

Precision. ``bf16`` runs the forward and backward passes under ``torch.autocast`` in bfloat16, while
weights, gradients and the optimizer's state stay float32: the saved model is an ordinary float32 one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from cadlab import arguments
from cadlab.lm.models import checkpoint_kind

LOG_KEYS = ("train", "val", "runs", "config", "total_seconds", "position")   # what the loop writes; other keys are kept


def setting(default, help: str, check=None):
    """A settings field with its command-line help and ``check``, the ``argparse`` type that checks its flag
    (a function of ``cadlab.arguments``). Without one, ``flags`` takes the loop's own check for a field of
    ``LoopSettings`` that a recipe redefines, else the check of the field's annotation (``CHECKS``)."""
    metadata = {"help": help} if check is None else {"help": help, "check": check}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class LoopSettings:
    """What every run depends on; a recipe's settings add their own fields to these. A recipe's settings
    may check fields against each other in ``__post_init__`` (a ``ValueError`` naming the flags)."""
    minutes: float = setting(30.0, "wall-clock budget of this run, in minutes")
    max_steps: int | None = setting(None, "a step budget instead of --minutes")
    stop_after_steps: int | None = setting(None, "stop this process after that many steps, the run left resumable")
    lr: float = setting(1e-3, "peak learning rate")
    warmup: int = setting(30, "linear warm-up over this many steps of the run", arguments.non_negative_int)
    lr_floor: float = setting(0.05, "the cosine ends at this fraction of the peak", arguments.proportion)
    checkpoint_minutes: float = setting(5.0, "minutes between checkpoints (held-out loss, run state, model)")
    checkpoint_every: int | None = setting(None, "steps between checkpoints, instead of --checkpoint-minutes")
    bf16: bool = setting(True, "forward and backward under bf16 autocast (weights stay float32)")
    from_shipped: bool = setting(True, "with no run state, continue from the shipped model (else from scratch)")
    seed: int | None = setting(0, "seed of a new model's weights, dropout, noise and the data order", arguments.seed)
    device: str = setting("cpu", "cpu, cuda or mps", arguments.device)
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice)")


# --------------------------------------------------------------------------------------------
# Command-line flags from a settings dataclass, and back
# --------------------------------------------------------------------------------------------
# A flag's check from its field's annotation, when the field names none: counts, sizes, budgets and
# rates are above 0 (and finite); a field that may be 0 or has a range says so with ``setting(check=...)``.
CHECKS = {"int": arguments.positive_int, "float": arguments.positive_float, "str": str}


def _flag_type(f: dataclasses.Field, annotation: str):
    """The ``argparse`` type of field ``f``: its own check, the loop's for a redefined loop field, else the
    annotation's."""
    if "check" in f.metadata:
        return f.metadata["check"]
    loop_field = {g.name: g for g in dataclasses.fields(LoopSettings)}.get(f.name)
    if loop_field is not None and "check" in loop_field.metadata:
        return loop_field.metadata["check"]
    return CHECKS[annotation.replace(" | None", "").strip()]


def flags(parser: argparse.ArgumentParser, settings_class) -> None:
    """One ``--flag`` per field of ``settings_class`` (``--max-steps`` for ``max_steps``), its help, default
    and check from the field. Booleans get ``--flag/--no-flag``; a dict field takes ``key=N,key=N``.
    ``settings_from(args, settings_class, parser)`` then builds the settings, checked as a whole."""
    defaults = settings_class()
    for f in dataclasses.fields(settings_class):
        if not f.init or "help" not in f.metadata:
            continue
        name = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        help_text = f"{f.metadata['help']} (default: {default})"
        if annotation == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=f.metadata["help"])
        elif annotation == "dict":
            parser.add_argument(name, type=_key_numbers, default=default, metavar="KEY=N,...", help=help_text)
        else:
            parser.add_argument(name, type=_flag_type(f, annotation), default=default,
                                help=help_text)


def _key_numbers(text: str) -> dict:
    try:
        pairs = [item.split("=") for item in text.split(",") if item]
        numbers = {key.strip(): int(value) for key, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=N,KEY=N (e.g. pc=6,img=4,text=10), got {text!r}") from None
    if any(n < 0 for n in numbers.values()):
        raise argparse.ArgumentTypeError(f"expected counts of 0 or more, got {text!r}")
    return numbers


def settings_from(args: argparse.Namespace, settings_class, parser: argparse.ArgumentParser | None = None):
    """The settings dataclass from parsed flags (the inverse of ``flags``). With the ``parser``, a command's
    settings are checked as a whole before any work: the settings' own ``ValueError`` (fields that do not
    fit together) and a ``--device`` this machine lacks become ``parser.error`` (one line, exit status 2)."""
    names = {f.name for f in dataclasses.fields(settings_class) if f.init}
    try:
        settings = settings_class(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as error:
        if parser is None:
            raise
        parser.error(str(error))
    if parser is not None and arguments.device_problem(settings.device):
        parser.error(arguments.device_problem(settings.device))
    return settings


def check_model_folder(parser: argparse.ArgumentParser, folder, kind: str, wanted: str, files: tuple[str, ...],
                       train_command: str) -> Path:
    """``--out`` for ``--eval``: a folder holding a checkpoint of ``kind`` (``checkpoint_kind``'s name:
    "cadrecode", "cadrille", "lora") with ``files``, which the evaluation may write its results into;
    else ``parser.error`` saying what the folder holds instead (``wanted`` names what it should, e.g.
    "CAD-Recode checkpoint")."""
    folder = Path(folder)
    if not folder.is_dir():
        parser.error(f"--out {folder} is not a folder: --eval evaluates the {wanted} saved there "
                     f"(train one with `{train_command}`)")
    found = checkpoint_kind(folder)
    if found is not None and found.name != kind:
        parser.error(f"--out {folder} holds {found.what}, not a {wanted}: use it with `{found.command}`")
    missing = [name for name in files if not (folder / name).is_file()]
    if found is None or missing:
        why = f"no {', '.join(missing)}" if missing else "nothing there names one"
        parser.error(f"--out {folder} holds no {wanted} ({why}); train one with `{train_command}`")
    return arguments.writable_folder(folder, parser.prog, "--out")


def apply_threads(settings: LoopSettings) -> None:
    if settings.threads:
        torch.set_num_threads(settings.threads)


# --------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------
def learning_rate(done: float, total: float, step: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``floor * peak`` as ``done``
    (seconds or steps of the budget) goes from 0 to ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    done = min(max(done, 0.0), total)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done / total)))


# --------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------
def write_log(log: dict, folder: Path, name: str = "training_log.json") -> None:
    """``folder/name``; keys that others wrote there (an evaluation, a memory table) are kept."""
    path = Path(folder) / name
    if path.exists():
        on_disk = json.loads(path.read_text())
        log = {**{k: v for k, v in on_disk.items() if k not in LOG_KEYS and k not in log}, **log}
    path.write_text(json.dumps(log, indent=1))


def save_curves(draw, log: dict, path: Path, size=(7, 4)) -> None:
    """``draw(ax, log)`` into a PNG (a bare matplotlib ``Figure``: no pyplot, no display needed)."""
    fig = Figure(figsize=size)
    draw(fig.subplots(), log)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def save_log_and_curves(log: dict, folder: Path, draw) -> None:
    """``training_log.json`` and ``loss_curves.png`` (``draw(ax, log)``) into ``folder``."""
    write_log(log, folder)
    save_curves(draw, log, Path(folder) / "loss_curves.png")


def save_pretrained(model, tokenizer, folder: Path, log: dict, shipped: bool, draw) -> None:
    """A transformers model and its tokenizer into ``folder``; shipped, also the log and the curves."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if shipped:
        save_log_and_curves(log, folder, draw)


def shipped_log(out_dir: Path) -> dict | None:
    path = Path(out_dir) / "training_log.json"
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _start(recipe, run_dir: Path | None, out_dir: Path | None, settings: LoopSettings):
    """(model, state): the run to continue, or a new one (see the module's resume rule)."""
    state_path = None if run_dir is None else run_dir / "state.pt"
    if state_path is not None and state_path.exists() and recipe.can_continue(run_dir):
        model = recipe.load_model(run_dir)
        state = torch.load(state_path, weights_only=True)     # tensors and plain containers only: no code
        print(f"resuming the run in {run_dir} at step {state['step']}")
        return model, state
    if settings.from_shipped and out_dir is not None and recipe.can_continue(out_dir) and shipped_log(out_dir):
        model = recipe.load_model(out_dir)
        log = {k: v for k, v in shipped_log(out_dir).items() if k in LOG_KEYS}
        log.setdefault("runs", [])
        step = log["train"][-1]["step"] if log.get("train") else 0
        print(f"starting from the shipped model in {out_dir} (step {step}; a fresh optimizer)")
        state = {"step": step, "finished": True, "log": log}
        if "position" in log:
            state["position"] = log["position"]
        return model, state
    model = recipe.new_model()
    return model, {"step": 0, "finished": True, "log": {"train": [], "val": [], "runs": [], "config": {}}}


def train(recipe, run_dir: Path | None, out_dir: Path | None, settings: LoopSettings, progress: bool = True) -> dict:
    """Train ``recipe``'s model under ``settings``; returns the log. ``run_dir`` keeps the resumable
    run state (None: no checkpoints, nothing resumable); ``out_dir`` receives the model at every
    checkpoint (None: the model is only returned in ``recipe.model``)."""
    run_dir = None if run_dir is None else Path(run_dir)
    out_dir = None if out_dir is None else Path(out_dir)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    if settings.seed is not None:              # None: the caller's random state, as it is (a notebook's)
        torch.manual_seed(settings.seed)
    model, state = _start(recipe, run_dir, out_dir, settings)
    model.to(device)
    recipe.model, recipe.device = model, device
    log = state["log"]
    if state.pop("finished"):                   # a new run: register it
        log["runs"].append({"started_at_step": state["step"], "seconds": 0.0, "steps": 0,
                            "settings": asdict(settings), "torch_threads": torch.get_num_threads()})
    run = log["runs"][-1]
    optimizer = _optimizer(recipe, model, settings, state.get("optimizer"))
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    if "position" in state:
        recipe.position = state["position"]
    log["config"].update(getattr(recipe, "config", lambda m: {})(model))
    seconds_before = sum(r["seconds"] for r in log["runs"]) - run["seconds"]
    started, run_seconds_at_start = time.perf_counter(), run["seconds"]

    def run_seconds() -> float:
        return run_seconds_at_start + time.perf_counter() - started

    def budget() -> tuple[float, float]:
        """(used, total) of this run's budget: steps, or seconds of wall clock."""
        if settings.max_steps is not None:
            return run["steps"], settings.max_steps
        return run_seconds(), settings.minutes * 60.0

    def held_out() -> dict:
        """The recipe's held-out numbers, leaving the random-number state as it was (an evaluation
        never changes what training draws next, so checkpoints do not change the run)."""
        rng = torch.get_rng_state()
        numbers = recipe.held_out(model)
        torch.set_rng_state(rng)
        return numbers

    def checkpoint(finished: bool) -> None:
        log["val"].append({"step": state["step"], "seconds": round(seconds_before + run_seconds(), 1), **held_out()})
        run["seconds"] = round(run_seconds(), 1)
        if hasattr(recipe, "position"):
            log["position"] = dict(recipe.position)
        log["total_seconds"] = round(sum(r["seconds"] for r in log["runs"]), 1)
        if run_dir is not None:
            recipe.save(model, run_dir, log, shipped=False)
            saved = {"step": state["step"], "finished": finished, "optimizer": optimizer.state_dict(),
                     "rng": torch.get_rng_state(), "log": log}
            if hasattr(recipe, "position"):
                saved["position"] = recipe.position
            torch.save(saved, run_dir / "state.pt")
        if out_dir is not None:
            recipe.save(model, out_dir, log, shipped=True)

    if not log["val"]:                          # a new model: its held-out numbers before any step
        log["val"].append({"step": state["step"], "seconds": 0.0, **held_out()})
    model.train()
    bar = tqdm(total=settings.max_steps, desc=f"train {recipe.name}", disable=not progress)
    last_checkpoint, steps_here = time.perf_counter(), 0
    while True:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(*budget(), run["steps"], group["peak"], settings.warmup, settings.lr_floor)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
            metrics = recipe.step(model, state["step"])
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        run["steps"] += 1
        steps_here += 1
        log["train"].append({"step": state["step"], **metrics, "lr": optimizer.param_groups[0]["lr"],
                             "seconds": round(seconds_before + run_seconds(), 1)})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", s=f"{time.perf_counter() - t0:.2f}")
        used, total = budget()
        done = used >= total
        stop = settings.stop_after_steps is not None and steps_here >= settings.stop_after_steps
        due = (state["step"] % settings.checkpoint_every == 0 if settings.checkpoint_every else
               time.perf_counter() - last_checkpoint > settings.checkpoint_minutes * 60)
        if done or stop or due:
            checkpoint(finished=done)
            last_checkpoint = time.perf_counter()
        if done or stop:
            break
    bar.close()
    return log


def _optimizer(recipe, model, settings: LoopSettings, saved: dict | None):
    """The recipe's optimizer, with the checkpoint's moments when there is one. Each group's peak lr is
    this run's (the settings', or the recipe's own for the group), never the checkpoint's. When the
    recipe reshaped the model since the checkpoint (new tokens), the saved moments no longer fit: a
    fresh optimizer."""
    optimizer = recipe.optimizer(model)
    peaks = [group.get("peak", settings.lr) for group in optimizer.param_groups]
    if saved is not None:
        optimizer.load_state_dict(saved)
        if not _fits(optimizer):
            print("the model's parameters changed shape since the checkpoint: a fresh optimizer")
            return _optimizer(recipe, model, settings, None)
    for group, peak in zip(optimizer.param_groups, peaks):
        group["peak"] = peak
    return optimizer


def _fits(optimizer) -> bool:
    """Whether every parameter's saved optimizer moments have the parameter's shape."""
    return all(moment.shape == p.shape for group in optimizer.param_groups for p in group["params"]
               for moment in optimizer.state.get(p, {}).values() if torch.is_tensor(moment) and moment.ndim > 0)


def no_weight_decay_groups(named_parameters, peak: float, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices decay, vectors (norms, biases) do not; both with peak lr ``peak``."""
    named = list(named_parameters)
    return [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay, "peak": peak},
            {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0, "peak": peak}]

