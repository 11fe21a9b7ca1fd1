"""The sandbox's first wall, the language: what a CadQuery program may name, read and call.

A program is compiled with RestrictedPython, which refuses at compile time every name or attribute
that starts with ``_`` (so no ``__class__``, ``__subclasses__``, ``__globals__``, ``__import__``,
``__builtins__``) and routes every attribute read, item read, iteration and augmented assignment
through the guards below:

- ``guarded_getattr`` lets a program read attributes only of CadQuery objects and classes, the
  ``cq`` and ``math`` modules, and a short list of methods of numbers, strings, lists, tuples, dicts
  and sets. It refuses any attribute whose name mentions files (``export``, ``import``, ``save``,
  ``open``, ``write``, ``read``, ``load``, ``dump``, ``file``, ``path``, ``text`` ...), raw
  OpenCascade handles (``wrapped``, ``toOCC``), frames and code (``gi_frame``, ``f_globals`` ...)
  and ``str.format`` (whose ``{0.__class__}`` fields would read attributes behind the guard's back);
  it refuses attributes a class gets from its *metaclass* (``ABCMeta.register`` would let a program
  change what ``isinstance`` answers), and it never hands back a module (``cq.exporters``,
  ``cq.occ_impl``) or a container from another package (CadQuery's ``multimethod`` tables hold
  Python's own classes).
- ``guarded_getitem`` and ``guarded_iter`` check each value they hand out the same way: a program
  never holds a module, a raw OpenCascade object or a class from outside CadQuery and the builtins.

The only imports are ``import cadquery as cq`` and ``import math`` / ``from math import ...``. The
builtins are a short allow-list (numbers, ``range``, ``len``, ``min`` ...): no ``open``, ``exec``,
``eval``, ``compile``, ``getattr``, ``globals``, ``vars``, ``locals``, ``type``. ``print`` writes
into a buffer capped at 10 kB.

Compiling walks the syntax tree recursively (RestrictedPython's transformer, then CPython's
compiler), so a program nested deeper than ``MAX_NESTING`` levels is refused with a message before
it is compiled; up to that depth the compile runs with a raised recursion limit. A chain of
``MAX_NESTING // 2`` method calls (``.lineTo(1, 2).lineTo(...)...``) or a sum of ``MAX_NESTING``
terms compiles; a deeper one is refused as ``'syntax'``.

This module only defines the rules; ``cadlab.cad.sandbox`` runs programs under them, in a separate
process (the second wall).
"""

from __future__ import annotations

import ast
import builtins
import math
import operator
import re
import sys
from contextlib import contextmanager

from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

MAX_CODE_CHARS = 100_000        # longer "programs" are refused before they reach a worker
MAX_NESTING = 1_000             # deepest syntax tree compiled (a chain of ~500 calls, ~1 s to compile)
MAX_PRINT_CHARS = 10_000        # what print() may buffer inside the sandbox
MAX_MESSAGE_CHARS = 2_000       # error messages are truncated to this


class Forbidden(Exception):
    """Raised when a program reaches for something outside the sandbox."""


ALLOWED_IMPORTS = {"cadquery": "cq", "math": "math"}   # module -> the only alias allowed

# Substrings (lower case) that no attribute name may contain.
DENIED_NAME_PARTS = (
    "export", "import", "save", "open", "write", "read", "load", "dump", "file", "path",
    "text", "show", "vtk", "svg", "dxf", "step", "stl", "brep", "vrml", "gltf", "json", "pickle",
    "wrapped", "toocc", "occ", "format", "global", "builtin", "frame", "code", "func", "module",
    "system", "environ", "getattr", "setattr", "delattr", "plugin", "subclass", "mro", "class",
)
# Prefixes of generator/coroutine/frame/traceback/code attributes (gi_frame, f_globals, tb_next ...).
DENIED_NAME_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_", "im_")

