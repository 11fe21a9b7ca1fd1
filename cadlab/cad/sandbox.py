"""The only place where model-generated CadQuery code runs: a sandbox with two walls.

Wall 1, the language. A program is compiled with RestrictedPython, which refuses at compile
time every name or attribute that starts with ``_`` (so no ``__class__``, ``__subclasses__``,
``__globals__``, ``__import__``, ``__builtins__``) and routes every attribute read through a
guard. Our guard, ``_guarded_getattr``, lets a program read attributes only of CadQuery
objects and classes, the ``cq`` and ``math`` modules, and a short list of methods of numbers,
strings, lists, tuples and dicts; it refuses any attribute whose name mentions files
(``export``, ``import``, ``save``, ``open``, ``write``, ``read``, ``load``, ``dump``, ``file``,
``path``, ``text`` ...), raw OpenCascade handles (``wrapped``, ``toOCC``), frames and code
(``gi_frame``, ``f_globals`` ...) and ``str.format`` (whose ``{0.__class__}`` fields would read
attributes behind the guard's back), and it never hands a module back (``cq.exporters``,
``cq.occ_impl``, ``cq.vis`` are all refused). The only imports are ``import cadquery as cq``
(the first line of every CAD-Recode program) and ``import math`` / ``from math import ...``.
The builtins are a short allow-list (numbers, ``range``, ``len``, ``min`` ...): no ``open``,
``exec``, ``eval``, ``compile``, ``getattr``, ``globals``, ``vars``, ``locals``, ``type``.
``print`` writes into a buffer capped at 10 kB.

Wall 2, the process. The program runs in a separate worker process (a fresh interpreter)
whose environment variables are wiped, whose address space is capped with ``RLIMIT_AS``
(``MEMORY_CAP``), which may not write a single byte to a regular file (``RLIMIT_FSIZE = 0``),
and whose stdout/stderr go to ``/dev/null``. The parent waits at most ``timeout`` seconds of
wall-clock time and then kills it. A worker that timed out, ran out of memory or died is
replaced; a healthy one is reused (importing CadQuery costs seconds, a typical program
milliseconds) and recycled every ``RECYCLE_AFTER`` programs or when its resident memory passes
``RECYCLE_RSS`` (CadQuery leaks memory).

``run_cadquery(code)`` returns an ``ExecResult``; ``result.kind`` is one of ``ERROR_KINDS``:
``'ok'``, ``'syntax'``, ``'forbidden'``, ``'timeout'``, ``'memory'``, ``'cadquery'`` (the
program raised: a CadQuery/OpenCascade failure or any other run-time error), ``'no_r'`` (no
variable ``r``), ``'invalid'`` (``r`` is not a solid with more than 2 faces, as in CAD-Recode's
invalid-ratio metric) or ``'crash'`` (the worker died without an answer). The mesh is
``r.val().tessellate(0.001, 0.1)`` as in CAD-Recode's demo, turned into a ``trimesh.Trimesh``.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import math
import operator
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import trimesh
from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

ERROR_KINDS = ("ok", "syntax", "forbidden", "timeout", "memory", "cadquery", "no_r", "invalid", "crash")

MEMORY_CAP = 2 * 1024**3        # RLIMIT_AS of a worker; CadQuery + OCP import and a typical run peak at ~1.15 GiB
RECYCLE_AFTER = 200             # programs per worker before a fresh one is started
RECYCLE_RSS = 1536 * 1024**2    # ... or once the worker's resident memory passes this
STARTUP_TIMEOUT = 120.0         # seconds a new worker may take to import CadQuery
MAX_CODE_CHARS = 100_000        # longer "programs" are refused before they reach a worker
MAX_PRINT_CHARS = 10_000        # what print() may buffer inside the sandbox
MAX_MESSAGE_CHARS = 2_000       # error messages are truncated to this


@dataclass
class ExecResult:
    """What one sandboxed run produced. ``ok`` is ``kind == 'ok'``; ``mesh`` is a trimesh or None."""

    ok: bool
    mesh: object
    kind: str
    message: str
    seconds: float

    def __repr__(self) -> str:
        mesh = "None" if self.mesh is None else f"<{len(self.mesh.faces)} triangles>"
        return f"ExecResult(kind={self.kind!r}, mesh={mesh}, seconds={self.seconds:.3f}, message={self.message!r})"


# --------------------------------------------------------------------------------------------
# Wall 1: what a program may name and read (used inside the worker; pure Python, testable here)
# --------------------------------------------------------------------------------------------
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


def _from_cadquery(value) -> bool:
    """True for CadQuery objects and classes (their type or themselves defined in ``cadquery.*``)."""
    owner = value if isinstance(value, type) else type(value)
    return (getattr(owner, "__module__", "") or "").split(".")[0] == "cadquery"


def _from_cadquery_definition(value) -> bool:
    """True for classes and functions defined in ``cadquery.*`` (not re-exported helpers of other packages)."""
    return (getattr(value, "__module__", "") or "").split(".")[0] == "cadquery"


def _name_denied(name) -> str | None:
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


def _guarded_getattr(obj, name, *default):
    """RestrictedPython's ``_getattr_``: the single door through which a program reads attributes."""
    why = _name_denied(name)
    if why is None:
        if _is_module(obj):
            if obj.__name__ not in ALLOWED_IMPORTS:
                why = f"module {obj.__name__!r} is not reachable"
        elif type(obj) in SAFE_VALUE_ATTRS:
            if name not in SAFE_VALUE_ATTRS[type(obj)]:
                why = f"{type(obj).__name__}.{name} is not on the allow-list"
        elif not _from_cadquery(obj):
            why = f"attributes of {type(obj).__name__} objects are not reachable"
    if why is None:
        value = getattr(obj, name, *default)
        if _is_module(value):
            why = f"{name} is a module; only cadquery's classes and functions are reachable"
        elif _is_module(obj) and obj.__name__ == "cadquery" and not _from_cadquery_definition(value):
            why = f"cq.{name} is not one of CadQuery's own classes or functions"
        elif (getattr(type(value), "__module__", "") or "").startswith("OCP"):
            why = f"{name} is a raw OpenCascade object"
        else:
            return value
    raise Forbidden(f"cannot read attribute {name!r}: {why}")


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

    def __call__(self):
        return "".join(self.txt)

    def _call_print(self, *objects, **kwargs):
        if kwargs.get("file") is not None:
            raise Forbidden("print(file=...) is not allowed")
        kwargs["file"] = self
        print(*objects, **kwargs)


