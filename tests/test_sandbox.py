"""The sandbox for model-generated CadQuery code: an adversarial corpus, then the positive cases.

Every program of the corpus (``tests/sandbox_corpus.py``) must come back with the expected ``kind``
(blocked at compile time, refused by a guard, contained by its process, or run) and a message that
names no installation path; afterwards the caller must be untouched (no file created, environment
unchanged), the worker must be the same warm process, and the next program must find everything as
if nothing had run before it.
"""

import math
import os
import signal
import sys
import threading
import time

import pytest

from cadlab.cad import restricted, sandbox
from cadlab.cad.sandbox import ERROR_KINDS, ExecResult, run_cadquery
from sandbox_corpus import CANARY, CORPUS, PROBE, PROBE_VOLUME, SECRET, H

BOX_WITH_HOLE = """import cadquery as cq
r = cq.Workplane('XY', origin=(0, 0, -50)).sketch().circle(50).push([(10, 0)]).rect(10, 20, mode='s').finalize().extrude(100)
"""
BOX_WITH_HOLE_VOLUME = math.pi * 50**2 * 100 - 10 * 20 * 100


@pytest.fixture(scope="module", autouse=True)
def clean_canary():
    os.makedirs(CANARY, exist_ok=True)
    for name in os.listdir(CANARY):
        os.remove(os.path.join(CANARY, name))
    os.environ[SECRET] = "do-not-read"
    yield
    os.environ.pop(SECRET, None)


def test_corpus_is_large():
    assert len(CORPUS) >= 130
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)


def _names_an_installation_path(message: str) -> bool:
    places = {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), os.path.expanduser("~")}
    return "site-packages" in message or any(place in message for place in places if len(place) > 1)


@pytest.mark.parametrize("name,code,kinds", CORPUS, ids=[c[0] for c in CORPUS])
def test_program_is_blocked_contained_or_run(name, code, kinds):
    env_before = dict(os.environ)
    run_cadquery(H)                                      # a warm worker to watch
    pid = sandbox.worker_pid()
    result = run_cadquery(code, timeout=20.0 if kinds == {"ok"} else 2.0)   # programs that must run get time
    assert isinstance(result, ExecResult)
    assert result.kind in ERROR_KINDS
    assert result.kind in kinds, f"{name}: got {result.kind}: {result.message}"
    assert result.ok == (result.kind == "ok") and (result.mesh is not None) == result.ok
    assert len(result.message) <= restricted.MAX_MESSAGE_CHARS + 100
    assert not _names_an_installation_path(result.message), result.message
    assert dict(os.environ) == env_before
    assert os.listdir(CANARY) == []
    assert sandbox.worker_pid() == pid, f"{name}: the worker was replaced"
    probe = run_cadquery(PROBE)
    assert probe.ok and probe.mesh.volume == pytest.approx(PROBE_VOLUME), f"{name} changed the next program: {probe}"


def test_caller_unaffected_after_corpus():
    assert os.listdir(CANARY) == []
    assert os.environ[SECRET] == "do-not-read"
    result = run_cadquery(BOX_WITH_HOLE)
    assert result.ok, result


# ------------------------------------------------------------------------------------------
# The guard itself, without a process
# ------------------------------------------------------------------------------------------
def test_guard_allows_cadquery_and_math_only():
    import cadquery as cq

    g = restricted.guarded_getattr
    assert g(cq, "Workplane") is cq.Workplane
    assert g(math, "sqrt") is math.sqrt
    assert g([1], "append")
    for obj, name in [(cq, "exporters"), (cq, "importers"), (cq.Workplane, "export"), (cq.Shape, "exportStl"),
                      (cq.Shape, "importBrep"), (1, "__class__"), ("s", "format"), (str, "format"),
                      (os, "system"), (lambda: 0, "func_globals"), (ValueError(), "args")]:
        with pytest.raises(restricted.Forbidden):
            g(obj, name)


def test_static_check_names_the_problem():
    assert restricted.check_source("import cadquery as cq\nimport math\nfrom math import pi\nr = 1") is None
    kind, message = restricted.check_source("import os")
    assert kind == "forbidden" and "import os" in message
    kind, message = restricted.check_source("x = (")
    assert kind == "syntax"


def test_bad_timeout_is_a_clear_error():
    with pytest.raises(ValueError, match="timeout"):
        run_cadquery(H, timeout=0)


# ------------------------------------------------------------------------------------------
# Positive cases and the worker's life cycle
# ------------------------------------------------------------------------------------------
def test_box_with_hole_has_expected_volume():
    result = run_cadquery(BOX_WITH_HOLE)
    assert result.ok and result.kind == "ok", result
    assert result.mesh.is_watertight
    assert result.mesh.volume == pytest.approx(BOX_WITH_HOLE_VOLUME, rel=2e-3)
    assert result.mesh.bounds.ravel().tolist() == pytest.approx([-50, -50, -50, 50, 50, 50], abs=0.05)  # chords of the circle


def test_cad_recode_style_program_with_union():
    code = """import cadquery as cq
w0 = cq.Workplane('YZ', origin=(-20, 0, 0))
r = w0.sketch().segment((-30, -10), (30, -10)).segment((30, 10)).arc((0, 25), (-30, 10)).segment((-30, -10)).assemble().push([(0, 0)]).circle(5, mode='s').finalize().extrude(40)
r = r.union(cq.Workplane('XY', origin=(0, 0, -30)).box(20, 20, 10))
r = r.union(cq.Workplane('ZX', origin=(0, 0, 0)).cylinder(60, 4))
"""
    result = run_cadquery(code)
    assert result.ok, result
    assert result.mesh.is_watertight and result.mesh.volume > 0