# Methods of plain Python values a program may call (everything else on them is refused).
SAFE_VALUE_ATTRS = {
    int: {"real", "imag", "conjugate", "bit_length"},
    float: {"real", "imag", "conjugate", "is_integer"},
    complex: {"real", "imag", "conjugate"},
    bool: set(),
    str: {"join", "split", "strip", "lower", "upper", "replace", "startswith", "endswith"},
    list: {"append", "extend", "pop", "insert", "index", "count", "reverse", "sort", "copy", "remove", "clear"},
    tuple: {"index", "count"},
    dict: {"get", "keys", "values", "items", "copy", "pop", "update", "setdefault", "clear"},
    set: {"add", "discard", "remove", "union", "intersection", "difference", "copy"},
}

ALLOWED_BUILTIN_NAMES = (
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "int", "isinstance",
    "len", "list", "map", "max", "min", "pow", "range", "reversed", "round", "set", "sorted", "str",
    "sum", "tuple", "zip", "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError",
    "StopIteration", "TypeError", "ValueError", "ZeroDivisionError",
)
# Classes a program may hold: the builtins it may name, and those a value of theirs may produce.
SAFE_CLASSES = {getattr(builtins, name) for name in ALLOWED_BUILTIN_NAMES if isinstance(getattr(builtins, name), type)}
SAFE_CLASSES |= set(SAFE_VALUE_ATTRS) | {type(None), range, frozenset}

# Names a program may not even mention (clear "forbidden" instead of a NameError at run time).
FORBIDDEN_NAMES = {
    "open", "exec", "eval", "compile", "getattr", "setattr", "delattr", "hasattr", "globals", "locals",
    "vars", "dir", "type", "object", "super", "input", "breakpoint", "help", "exit", "quit",
    "memoryview", "bytearray", "bytes", "classmethod", "staticmethod", "property", "id", "hash",
    "callable", "issubclass", "iter", "next", "copyright", "credits", "license", "chr", "ord",
    "print_function", "os", "sys", "subprocess", "builtins", "importlib", "signal", "socket",
    "SystemExit", "KeyboardInterrupt", "BaseException", "GeneratorExit",
}

def _is_module(value) -> bool:
    return type(value).__name__ == "module"


def _defined_in_cadquery(value) -> bool:
    """True for classes and functions defined in ``cadquery.*`` (not re-exported helpers of other packages)."""
    return (getattr(value, "__module__", "") or "").split(".")[0] == "cadquery"


def _from_cadquery(value) -> bool:
    """True for CadQuery objects and classes (their type or themselves defined in ``cadquery.*``)."""
    return _defined_in_cadquery(value if isinstance(value, type) else type(value))


def _why_value_refused(value) -> str | None:
    """Why a program may not hold ``value`` (a module, a raw OpenCascade object, a class or a
    container from another package), or None when it may."""
    if _is_module(value):
        return "it is a module; only cadquery's classes and functions are reachable"
    if isinstance(value, type):
        if value in SAFE_CLASSES or _defined_in_cadquery(value):
            return None
        return f"it is the class {value.__name__!r}, which is neither CadQuery's nor an allowed builtin"
    owner = (getattr(type(value), "__module__", "") or "").split(".")[0]
    if owner == "OCP":
        return "it is a raw OpenCascade object"
    if isinstance(value, (dict, list, tuple, set)) and type(value) not in SAFE_CLASSES and owner != "cadquery":
        return f"it is a {type(value).__name__} table of the {owner!r} package; call it instead of reading it"
    return None


def _why_name_refused(name) -> str | None:
    """Why an attribute name is refused, or None when it may be read."""
    if not isinstance(name, str):
        return "attribute names must be strings"
    if name.startswith("_"):
        return "names starting with '_' are private"
    low = name.lower()
    for part in DENIED_NAME_PARTS:
        if part in low:
            return f"attribute names containing {part!r} are refused (files, internals or raw OpenCascade)"
    if low.startswith(DENIED_NAME_PREFIXES):
        return "frame, code and traceback attributes are refused"
    return None


def _from_metaclass(cls: type, name: str) -> bool:
    """True when ``cls.name`` is found on the class's metaclass rather than on the class and its bases."""
    return not any(name in vars(base) for base in cls.__mro__)