_INPLACE = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
            "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow}


def _inplacevar(op, x, y):
    if op not in _INPLACE:
        raise Forbidden(f"augmented assignment {op} is not allowed")
    return _INPLACE[op](x, y)


def check_source(code: str):
    """Static checks before compiling: returns ``(kind, message)`` or None when the source may run.

    Only ``import cadquery as cq``, ``import math`` and ``from math import ...`` are accepted, and
    none of ``FORBIDDEN_NAMES`` may appear as a name.
    """
    if not isinstance(code, str):
        return "syntax", f"code must be a str, got {type(code).__name__}"
    if len(code) > MAX_CODE_CHARS:
        return "forbidden", f"program has {len(code)} characters; the limit is {MAX_CODE_CHARS}"
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
        return "syntax", f"{type(error).__name__}: {error}"
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
        "_getattr_": _guarded_getattr, "_getitem_": operator.getitem, "_getiter_": iter,
        "_write_": _guarded_write, "_inplacevar_": _inplacevar, "_print_": _BoundedPrint,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence, "_unpack_sequence_": guarded_unpack_sequence,
        "_apply_": lambda f, *args, **kwargs: f(*args, **kwargs),
    }


def compile_program(code: str):
    """Compile ``code`` for the sandbox: returns ``(bytecode, None)`` or ``(None, (kind, message))``."""
    refused = check_source(code)
    if refused:
        return None, refused
    result = compile_restricted_exec(code, filename="<cadquery program>")
    if result.errors or result.code is None:
        return None, ("forbidden", "; ".join(result.errors) or "RestrictedPython refused the program")
    return result.code, None


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ...[truncated]"


TESSELLATION = (0.001, 0.1)   # CAD-Recode's demo: linear tolerance (code units), angular tolerance (radians)


