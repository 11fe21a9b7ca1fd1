"""The only place where model-generated CadQuery code runs: a sandbox with two walls.

Wall 1, the language (``cadlab.cad.restricted``): a program is compiled with RestrictedPython and
may import only ``cadquery as cq`` and ``math``, call a short list of builtins, and read attributes
of CadQuery objects, numbers, strings and plain containers through guards that refuse files,
modules, raw OpenCascade handles and Python's internals.

Wall 2, the process. Programs run in a worker process (a fresh interpreter, not a copy of the
caller) that imports CadQuery once, then wipes its environment variables, forbids itself to write
a single byte to a regular file (``RLIMIT_FSIZE = 0``) and sends its stdout/stderr to ``/dev/null``.
The worker never runs a program itself: for each one it forks a child, a copy of its warm self,
which caps its address space (``RLIMIT_AS = memory_cap``) and its CPU time, runs the program and
sends back the mesh, then exits. So

- every program starts from the same state: nothing one program changes (a class's registry, a
  cache inside CadQuery, leaked memory) is seen by the next;
- whatever a program does to its child (an endless loop, a memory bomb, a crash inside OpenCascade)
  costs only that child: the worker kills it after ``timeout`` seconds, reports what happened and
  stays warm. A fork costs about 10 ms; starting a worker (importing CadQuery) a few seconds, paid
  once per Python session.

``run_cadquery(code)`` returns an ``ExecResult``; ``result.kind`` is one of ``ERROR_KINDS``:
``'ok'``, ``'syntax'`` (not Python, or nested too deeply to compile), ``'forbidden'``,
``'timeout'``, ``'memory'``, ``'cadquery'`` (the program raised: a CadQuery/OpenCascade failure or
any other run-time error), ``'no_r'`` (no variable ``r``), ``'invalid'`` (``r`` is not a solid with
more than 2 faces, as in CAD-Recode's invalid-ratio metric) or ``'crash'`` (the program's process
died without an answer, e.g. a segmentation fault inside OpenCascade). The mesh is
``r.val().tessellate(0.001, 0.1)`` as in CAD-Recode's demo, turned into a ``trimesh.Trimesh``.
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import trimesh

from cadlab.cad.restricted import MAX_CODE_CHARS, Forbidden, compile_program, describe_error, sandbox_globals

ERROR_KINDS = ("ok", "syntax", "forbidden", "timeout", "memory", "cadquery", "no_r", "invalid", "crash")

MEMORY_CAP = 2 * 1024**3        # RLIMIT_AS of a program's process; CadQuery + OCP and a typical run peak at ~1.15 GiB
STARTUP_TIMEOUT = 120.0         # seconds a new worker may take to import CadQuery
ANSWER_GRACE = 30.0             # seconds past a program's timeout before the worker itself counts as hung
TESSELLATION = (0.001, 0.1)     # CAD-Recode's demo: linear tolerance (code units), angular tolerance (radians)

# What the worker runs once before serving, so that each program's process (a fork of it) finds
# CadQuery's lazily built parts (sketches, fillets, cuts, the mesher) in place. Nothing here may start
# a thread: a process with threads cannot be forked safely, and OpenCascade starts a thread pool for
# some booleans (``union``, ``hole``, a sketch's ``mode='s'``); ``_worker_main`` checks.
WARM_UP_PROGRAM = """import cadquery as cq
w = cq.Workplane('YZ').sketch().segment((-3, -1), (3, -1)).segment((3, 1)).arc((0, 2.5), (-3, 1)).segment((-3, -1))
w = w.assemble().finalize().extrude(4).faces('>X').workplane().circle(0.5).cutThruAll()
p = cq.Workplane('XY').polyline([(0, 0), (1, 0), (1, 1)]).close().extrude(1)
c = cq.Workplane('XY').sketch().circle(5).finalize().extrude(3).edges('>Z').fillet(0.5)
r = cq.Workplane('XY').box(4, 4, 4).edges('|Z').fillet(0.5)
"""


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
# Running one program (inside a program's process; tests call it directly for harmless programs)
# --------------------------------------------------------------------------------------------
def execute_in_this_process(code: str, tolerance: tuple = TESSELLATION) -> dict:
    """Compile, run and tessellate ``code`` in this process. Returns a plain dict: kind, message,
    vertices, faces, seconds. Never raises: every exception, including one raised while describing
    another, becomes a kind and a message."""
    start = time.perf_counter()

    def done(kind, message="", vertices=None, faces=None):
        return {"kind": kind, "message": message, "vertices": vertices, "faces": faces,
                "seconds": time.perf_counter() - start}

    try:
        bytecode, refused = compile_program(code)
    except BaseException as error:  # noqa: BLE001 - the compiler failing on a program is the program's error
        return done("syntax", f"the program could not be compiled: {describe_error(error)}")
    if refused:
        return done(*refused)
    namespace = sandbox_globals()
    try:
        exec(bytecode, namespace)
    except Forbidden as error:
        return done("forbidden", describe_error(error).removeprefix("Forbidden: "))
    except MemoryError as error:
        return done("memory", describe_error(error))
    except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, anything: all contained
        kind = "memory" if _out_of_memory(error) else "cadquery"
        return done(kind, describe_error(error))
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
        return done("memory", describe_error(error))
    except BaseException as error:  # noqa: BLE001
        kind = "memory" if _out_of_memory(error) else "cadquery"
        return done(kind, f"while tessellating: {describe_error(error)}")


def _out_of_memory(error: BaseException) -> bool:
    """OpenCascade reports an exhausted address space as Standard_OutOfMemory or std::bad_alloc."""
    try:
        return "OutOfMemory" in type(error).__name__ or "bad_alloc" in str(error)
    except BaseException:  # noqa: BLE001 - an error whose message cannot be read is not a memory error
        return False


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
# Wall 2: the worker process, and one forked child per program
# --------------------------------------------------------------------------------------------
def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Child:
    """A child of the worker that runs exactly one program. It is forked in advance, once the previous
    program has answered, so the fork is not on a program's clock."""

    def __init__(self, close_fds: tuple):
        job_r, self.job_w = os.pipe()
        self.answer_r, answer_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            status = 1
            try:
                for fd in (*close_fds, self.job_w, self.answer_r):
                    os.close(fd)
                _child_main(Connection(job_r, writable=False), Connection(answer_w, readable=False))
                status = 0
            finally:
                os._exit(status)                         # never return into the worker's loop
        os.close(job_r)
        os.close(answer_w)
        self.jobs = Connection(self.job_w, readable=False)
        self.answers = Connection(self.answer_r, writable=False)
        self.started = None

    def start(self, job: tuple) -> None:
        """Hand the child its program; the clock starts now."""
        self.timeout, self.started = job[2], time.perf_counter()
        try:
            self.jobs.send(job)
        except OSError:                                  # the child is gone already: ``answer`` says how
            pass

    def answer(self) -> dict:
        """Wait for the answer until ``timeout`` seconds after ``start``. A child that answered is left to
        exit by itself (``reap`` collects it later); one that did not is killed, and its end is reported
        as a timeout or a crash."""
        finished = False
        try:
            finished = self.answers.poll(max(0.0, self.started + self.timeout - time.perf_counter()))
            if finished:
                return self.answers.recv()
        except (EOFError, OSError):
            finished = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = self.reap()
        seconds = time.perf_counter() - self.started
        if not finished or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
            return {"kind": "timeout", "message": f"the program ran longer than {self.timeout:g} s and was stopped",
                    "seconds": seconds}
        how = (f"was killed by {_signal_name(os.WTERMSIG(status))}" if os.WIFSIGNALED(status)
               else f"exited with code {os.WEXITSTATUS(status)}")
        return {"kind": "crash", "seconds": seconds,
                "message": f"the program's process {how} before answering (a crash inside CadQuery or "
                           "OpenCascade); the sandbox is unharmed"}

    def reap(self, wait: bool = True):
        """Collect the child once it has ended (a child that answered exits at once) and return its
        wait status; with ``wait=False``, return None at once if it is still ending."""
        if self.pid is not None:
            pid, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
            if pid == 0:
                return None
            self.pid, self.status = None, status
            self.jobs.close()
            self.answers.close()
        return self.status