def guarded_getattr(obj, name, *default):
    """RestrictedPython's ``_getattr_``: the single door through which a program reads attributes."""
    why = _why_name_refused(name)
    if why is None:
        if _is_module(obj):
            if obj.__name__ not in ALLOWED_IMPORTS:
                why = f"module {obj.__name__!r} is not reachable"
        elif type(obj) in SAFE_VALUE_ATTRS:
            if name not in SAFE_VALUE_ATTRS[type(obj)]:
                why = f"{type(obj).__name__}.{name} is not on the allow-list"
        elif not _from_cadquery(obj):
            why = f"attributes of {type(obj).__name__} objects are not reachable"
        elif isinstance(obj, type) and _from_metaclass(obj, name):
            why = f"{name} belongs to the metaclass of {obj.__name__}, not to CadQuery"
    if why is None:
        value = getattr(obj, name, *default)
        if _is_module(obj) and obj.__name__ == "cadquery" and not _defined_in_cadquery(value):
            why = f"cq.{name} is not one of CadQuery's own classes or functions"
        else:
            why = _why_value_refused(value)
            if why is None:
                return value
    raise Forbidden(f"cannot read attribute {name!r}: {why}")


def guarded_getitem(obj, key):
    """RestrictedPython's ``_getitem_``: ``obj[key]``, if the value it gives is one a program may hold."""
    value = obj[key]
    why = _why_value_refused(value)
    if why is not None:
        raise Forbidden(f"cannot take an item of a {type(obj).__name__}: {why}")
    return value


def guarded_iter(obj):
    """RestrictedPython's ``_getiter_``: iterate Python's own containers and iterators and CadQuery
    objects only, and check every value handed out."""
    if type(obj).__module__ != "builtins" and not _from_cadquery(obj):
        raise Forbidden(f"cannot iterate over a {type(obj).__name__}: only Python's own containers and "
                        "CadQuery objects")
    for value in obj:
        why = _why_value_refused(value)
        if why is not None:
            raise Forbidden(f"cannot iterate over this {type(obj).__name__}: {why}")
        yield value


def _guarded_write(obj):
    """RestrictedPython's ``_write_``: item assignment into lists and dicts only; no attribute writes."""
    if type(obj) in (list, dict):
        return obj
    raise Forbidden(f"cannot modify a {type(obj).__name__}: only list and dict items may be assigned")


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or name not in ALLOWED_IMPORTS:
        raise Forbidden(f"import of {name!r} is not allowed; only 'import cadquery as cq' and 'import math'")
    return __import__(name)


class _BoundedPrint:
    """RestrictedPython's ``_print_``: print() into a buffer that silently stops at MAX_PRINT_CHARS."""

    def __init__(self, _getattr_=None):
        self.chars = 0
        self.txt = []

    def write(self, text):
        if self.chars < MAX_PRINT_CHARS:
            self.txt.append(text[: MAX_PRINT_CHARS - self.chars])
        self.chars += len(text)

    def flush(self):
        """print(..., flush=True) calls this; the buffer has nothing to flush."""

    def __call__(self):
        return "".join(self.txt)

    def _call_print(self, *objects, **kwargs):
        if kwargs.get("file") is not None:
            raise Forbidden("print(file=...) is not allowed")
        kwargs["file"] = self
        print(*objects, **kwargs)


_INPLACE = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
            "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "@=": operator.imatmul,
            "|=": operator.ior, "&=": operator.iand, "^=": operator.ixor, "<<=": operator.ilshift,
            ">>=": operator.irshift}


def _inplacevar(op, x, y):
    if op not in _INPLACE:
        raise Forbidden(f"augmented assignment {op} is not allowed")
    return _INPLACE[op](x, y)


def nesting_depth(tree: ast.AST) -> int:
    """The depth of a syntax tree, counted without recursion (so any depth can be measured)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


@contextmanager
def _recursion_limit(limit: int):
    """Raise Python's recursion limit to at least ``limit`` for the block (compiling a deep tree)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


_TOO_DEEP = ("the program is nested too deeply ({depth}): a chain of calls or an expression this long cannot "
             f"be compiled; the sandbox accepts up to {MAX_NESTING} levels (about {MAX_NESTING // 2} chained "
             "method calls): split it into several statements")


