"""Self-checks for the notebooks' exercises, one module per notebook.

Each ``check_*`` takes the learner's function, compares it with the reference on several
inputs, prints one line on success and raises ``AssertionError`` saying what differs
otherwise. A function that still raises ``NotImplementedError`` is reported as "not
attempted yet" (the check returns False), so a notebook always runs top to bottom.

An answer that cannot be compared at all - a function that raises, or returns the wrong kind
of value (None, a str, a numpy array for a tensor, a tensor of the wrong shape or dtype) - is
reported the same way: one printed sentence saying what came back and what was expected, and
the check returns False. The helpers below do that: ``exercise_check`` wraps a check,
``expect_tensor``, ``expect_array``, ``expect_number`` and ``expect_pair`` validate a returned
value before the check compares it, and ``case`` names the case in that sentence.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from pathlib import Path

import numpy as np
import torch


class Failed(Exception):
    """The learner's answer cannot be compared with the reference; the message is one sentence saying why."""


class _Stub(NotImplementedError):
    """NotImplementedError raised by the learner's function itself (not by the check's own code)."""


def function_name(fn) -> str:
    """``fn``'s name for a message: a function's ``__name__``, a partial's function's, a callable object's class."""
    fn = getattr(fn, "__wrapped__", fn)
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "your function" if name.startswith("<") else name


def attempted(fn, *args) -> bool:
    """Call ``fn(*args)``; False (with a friendly line) if it still raises NotImplementedError."""
    try:
        fn(*args)
    except NotImplementedError:
        _not_attempted(fn)
        return False
    return True


def _not_attempted(fn) -> None:
    print(f"{function_name(fn)}: not attempted yet - fill in the function and run the check again.")


# Tracebacks are reported at the learner's line: the last frame outside cadlab, the venv and the stdlib.
_LIBRARY = (str(Path(__file__).resolve().parents[1]), sys.prefix, sys.base_prefix)


def _raised(error: Exception) -> str:
    """'raised TypeError: <first line of the message> (line 3: <that line>)' for a learner's exception."""
    lines = str(error).strip().splitlines()
    text = f"raised {type(error).__name__}" + (f": {lines[0][:200]}" if lines else "")
    own = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_LIBRARY)]
    if own and own[-1].line:
        text += f" (line {own[-1].lineno}: {own[-1].line.strip()})"
    return text