def _child_main(jobs: Connection, answers: Connection) -> None:
    """A program's process: take one job, cap memory and CPU time, run it, answer."""
    import resource  # deferred: Unix only, and needed in the worker alone

    try:
        code, tolerance, timeout, memory_cap = jobs.recv()
    except EOFError:                                     # the worker stopped before giving us a program
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = int(used.ru_utime + used.ru_stime + 2 * timeout) + 5   # a backstop should the worker die
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    result = execute_in_this_process(code, tolerance)
    try:
        answers.send(result)
    except MemoryError:
        answers.send({"kind": "memory", "message": "the result was too large to send back",
                      "vertices": None, "faces": None, "seconds": result["seconds"]})


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:                                      # no /proc: trust the warm-up to start none
        return 1


def _worker_main(read_fd: int, write_fd: int) -> None:
    """Entry point of a worker process: import CadQuery, lock itself down, then serve each program in a
    child forked for it."""
    import resource  # deferred: Unix only, and needed in the worker alone

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    import cadquery  # noqa: F401 - deferred on purpose: only the worker imports CadQuery (a few seconds), once
    import numpy  # noqa: F401

    execute_in_this_process(WARM_UP_PROGRAM)
    if _thread_count() != 1:
        raise RuntimeError("the sandbox worker must be single-threaded to fork programs safely")
    os.environ.clear()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # writing a file then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    gc.freeze()                                         # children's garbage collections leave the shared pages alone
    spare, ending = _Child(close_fds=(read_fd, write_fd)), []
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            job = inbox.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        child, spare = spare, None
        child.start(job)
        outbox.send(child.answer())
        spare = _Child(close_fds=(read_fd, write_fd))    # the next program's process, forked between programs
        ending.append(child)
        ending = [child for child in ending if child.reap(wait=False) is None]   # keep those still ending