def execute_in_this_process(code: str, tolerance: tuple = TESSELLATION) -> dict:
    """Compile, run and tessellate ``code`` here (the worker calls this; tests call it directly only
    for harmless programs). Returns a plain dict: kind, message, vertices, faces, seconds."""
    start = time.perf_counter()

    def done(kind, message="", vertices=None, faces=None):
        return {"kind": kind, "message": _short(message), "vertices": vertices, "faces": faces,
                "seconds": time.perf_counter() - start}

    bytecode, refused = compile_program(code)
    if refused:
        return done(*refused)
    namespace = sandbox_globals()
    try:
        exec(bytecode, namespace)
    except Forbidden as error:
        return done("forbidden", error)
    except MemoryError as error:
        return done("memory", f"MemoryError {error}")
    except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, anything: all contained
        kind = "memory" if "OutOfMemory" in type(error).__name__ or "bad_alloc" in str(error) else "cadquery"
        return done(kind, f"{type(error).__name__}: {error}")
    if "r" not in namespace:
        return done("no_r", "the program did not bind its solid to a variable named r")
    try:
        import cadquery as cq  # in the worker (already loaded there): the parent process never imports CadQuery
        import numpy as np

        r = namespace["r"]
        shape = r.val() if isinstance(r, cq.Workplane) else r
        if not isinstance(shape, cq.Shape):
            return done("invalid", f"r holds {type(shape).__name__}, not a CadQuery solid")
        n_faces = len(shape.Faces())
        if n_faces <= 2:
            return done("invalid", f"r has {n_faces} face(s); a valid solid needs more than 2")
        points, triangles = shape.tessellate(*tolerance)
        vertices = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64).reshape(-1, 3)
        faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
        if len(faces) == 0 or not np.isfinite(vertices).all():
            return done("invalid", "tessellation produced no usable triangles")
        return done("ok", f"{n_faces} faces", vertices, faces)
    except MemoryError as error:
        return done("memory", f"MemoryError {error}")
    except BaseException as error:  # noqa: BLE001
        return done("cadquery", f"{type(error).__name__} while tessellating: {error}")


# --------------------------------------------------------------------------------------------
# Validity: one rule for the whole course
# --------------------------------------------------------------------------------------------
def closed_solid(result):
    """The mesh of a sandbox ``ExecResult`` if it counts as a valid solid, else None.

    The course's one validity rule (the papers' "invalid" plus closedness): the program ran, its
    solid has more than two faces, and its surface is closed (watertight). CadQuery can return a
    "solid" whose shell has gaps; it has no inside, so its IoU is undefined. The reconstruction
    pipeline, the data generator (``synth.validate`` adds the training data's own rules: one body,
    inside the grid), the autocomplete scorer and the evaluations all use it.
    """
    if not result.ok or result.mesh is None or len(result.mesh.faces) <= 2:
        return None
    return result.mesh if result.mesh.is_watertight else None


def why_invalid(result) -> str:
    """One line saying why ``closed_solid(result)`` is None."""
    if result.ok:
        if result.mesh is None or len(result.mesh.faces) <= 2:
            return "the solid is degenerate (two faces or fewer)"
        return "the solid is not closed (its surface has open edges)"
    return f"{result.kind}: {result.message}"


