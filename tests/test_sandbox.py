"""The sandbox for model-generated CadQuery code: an adversarial corpus, then the positive cases.

Every escape attempt must come back with the expected ``kind`` (blocked at compile time, refused
by the attribute guard, or contained by the worker process), and afterwards the caller must be
untouched: no file created, environment unchanged, and a normal program still runs.
"""

import math
import os
import signal
import threading
import time

import pytest

from cadlab.cad import sandbox
from cadlab.cad.sandbox import ERROR_KINDS, ExecResult, run_cadquery

CANARY = "/tmp/cadlab_sandbox_canary"   # every file-writing attempt targets a path under here
SECRET = "CADLAB_SANDBOX_SECRET"

BOX_WITH_HOLE = """import cadquery as cq
r = cq.Workplane('XY', origin=(0, 0, -50)).sketch().circle(50).push([(10, 0)]).rect(10, 20, mode='s').finalize().extrude(100)
"""
BOX_WITH_HOLE_VOLUME = math.pi * 50**2 * 100 - 10 * 20 * 100

H = "import cadquery as cq\nr = cq.Workplane('XY').box(10, 10, 10)\n"   # a valid solid to attack from

# (name, program, accepted kinds). "forbidden" = refused by the compiler or the guard.
CORPUS = [
    # imports
    ("import os", "import os\nos.system('touch " + CANARY + "/os')", {"forbidden"}),
    ("import sys", "import sys\nsys.exit(3)", {"forbidden"}),
    ("import subprocess", "import subprocess\nsubprocess.run(['touch', '" + CANARY + "/sp'])", {"forbidden"}),
    ("import builtins", "import builtins\nbuiltins.open('" + CANARY + "/b', 'w')", {"forbidden"}),
    ("import importlib", "import importlib\nimportlib.import_module('os')", {"forbidden"}),
    ("from os import", "from os import system", {"forbidden"}),
    ("import signal", "import signal\nsignal.raise_signal(9)", {"forbidden"}),
    ("import socket", "import socket\nsocket.create_connection(('example.com', 80))", {"forbidden"}),
    ("import time", "import time\ntime.sleep(100)", {"forbidden"}),
    ("import operator", "import operator\noperator.attrgetter('__class__')", {"forbidden"}),
    ("cq under another alias", "import cadquery as os", {"forbidden"}),
    ("cq submodule import", "import cadquery.occ_impl.exporters as ex", {"forbidden"}),
    ("from cadquery import", "from cadquery import exporters", {"forbidden"}),
    ("from math import *", "from math import *", {"forbidden"}),
    ("relative import", "from . import cadexec", {"forbidden"}),
    ("import inside function", "def f():\n    import os\n    return os\nf()", {"forbidden"}),
    ("__import__", "__import__('os').system('touch " + CANARY + "/imp')", {"forbidden"}),
    # dunder walks
    ("subclasses walk", "x = ().__class__.__bases__[0].__subclasses__()", {"forbidden"}),
    ("mro walk", "x = [].__class__.__mro__[1].__subclasses__()", {"forbidden"}),
    ("function globals", "f = lambda: 0\ng = f.__globals__", {"forbidden"}),
    ("builtins dunder", "b = __builtins__", {"forbidden"}),
    ("fullwidth letters in a dunder", "x = ().__\uff43lass__", {"forbidden"}),
    ("dunder via cq", "import cadquery as cq\ng = cq.Workplane.box.__globals__", {"forbidden"}),
    ("generator frame", "g = (i for i in [1])\nf = g.gi_frame", {"forbidden"}),
    ("generator frame (no literal)", "g = (i for i in [1])\nfr = g.gi_code", {"forbidden"}),
    ("function attribute", "import cadquery as cq\nm = cq.Workplane.box\nx = m.im_self", {"forbidden"}),
    ("function attribute 2", "def f():\n    return 1\nx = f.func_closure", {"forbidden"}),
    ("exception traceback", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    t = e.with_traceback", {"forbidden"}),
    ("exception args", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    t = e.args", {"forbidden"}),
    ("class statement", "class A:\n    pass", {"forbidden"}),
    # builtins tricks and string-driven attribute access
    ("getattr concat", "getattr(1, '__' + 'class__')", {"forbidden"}),
    ("setattr", "import cadquery as cq\nsetattr(cq, 'Workplane', None)", {"forbidden"}),
    ("hasattr", "hasattr(1, 'real')", {"forbidden"}),
    ("type()", "t = type(1)", {"forbidden"}),
    ("object", "o = object", {"forbidden"}),
    ("str.format", "s = '{0.__class__}'.format(1)", {"forbidden"}),
    ("str.format harmless-looking", "s = '{0.real}'.format(1)", {"forbidden"}),
    ("str.format_map", "s = '{x.__class__}'.format_map({'x': 1})", {"forbidden"}),
    ("str.format via class", "s = str.format('{0.__class__}', 1)", {"forbidden"}),
    ("f-string dunder", "s = f'{(1).__class__}'", {"forbidden"}),
    ("f-string format spec", "x = 1\ns = f'{x!r:>{10}}'\nt = f'{x.__class__}'", {"forbidden"}),
    ("globals()", "g = globals()", {"forbidden"}),
    ("vars()", "v = vars()", {"forbidden"}),
    ("locals()", "v = locals()", {"forbidden"}),
    ("dir()", "d = dir()", {"forbidden"}),
    ("open", "open('" + CANARY + "/open', 'w').write('x')", {"forbidden"}),
    ("exec", "exec('import os')", {"forbidden"}),
    ("eval", "eval('1+1')", {"forbidden"}),
    ("compile", "c = compile('1', 'x', 'eval')", {"forbidden"}),
    ("input", "x = input()", {"forbidden"}),
    ("breakpoint", "breakpoint()", {"forbidden"}),
    ("print to a file", "import cadquery as cq\nprint('x', file=cq)", {"forbidden"}),
    ("monkeypatch cq", "import cadquery as cq\ncq.Workplane.box = None", {"forbidden"}),
    ("monkeypatch math", "import math\nmath.pi = 3", {"forbidden"}),
    # exits and signals
    ("sys.exit without import", "sys.exit(0)", {"forbidden"}),
    ("os._exit without import", "os._exit(0)", {"forbidden"}),
    ("raise SystemExit", "raise SystemExit(1)", {"forbidden"}),
    ("raise KeyboardInterrupt", "raise KeyboardInterrupt", {"forbidden"}),
    ("exit()", "exit()", {"forbidden"}),
    ("quit()", "quit()", {"forbidden"}),
    # environment
    ("os.environ", "import os\nx = os.environ['" + SECRET + "']", {"forbidden"}),
    ("os.getenv", "import os\nx = os.getenv('" + SECRET + "')", {"forbidden"}),
    # CadQuery's own ways to files, modules and raw OpenCascade
    ("cq.exporters.export", H + "cq.exporters.export(r, '" + CANARY + "/e.stl')", {"forbidden"}),
    ("Workplane.export", H + "r.export('" + CANARY + "/w.step')", {"forbidden"}),
    ("Shape.exportStl", H + "r.val().exportStl('" + CANARY + "/s.stl')", {"forbidden"}),
    ("Shape.exportStep", H + "r.val().exportStep('" + CANARY + "/s.step')", {"forbidden"}),
    ("Shape.exportBrep", H + "r.val().exportBrep('" + CANARY + "/s.brep')", {"forbidden"}),
    ("Workplane.toSvg", H + "s = r.toSvg()", {"forbidden"}),
    ("toVtkPolyData", H + "s = r.val().toVtkPolyData()", {"forbidden"}),
    ("cq.importers", "import cadquery as cq\nr = cq.importers.importStep('/etc/passwd')", {"forbidden"}),
    ("Shape.importBrep", "import cadquery as cq\nr = cq.Shape.importBrep('/etc/passwd')", {"forbidden"}),
    ("Sketch.importDXF", "import cadquery as cq\nr = cq.Sketch().importDXF('/etc/passwd')", {"forbidden"}),
    ("Assembly.save", H + "cq.Assembly(r).save('" + CANARY + "/a.step')", {"forbidden"}),
    ("Assembly.export", H + "cq.Assembly(r).export('" + CANARY + "/a.step')", {"forbidden"}),
    ("text with fontPath", "import cadquery as cq\nr = cq.Workplane('XY').text('a', 10, 1, fontPath='/etc/passwd')",
     {"forbidden"}),
    ("Compound.makeText with fontPath", "import cadquery as cq\nr = cq.Compound.makeText('a', 10, 1, fontPath='/etc/passwd')",
     {"forbidden"}),
    ("wrapped", H + "w = r.val().wrapped", {"forbidden"}),
    ("toOCC", H + "w = r.toOCC()", {"forbidden"}),
    ("raw OCP object is inert", "import cadquery as cq\np = cq.Vector(1, 2, 3).toPnt()\nx = p.X()", {"forbidden"}),
    ("cq.occ_impl", "import cadquery as cq\nm = cq.occ_impl", {"forbidden"}),
    ("cq.selectors module", "import cadquery as cq\nm = cq.selectors", {"forbidden"}),
    ("cq.cq module", "import cadquery as cq\nm = cq.cq", {"forbidden"}),
    ("cq.version (not cadquery's own)", "import cadquery as cq\nv = cq.version('numpy')", {"forbidden"}),
    ("math module internals", "import math\nm = math.__loader__", {"forbidden"}),
    ("caught guard error is still contained", "import cadquery as cq\ntry:\n    e = cq.exporters\nexcept Exception:\n"
     "    e = None\nr = cq.Workplane('XY').box(1, 1, 1)\nx = r.val().exportStl('" + CANARY + "/c.stl')", {"forbidden"}),
    # resources
    ("infinite loop", "while True:\n    pass", {"timeout"}),
    ("infinite loop in a sketch", "import cadquery as cq\nwhile True:\n    s = cq.Sketch().circle(1)", {"timeout"}),
    ("memory bomb (one shot)", "x = 'a' * (10 ** 11)", {"memory"}),
    ("memory bomb (list)", "x = [0] * (10 ** 10)", {"memory"}),
    ("memory bomb (growing)", "x = []\nwhile True:\n    x.append('a' * 10 ** 7)", {"memory", "timeout"}),
    ("huge output (loop)", "while True:\n    print('x' * 10 ** 6)", {"timeout"}),
    ("huge output (one print of 4 GB)", "print('y' * (4 * 10 ** 9))", {"memory"}),
    ("huge exception message", "raise ValueError('z' * 10 ** 8)", {"cadquery"}),
    ("deep recursion", "def f(n):\n    return f(n + 1)\nf(0)", {"cadquery"}),
    ("deeply nested source", "x = " + "(" * 5000 + "1" + ")" * 5000, {"syntax"}),
    ("huge source", "x = 1\n" * 30000, {"forbidden"}),
    ("syntax error", "r = cq.Workplane('XY'", {"syntax"}),
    ("not a string", None, {"syntax"}),
]


@pytest.fixture(scope="module", autouse=True)
def clean_canary():
    os.makedirs(CANARY, exist_ok=True)
    for name in os.listdir(CANARY):
        os.remove(os.path.join(CANARY, name))
    os.environ[SECRET] = "do-not-read"
    yield
    os.environ.pop(SECRET, None)


def test_corpus_is_large():
    assert len(CORPUS) >= 90
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("name,code,kinds", CORPUS, ids=[c[0] for c in CORPUS])
def test_escape_attempt_is_blocked_or_contained(name, code, kinds):
    env_before = dict(os.environ)
    result = run_cadquery(code, timeout=2.0)
    assert isinstance(result, ExecResult)
    assert result.kind in ERROR_KINDS
    assert result.kind in kinds, f"{name}: got {result.kind}: {result.message}"
    assert not result.ok and result.mesh is None
    assert len(result.message) <= sandbox.MAX_MESSAGE_CHARS + 20
    assert dict(os.environ) == env_before
    assert os.listdir(CANARY) == []


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

    g = sandbox._guarded_getattr
    assert g(cq, "Workplane") is cq.Workplane
    assert g(math, "sqrt") is math.sqrt
    assert g([1], "append")
    for obj, name in [(cq, "exporters"), (cq, "importers"), (cq.Workplane, "export"), (cq.Shape, "exportStl"),
                      (cq.Shape, "importBrep"), (1, "__class__"), ("s", "format"), (str, "format"),
                      (os, "system"), (lambda: 0, "func_globals"), (ValueError(), "args")]:
        with pytest.raises(sandbox.Forbidden):
            g(obj, name)


def test_static_check_names_the_problem():
    assert sandbox.check_source("import cadquery as cq\nimport math\nfrom math import pi\nr = 1") is None
    kind, message = sandbox.check_source("import os")
    assert kind == "forbidden" and "import os" in message
    kind, message = sandbox.check_source("x = (")
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


def test_warm_worker_is_reused_and_replaced_after_timeout():
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    assert run_cadquery(H).ok and sandbox.worker_pid() == pid
    assert run_cadquery("while True:\n    pass", timeout=0.5).kind == "timeout"
    assert sandbox.worker_pid() is None
    assert run_cadquery(H).ok and sandbox.worker_pid() not in (None, pid)


def test_worker_started_by_a_big_process_is_not_recycled_after_every_job():
    """A kernel that has used more than RECYCLE_RSS must still get a warm, reused worker."""
    import numpy as np

    sandbox.shutdown()
    ballast = np.full(sandbox.RECYCLE_RSS + 256 * 1024**2, 1, dtype=np.uint8)   # raise this process's peak RSS
    del ballast
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    assert pid is not None, "the worker was recycled after one small program"
    assert run_cadquery(H).ok and sandbox.worker_pid() == pid


def test_worker_killed_from_outside_is_replaced():
    assert run_cadquery(H).ok
    os.kill(sandbox.worker_pid(), signal.SIGKILL)
    time.sleep(0.2)
    assert run_cadquery(H).ok


def test_worker_dying_mid_program_is_a_crash_not_a_hang():
    assert run_cadquery(H).ok
    pid = sandbox.worker_pid()
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    result = run_cadquery("while True:\n    pass", timeout=20)
    assert result.kind == "crash" and result.seconds < 15, result
    assert run_cadquery(H).ok


def test_memory_cap_is_applied():
    result = run_cadquery(f"x = ' ' * {sandbox.MEMORY_CAP}")
    assert result.kind == "memory", result
    assert run_cadquery(BOX_WITH_HOLE).ok