def test_math_is_available():
    code = "import cadquery as cq\nimport math\nfrom math import sqrt\nr = cq.Workplane('XY').box(sqrt(16), 2 * math.pi, 1)\n"
    result = run_cadquery(code)
    assert result.ok and result.mesh.volume == pytest.approx(4 * 2 * math.pi, rel=1e-6)


def test_program_without_r():
    result = run_cadquery("import cadquery as cq\nsolid = cq.Workplane('XY').box(1, 1, 1)\n")
    assert result.kind == "no_r" and not result.ok and "r" in result.message


@pytest.mark.parametrize("code", [
    "import cadquery as cq\nr = cq.Workplane('XY').rect(10, 10)\n",                 # a wire: 0 faces
    "import cadquery as cq\nr = cq.Workplane('XY').add(cq.Face.makePlane(10, 10))\n",  # a flat face: 1 face
    "r = 42\n",                                                                      # not a shape at all
])
def test_flat_or_non_solid_is_invalid(code):
    result = run_cadquery(code)
    assert result.kind == "invalid" and result.mesh is None, result


def test_cadquery_error_is_reported():
    result = run_cadquery("import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1).faces('>Z').fillet(5)\n")
    assert result.kind == "cadquery" and not result.ok, result


def _processes(field: int, value: int) -> list[int]:
    """The live (not zombie) processes whose stat ``field`` (1 parent, 2 process group) is ``value``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[field]) == value and fields[0] != "Z":
                found.append(int(entry))
    return found


def _children(pid: int) -> list[int]:
    return _processes(1, pid)


def _thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_warm_worker_survives_timeouts_memory_bombs_and_errors():
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    assert run_cadquery("while True:\n    pass", timeout=0.5).kind == "timeout"
    assert run_cadquery("x = ' ' * (10 ** 11)").kind == "memory"
    assert run_cadquery("raise ValueError(10 ** 5000)").kind == "cadquery"
    assert run_cadquery(H).ok and sandbox.worker_pid() == pid
    time.sleep(0.5)
    assert len(_children(pid)) == 1, "besides the one waiting for the next program, a program's process lives on"
    assert _thread_count(pid) == 1, "the worker must stay single-threaded to fork safely"


def test_each_program_runs_in_a_process_of_its_own():
    """A program's process ends with it; the worker itself never runs a program."""
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    threading.Timer(0.5, lambda: [os.kill(child, signal.SIGKILL) for child in _children(pid)]).start()
    result = run_cadquery("while True:\n    pass", timeout=20)
    # "crash", not "timeout": the end was seen when it happened (an end noticed only at the 20 s timeout
    # is reported as a timeout), whatever the machine's speed
    assert result.kind == "crash", result
    assert "SIGKILL" in result.message
    assert sandbox.worker_pid() == pid and run_cadquery(H).ok


def test_bad_tolerance_is_a_clear_error_and_leaves_the_worker_alone():
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    for tolerance in [(0, 0.1), (0.1,), ("a", "b"), (math.nan, 0.1), None, (1e-3, -1)]:
        with pytest.raises(ValueError, match="tolerance"):
            run_cadquery(H, tolerance=tolerance)
    assert run_cadquery(H).ok and sandbox.worker_pid() == pid


def test_worker_killed_from_outside_is_replaced():
    assert run_cadquery(H).ok
    os.kill(sandbox.worker_pid(), signal.SIGKILL)
    time.sleep(0.2)
    assert run_cadquery(H).ok


def test_worker_dying_mid_program_is_a_crash_and_takes_its_program_along():
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    result = run_cadquery("while True:\n    pass", timeout=20)
    assert result.kind == "crash", result          # not "timeout": seen when it happened, not 20 + 30 s later
    assert "SIGKILL" in result.message
    time.sleep(0.5)
    assert _processes(2, pid) == [], "processes of the dead worker still run"
    assert run_cadquery(H).ok


def test_memory_cap_is_applied():
    result = run_cadquery(f"x = ' ' * {sandbox.MEMORY_CAP}")
    assert result.kind == "memory", result
    assert run_cadquery(BOX_WITH_HOLE).ok
    small = run_cadquery("x = ' ' * (300 * 1024 ** 2)\n" + H, memory_cap=sandbox.MEMORY_CAP)
    assert small.ok, small


def test_deep_program_is_refused_with_a_message_before_compiling():
    from sandbox_corpus import chain_of_calls

    kind, message = restricted.check_source(chain_of_calls(800))
    assert kind == "syntax" and "nested too deeply" in message and "split it" in message
    assert restricted.check_source(chain_of_calls(300)) is None


def test_error_descriptions_never_raise_and_name_no_paths():
    assert restricted.describe_error(ValueError(10 ** 5000)).startswith("ValueError (its message")
    message = restricted.describe_error(ValueError(f"<module 'os' from '{os.__file__}'>"))
    assert "os.py" in message and os.path.dirname(os.__file__) not in message
    assert restricted.describe_error(ValueError("1/0 and a/b")) == "ValueError: 1/0 and a/b"
