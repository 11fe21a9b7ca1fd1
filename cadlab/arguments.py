"""What the ``cadlab`` commands accept, checked before any work starts.

Each function here is an ``argparse`` ``type=``: it turns the text of one flag into a value or raises
``argparse.ArgumentTypeError`` with a sentence that says what was wrong and what to give instead;
argparse then prints ``usage`` and ``cadlab COMMAND: error: argument --flag: <that sentence>`` and
exits with status 2, without a traceback. ``fail`` does the same for a problem found after parsing
(a model folder that does not hold a model, an output path that cannot be written).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

MAX_SEED = 2**32 - 1               # numpy's and Python's seeds fit here; torch.manual_seed takes up to 2**64 - 1
MIN_TEMPERATURE = 1e-3             # below it softmax(logits / T) overflows float32: use 0 for greedy decoding


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        name = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1) (a dropout rate, a share of the data)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 up to (not including) 1, got {text!r}")
    return value


def proportion(text: str) -> float:
    """A number in [0, 1], both ends included (a share of the rows, the learning rate's floor)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def top_p(text: str) -> float:
    """Nucleus sampling's p: the smallest set of tokens whose probabilities add up to p, so 0 < p <= 1."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"top-p is a probability mass: expected 0 < p <= 1 (1 keeps every token), "
                                         f"got {text!r}")
    return value


def top_k(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"top-k counts tokens: expected 0 (keep every token) or more, got {text!r}")
    return value


def temperature(text: str) -> float:
    """0 means greedy decoding; otherwise at least ``MIN_TEMPERATURE``."""
    value = _number(text, float)
    if value != 0 and not MIN_TEMPERATURE <= value:
        raise argparse.ArgumentTypeError(f"expected 0 (greedy) or a temperature of at least {MIN_TEMPERATURE:g}, "
                                         f"got {text!r}")
    return value


def seed(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {text!r}")
    return value


def device(text: str) -> str:
    """A torch device name: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Only the spelling is checked here;
    ``device_problem`` says whether this machine has it."""
    kind, colon, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and not (kind == "cuda" and index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def device_problem(name: str) -> str | None:
    """Why the device ``name`` (as ``device`` accepts it) cannot be used on this machine, or None."""
    import torch                       # only here: the rest of this module is cheap to import

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"--device {name}: no CUDA device is available here; use --device cpu"
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    if name == "mps" and not torch.backends.mps.is_available():
        return "--device mps: Apple's MPS is not available here; use --device cpu"
    return None


def fail(prog: str, message: str, status: int = 2):
    """Print ``prog: error: message`` on stderr and exit with ``status`` (no traceback)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(status)


def writable_folder(path, prog: str, flag: str = "-o", create: bool = True) -> Path:
    """``path`` as a folder the command may write into (created if missing), or ``fail`` saying why not;
    ``flag`` is the option that named it. ``create=False`` checks without making anything: a missing
    folder must then be creatable inside its nearest existing parent (the work creates it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(prog, f"{path} is a file, not a folder: give {flag} a folder name")
    if not create and not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            fail(prog, f"cannot create the folder {path}: {parent} is a file; give {flag} another folder")
        if not _can_create_in(parent):
            fail(prog, f"cannot create the folder {path} in {parent}: choose a folder you may write to")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(prog, f"cannot create the folder {path}: {error.strerror or error}")
    if not os.access(path, os.W_OK | os.X_OK) or not _can_create_in(path):
        fail(prog, f"cannot write into {path}: choose a folder you may write to")
    return path


def writable_file(path, prog: str) -> Path:
    """``path`` as a file the command may (over)write, or ``fail`` saying why not. Nothing is written."""
    path = Path(path)
    if path.is_dir():
        fail(prog, f"{path} is a folder: give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        fail(prog, f"the folder {parent} does not exist: create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)) \
            or not _can_create_in(parent):
        fail(prog, f"cannot write {path}: choose a place you may write to")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder``: a temporary file made and removed at once.
    ``os.access`` alone says yes to root everywhere, even where the file system refuses (/sys, /proc,
    a read-only mount)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".cadlab-write-check-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True