def check_source(code: str):
    """Static checks before compiling: returns ``(kind, message)`` or None when the source may run.

    Only ``import cadquery as cq``, ``import math`` and ``from math import ...`` are accepted, none
    of ``FORBIDDEN_NAMES`` may appear as a name, and the syntax tree may be at most ``MAX_NESTING``
    levels deep.
    """
    if not isinstance(code, str):
        return "syntax", f"code must be a str, got {type(code).__name__}"
    if len(code) > MAX_CODE_CHARS:
        return "forbidden", f"program has {len(code)} characters; the limit is {MAX_CODE_CHARS}"
    try:
        with _recursion_limit(10 * MAX_NESTING):
            tree = ast.parse(code)
    except RecursionError:
        return "syntax", _TOO_DEEP.format(depth=f"more than {MAX_NESTING} levels")
    except (SyntaxError, ValueError, MemoryError) as error:
        return "syntax", describe_error(error)
    depth = nesting_depth(tree)
    if depth > MAX_NESTING:
        return "syntax", _TOO_DEEP.format(depth=f"{depth} levels")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ALLOWED_IMPORTS.get(alias.name) != (alias.asname or alias.name):
                    return "forbidden", (f"line {node.lineno}: 'import {alias.name}"
                                         f"{' as ' + alias.asname if alias.asname else ''}' is not allowed; "
                                         "only 'import cadquery as cq' and 'import math'")
        elif isinstance(node, ast.ImportFrom):
            if node.module != "math" or node.level != 0 or any(a.name == "*" for a in node.names):
                return "forbidden", f"line {node.lineno}: only 'from math import name' is allowed"
        elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("_")):
            return "forbidden", f"line {node.lineno}: the name {node.id!r} is not available in the sandbox"
        elif isinstance(node, (ast.ClassDef, ast.Global, ast.Nonlocal, ast.AsyncFunctionDef, ast.Await)):
            return "forbidden", f"line {node.lineno}: {type(node).__name__} is not allowed"
    return None


def sandbox_globals() -> dict:
    """The globals a compiled program runs with: the allow-listed builtins, the guards, and ``math``."""
    safe = {name: getattr(builtins, name) for name in ALLOWED_BUILTIN_NAMES}
    safe.update({"None": None, "True": True, "False": False, "__import__": _guarded_import})
    return {
        "__builtins__": safe, "__name__": "cadquery_program", "math": math,
        "_getattr_": guarded_getattr, "_getitem_": guarded_getitem, "_getiter_": guarded_iter,
        "_write_": _guarded_write, "_inplacevar_": _inplacevar, "_print_": _BoundedPrint,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence, "_unpack_sequence_": guarded_unpack_sequence,
        "_apply_": lambda f, *args, **kwargs: f(*args, **kwargs),
    }


def compile_program(code: str):
    """Compile ``code`` for the sandbox: returns ``(bytecode, None)`` or ``(None, (kind, message))``."""
    refused = check_source(code)
    if refused:
        return None, refused
    try:
        with _recursion_limit(10 * MAX_NESTING):
            result = compile_restricted_exec(code, filename="<cadquery program>")
    except RecursionError:
        return None, ("syntax", _TOO_DEEP.format(depth=f"more than {MAX_NESTING} levels"))
    if result.errors or result.code is None:
        return None, ("forbidden", "; ".join(result.errors) or "RestrictedPython refused the program")
    return result.code, None


# An absolute path of two or more parts (/usr/lib/python3.11/os.py, C:\Python\lib\os.py).
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][\w.+~-]+){2,}")


def describe_error(error: BaseException) -> str:
    """``"TypeError: message"`` for an exception a program raised, never raising itself.

    Describing an error can fail in its turn (``ValueError(10 ** 5000)``: the int is too long to turn
    into text); then only its type is named. Installation paths are cut down to the file's name, and
    the message to ``MAX_MESSAGE_CHARS``: it says what went wrong, not where things live on this machine.
    """
    name = type(error).__name__
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - whatever describing it raises, the error is still reported
        return f"{name} (its message could not be turned into text)"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + " ...[truncated]"
    text = _PATH.sub(lambda match: re.split(r"[\\/]", match.group(0))[-1], text)
    return f"{name}: {text}" if text else name