# --------------------------------------------------------------------------------------------
# Wall 2: the worker process
# --------------------------------------------------------------------------------------------
def _resident_bytes() -> int:
    """This process's resident memory now, in bytes (Linux: ``/proc/self/statm``).

    Not ``ru_maxrss``: on Linux a process started by vfork + exec (as ``subprocess`` does) inherits
    its parent's peak there, so a worker started by a 2 GB notebook kernel would look 2 GB big
    after its first program and be recycled after every job."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):          # no /proc: the peak is the best there is
        import resource  # deferred: Unix only (cadlab.cad.sandbox imports on Windows)

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_main(read_fd: int, write_fd: int, memory_cap: int) -> None:
    """Entry point of a worker process: lock itself down, import CadQuery, then serve programs."""
    import resource  # deferred: Unix only, and needed in the worker alone
    import signal

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    import cadquery  # noqa: F401 - deferred on purpose: only the worker imports CadQuery (a few seconds), once
    import numpy  # noqa: F401

    os.environ.clear()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # writing a file then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            job = inbox.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        code, tolerance = job
        result = execute_in_this_process(code, tolerance)
        result["max_rss"] = _resident_bytes()
        try:
            outbox.send(result)
        except MemoryError:
            outbox.send({"kind": "memory", "message": "result too large to send", "vertices": None,
                         "faces": None, "seconds": result["seconds"], "max_rss": result["max_rss"]})


class _Worker:
    """One warm worker: a fresh Python interpreter (not a fork of the caller) and two pipes to it.

    Its environment holds only what Python needs to find packages (and is wiped once CadQuery is
    imported), its working directory is ``/``, its stdout/stderr are ``/dev/null``, and it runs in
    its own session so a Ctrl-C in the notebook does not reach it.
    """

    def __init__(self, memory_cap: int):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {key: os.environ[key] for key in ("PATH", "LD_LIBRARY_PATH", "SYSTEMROOT") if key in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        command = (f"from cadlab.cad.sandbox import _worker_main; "
                   f"_worker_main({to_child_r}, {from_child_w}, {int(memory_cap)})")
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, cwd="/", pass_fds=(to_child_r, from_child_w),
            start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self.inbox = Connection(from_child_r, writable=False)
        self.outbox = Connection(to_child_w, readable=False)
        self.jobs = 0
        self.memory_cap = memory_cap
        ready = False
        try:
            ready = self.inbox.poll(STARTUP_TIMEOUT) and self.inbox.recv()[0] == "ready"
        except (EOFError, OSError):
            pass
        if not ready:
            self.kill()
            raise RuntimeError(f"the CadQuery sandbox worker did not start within {STARTUP_TIMEOUT:.0f} s "
                               f"(exit code {self.process.returncode}): is cadquery installed in {sys.executable}, "
                               f"and does MEMORY_CAP ({memory_cap / 1024**3:.1f} GiB) fit its import?")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.inbox.close()
        self.outbox.close()


_lock = threading.Lock()
_worker: _Worker | None = None


def shutdown() -> None:
    """Stop the warm worker (a new one starts on the next call)."""
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker = None


atexit.register(shutdown)


def worker_pid() -> int | None:
    """Process id of the current warm worker (None when no worker is running)."""
    return None if _worker is None else _worker.process.pid


def run_cadquery(code: str, timeout: float = 3.0, memory_cap: int = MEMORY_CAP,
                 tolerance: tuple = TESSELLATION) -> ExecResult:
    """Run a CadQuery program in the sandbox; return its tessellated ``r`` or a structured error.

    ``tolerance``: the tessellation's (linear, angular) tolerances; the default is CAD-Recode's
    demo. A coarser one (the number fit in ``cadlab.cad.reconstruct`` uses (0.5, 0.3)) makes fewer
    triangles, so a program runs several times faster; the solid is the same.

    ``timeout`` is the wall-clock budget, in seconds, for compiling, running and tessellating the
    program (starting a fresh worker, ~3 s, is not counted). ``ExecResult.seconds`` is the whole
    call as the caller saw it. Never raises for anything the program does.
    """
    global _worker
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    start = time.perf_counter()

    def result(kind, message, mesh=None):
        return ExecResult(kind == "ok", mesh, kind, message, time.perf_counter() - start)

    if not isinstance(code, str):
        return result("syntax", f"code must be a str, got {type(code).__name__}")
    if len(code) > MAX_CODE_CHARS:
        return result("forbidden", f"program has {len(code)} characters; the limit is {MAX_CODE_CHARS}")
    with _lock:
        if _worker is not None and (not _worker.alive() or _worker.memory_cap != memory_cap):
            shutdown()
        if _worker is None:
            _worker = _Worker(memory_cap)
        worker, answer = _worker, None
        try:
            worker.outbox.send((code, tuple(float(t) for t in tolerance)))
            worker.jobs += 1
            if worker.inbox.poll(timeout):
                answer = worker.inbox.recv()
        except (EOFError, OSError, BrokenPipeError):
            answer = {"kind": "crash", "message": "the worker process died"}
        except BaseException:
            shutdown()                     # interrupted mid-job: the worker's state is unknown
            raise
        if answer is None:
            shutdown()
            return result("timeout", f"the program ran longer than {timeout} s and was killed")
        if answer["kind"] == "crash":
            worker.kill()
            exitcode = worker.process.returncode
            shutdown()
            return result("crash", f"the worker process died (exit code {exitcode})")
        if answer["kind"] == "memory" or answer.get("max_rss", 0) > RECYCLE_RSS or worker.jobs >= RECYCLE_AFTER:
            shutdown()
    mesh = None
    if answer["kind"] == "ok":
        mesh = trimesh.Trimesh(answer["vertices"], answer["faces"])
    return result(answer["kind"], answer["message"], mesh)