class _Worker:
    """The warm worker: a fresh Python interpreter (not a fork of the caller) and two pipes to it.

    Its environment holds only what Python needs to find packages (and is wiped once CadQuery is
    imported), its working directory is ``/``, its stdout/stderr are ``/dev/null``, and it leads its
    own session, so a Ctrl-C in the notebook does not reach it and ``kill`` stops it together with
    any child it has running.
    """

    def __init__(self):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {key: os.environ[key] for key in ("PATH", "LD_LIBRARY_PATH", "SYSTEMROOT") if key in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread: safe to fork
        command = f"from cadlab.cad.sandbox import _worker_main; _worker_main({to_child_r}, {from_child_w})"
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, cwd="/", pass_fds=(to_child_r, from_child_w),
            start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self.inbox = Connection(from_child_r, writable=False)
        self.outbox = Connection(to_child_w, readable=False)
        ready = False
        try:
            ready = self.inbox.poll(STARTUP_TIMEOUT) and self.inbox.recv()[0] == "ready"
        except (EOFError, OSError):
            pass
        if not ready:
            self.kill()
            raise RuntimeError(f"the CadQuery sandbox worker did not start within {STARTUP_TIMEOUT:.0f} s "
                               f"(exit code {self.process.returncode}): is cadquery installed in {sys.executable}?")
        self.startup_seconds = time.perf_counter() - self.started

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self) -> str:
        """How the worker ended, in words (waiting a moment for it to finish dying)."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "is not answering"
        return f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"

    def kill(self) -> None:
        """Stop the worker and any program child it has running (they share its process group)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
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


def _check_tolerance(tolerance) -> tuple:
    try:
        linear, angular = (float(t) for t in tolerance)
    except (TypeError, ValueError):
        linear = angular = math.nan
    if not (linear > 0 and angular > 0 and math.isfinite(linear) and math.isfinite(angular)):
        raise ValueError(f"tolerance must be two positive numbers (linear, angular), like {TESSELLATION}; "
                         f"got {tolerance!r}")
    return linear, angular


def run_cadquery(code: str, timeout: float = 3.0, memory_cap: int = MEMORY_CAP,
                 tolerance: tuple = TESSELLATION) -> ExecResult:
    """Run a CadQuery program in the sandbox; return its tessellated ``r`` or a structured error.

    ``tolerance``: the tessellation's (linear, angular) tolerances; the default is CAD-Recode's
    demo. A coarser one (the number fit in ``cadlab.cad.reconstruct`` uses (0.5, 0.3)) makes fewer
    triangles, so a program runs several times faster; the solid is the same.

    ``timeout`` is the wall-clock budget, in seconds, for compiling, running and tessellating the
    program (starting the worker, a few seconds once per session, is not counted).
    ``ExecResult.seconds`` is the whole call as the caller saw it. Never raises for anything the
    program does; a ``timeout``, ``memory_cap`` or ``tolerance`` that makes no sense is a ValueError.
    """
    global _worker
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not (isinstance(memory_cap, int) and memory_cap > 0):
        raise ValueError(f"memory_cap must be a positive number of bytes, got {memory_cap!r}")
    tolerance = _check_tolerance(tolerance)
    start = time.perf_counter()

    def result(kind, message, mesh=None):
        return ExecResult(kind == "ok", mesh, kind, message, time.perf_counter() - start)

    if not isinstance(code, str):
        return result("syntax", f"code must be a str, got {type(code).__name__}")
    if len(code) > MAX_CODE_CHARS:
        return result("forbidden", f"program has {len(code)} characters; the limit is {MAX_CODE_CHARS}")
    with _lock:
        if _worker is not None and not _worker.alive():
            shutdown()
        if _worker is None:
            _worker = _Worker()
        worker, answer = _worker, None
        try:
            worker.outbox.send((code, tolerance, float(timeout), memory_cap))
            if worker.inbox.poll(timeout + ANSWER_GRACE):
                answer = worker.inbox.recv()
        except (EOFError, OSError):
            how = worker.exit_status()
            shutdown()
            return result("crash", f"the sandbox's worker process {how}; a new one starts with the next program")
        except BaseException:
            shutdown()                     # interrupted mid-job (Ctrl-C): stop the program with its worker
            raise
        if answer is None:
            shutdown()
            return result("timeout", f"the program ran longer than {timeout:g} s and was stopped")
    mesh = None
    if answer["kind"] == "ok":
        mesh = trimesh.Trimesh(answer["vertices"], answer["faces"])
    return result(answer["kind"], answer["message"], mesh)