def _guarded(fn):
    """``fn`` whose NotImplementedError becomes ``_Stub`` and whose other exceptions become ``Failed``."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as error:
            raise _Stub(*error.args) from error
        except Exception as error:
            raise Failed(f"your function {_raised(error)}.") from error
    call.__wrapped__ = fn
    return call


def exercise_check(check):
    """Decorate ``check(fn)``: ``fn`` raising or returning the wrong kind of value prints one line and gives False.

    ``fn`` reaches the check wrapped, so that its exceptions become ``Failed``; ``Failed`` from the
    check (its ``expect_*`` calls) is printed as ``"check_name: sentence"``; NotImplementedError
    from any call of ``fn`` is "not attempted yet". The check's own AssertionError (a wrong value)
    is left alone.
    """
    @functools.wraps(check)
    def run(fn):
        guarded = _guarded(fn)
        try:
            return check(guarded)
        except _Stub:
            _not_attempted(fn)
            return False
        except Failed as failure:
            print(f"{check.__name__}: {failure}")
            return False
    return run


@contextlib.contextmanager
def case(label: str):
    """Start the sentence of a ``Failed`` raised inside (the learner's exception, a wrong value) with ``label: ``."""
    try:
        yield
    except Failed as failure:
        raise Failed(f"{label}: {failure}") from None


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def describe(value) -> str:
    """What ``value`` is, for a message: 'None', "the str 'abc'", 'a float32 torch tensor of shape (2, 7)',
    'a float64 numpy array of shape (3, 4)', 'a tuple of 2 items', 'a dict'."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        where = "" if value.device.type == "cpu" else f" on {value.device}"
        return _a(f"{str(value.dtype).removeprefix('torch.')} torch tensor of shape {tuple(value.shape)}{where}")
    if isinstance(value, np.ndarray):
        return _a(f"{value.dtype} numpy array of shape {value.shape}")
    if isinstance(value, (str, bool, int, float, np.generic)):
        text = str(value) if isinstance(value, np.generic) else repr(value)
        kind = f"numpy {type(value).__name__}" if isinstance(value, np.generic) else type(value).__name__
        return f"the {kind} {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, (tuple, list)):
        return f"{_a(type(value).__name__)} of {len(value)} item{'s' * (len(value) != 1)}"
    return _a(type(value).__name__)


def _failed(got, expected: str, hint: str) -> Failed:
    """``Failed('your function returned <got>; return <expected> (<hint>).')``."""
    return Failed(f"your function returned {describe(got)}; return {expected}{f' ({hint})' if hint else ''}.")


def _shape_text(shape) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


_DTYPES = {"floating": lambda dtype: dtype.is_floating_point,
           "integer": lambda dtype: not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)}


def expect_tensor(got, shape, dtype=None, hint: str = "", array_like: bool = False) -> torch.Tensor:
    """``got`` as a CPU torch tensor of ``shape`` (an int per dim, or a name such as "seq" for any size);
    ``dtype`` None (any), a torch dtype, "floating" or "integer" (not bool). ``array_like`` also accepts a
    numpy array or a nested list, converted with ``torch.as_tensor``. Anything else raises ``Failed``."""
    tensor = got
    if array_like and not isinstance(got, torch.Tensor) and isinstance(got, (np.ndarray, list, tuple)):
        try:
            tensor = torch.as_tensor(np.asarray(got))
        except (TypeError, ValueError, RuntimeError):
            pass
    kind = ("" if dtype is None else {"floating": "floating-point ", "integer": "integer "}.get(dtype) or
            f"{str(dtype).removeprefix('torch.')} ")
    expected = f"{_a(kind + 'torch tensor')} of shape {_shape_text(shape)}"
    right = (isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and tensor.dim() == len(shape)
             and all(isinstance(want, str) or size == want for size, want in zip(tensor.shape, shape))
             and (dtype is None or (_DTYPES[dtype](tensor.dtype) if isinstance(dtype, str) else tensor.dtype == dtype)))
    if not right:
        raise _failed(got, expected, hint)
    return tensor


def expect_array(got, shape, integer: bool = False, hint: str = "") -> np.ndarray:
    """``got`` (a numpy array, a nested list or a CPU tensor) as a numpy array of ``shape``: of floats, or of
    integers when ``integer``. Anything else raises ``Failed``."""
    array = None
    try:
        value = got.detach().cpu() if isinstance(got, torch.Tensor) else got
        array = np.asarray(value) if integer else np.asarray(value, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        pass
    if (array is None or array.shape != tuple(shape)
            or (integer and not np.issubdtype(array.dtype, np.integer)) or (not integer and array.dtype == object)):
        raise _failed(got, f"{_a('integer' if integer else 'float')} array of shape {_shape_text(shape)}", hint)
    return array


def expect_number(got, expected: str = "a number", hint: str = "") -> int | float:
    """``got`` as a Python int or float: a plain number, a numpy scalar or a 0-d tensor or array (not a bool).
    Anything else raises ``Failed``."""
    value = got
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        single = (isinstance(got, torch.Tensor) and got.numel() == 1) or (isinstance(got, np.ndarray) and got.size == 1)
        raise _failed(got, expected, hint or (".item() turns a one-element tensor into a number" if single else ""))
    return value


def expect_pair(got, names: str, item=None) -> tuple:
    """``got`` as a tuple of two items (a tuple or a list of length 2), each passed through ``item`` when given
    (``Failed`` from it starts with the item's name, from ``names`` such as "(K, V)"). Anything else raises ``Failed``."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise _failed(got, f"a pair {names}", "")
    if item is None:
        return tuple(got)
    checked = []
    for name, value in zip(names.strip("()").split(", "), got):
        with case(name):
            checked.append(item(value))
    return tuple(checked)
