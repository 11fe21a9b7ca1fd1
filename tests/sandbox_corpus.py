"""Programs to throw at the sandbox: escape attempts of every kind, and ordinary programs that are
merely large. Plain data (no cadlab import), so the same corpus can be run against any version of
the sandbox: ``tests/test_sandbox.py`` runs it, and so can a comparison script.

Each entry is ``(name, program, accepted kinds)``; "forbidden" means refused by the compiler or the
guards, "ok" that the program must run and give a solid.
"""

CANARY = "/tmp/cadlab_sandbox_canary"   # every file-writing attempt targets a path under here
SECRET = "CADLAB_SANDBOX_SECRET"

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


def chain_of_calls(n: int) -> str:
    """A profile of ``n`` chained ``.lineTo`` calls, as a decoding repetition loop writes them."""
    return ("import cadquery as cq\nr = cq.Workplane('XY').moveTo(0, 0)"
            + "".join(f".lineTo({1 + i % 2}, {i % 3})" for i in range(n)) + ".close().extrude(5)\n")


def flat_sum(n: int) -> str:
    return "import cadquery as cq\nh = " + " + ".join(["0.01"] * n) + "\nr = cq.Workplane('XY').box(1, 1, h)\n"


# Escape attempts and state changes found after the first corpus, and ordinary-but-large programs.
CORPUS += [
    # state a program could leave for the next one
    ("ABC register (a metaclass attribute)", "import cadquery as cq\ncq.DirectionMinMaxSelector.register(str)",
     {"forbidden"}),
    ("metaclass mro()", "import cadquery as cq\nm = cq.Workplane.mro()", {"forbidden"}),
    ("iterate a multimethod table", "import cadquery as cq\nfor k in cq.Shape.move:\n    x = k", {"forbidden"}),
    ("list() of a multimethod table", "import cadquery as cq\nx = list(cq.Sketch.segment)", {"forbidden"}),
    ("items of a multimethod table", "import cadquery as cq\nx = cq.Face.normalAt.items()", {"forbidden"}),
    ("register on a bound multimethod", "import cadquery as cq\nm = cq.Sketch().segment\nx = m.register",
     {"forbidden"}),
    ("attributes of a bound method", "import cadquery as cq\nm = cq.Workplane('XY').box\nx = m.copy", {"forbidden"}),
    ("class held in a tuple", "t = (1, int)\nx = t[1]\ny = x.mro", {"forbidden"}),
    ("iterate a function", "f = lambda: 0\nfor x in f:\n    pass", {"forbidden", "cadquery"}),
    ("generator throw", "g = (i for i in [1])\nt = g.throw", {"forbidden"}),
    ("dict.fromkeys", "d = dict.fromkeys([1])", {"forbidden"}),
    ("str.maketrans", "t = str.maketrans('a', 'b')", {"forbidden"}),
    ("module in an error message", "import cadquery as cq\nraise ValueError(cq)", {"cadquery"}),
    ("math module in an error message", "import math\nraise ValueError(math)", {"cadquery"}),
    # errors that are hard to describe
    ("error whose message cannot be printed", "raise ValueError(10 ** 5000)", {"cadquery"}),
    ("the same, raised while handling another",
     "try:\n    1 / 0\nexcept ZeroDivisionError:\n    raise ValueError(10 ** 5000)", {"cadquery"}),
    ("str() of a huge int", "s = str(10 ** 5000)", {"cadquery"}),
    ("deep recursion through map", "def f(n):\n    return list(map(f, [n + 1]))\nf(0)", {"cadquery", "crash"}),
    ("recursion in sorted's key", "def k(x):\n    return sorted([x], key=k)\nk(1)", {"cadquery", "crash"}),
    ("huge power", "x = 10 ** (10 ** 9)", {"timeout", "memory"}),
    ("huge shift", "x = 1\nx <<= 10 ** 12", {"memory", "timeout"}),
    ("assert False", "assert False, 'no'", {"cadquery"}),
    ("raise StopIteration", "raise StopIteration", {"cadquery"}),
    ("GeneratorExit by name", "raise GeneratorExit", {"forbidden"}),
    ("bad CadQuery argument", "import cadquery as cq\nr = cq.Workplane('XY').box('a', 1, 1)", {"cadquery"}),
    ("bad selector string", "import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1).faces('>>>')",
     {"cadquery"}),
    ("negative circle", "import cadquery as cq\nr = cq.Workplane('XY').sketch().circle(-1).finalize().extrude(1)",
     {"cadquery"}),
    ("bad plane name", "import cadquery as cq\nr = cq.Workplane('QQ')", {"cadquery"}),
    # ordinary programs that are merely large: they run, or are refused with a message
    ("chain of 120 calls", chain_of_calls(120), {"ok"}),
    ("chain of 300 calls", chain_of_calls(300), {"ok"}),
    ("chain of 800 calls", chain_of_calls(800), {"syntax"}),
    ("flat sum of 250 terms", flat_sum(250), {"ok"}),
    ("flat sum of 900 terms", flat_sum(900), {"ok"}),
    ("flat sum of 5000 terms", flat_sum(5000), {"syntax"}),
    ("150 nested lists", "x = " + "[" * 150 + "]" * 150, {"no_r"}),
    ("300 nested lists", "x = " + "[" * 300 + "]" * 300, {"syntax"}),
    ("print with flush", "import cadquery as cq\nprint('x', flush=True)\nr = cq.Workplane('XY').box(1, 1, 1)", {"ok"}),
    ("print with sep and end", "import cadquery as cq\nprint(1, 2, sep=',', end='')\nr = cq.Workplane('XY').box(1, 1, 1)",
     {"ok"}),
    ("every augmented assignment",
     "import cadquery as cq\nx = 6\nx += 1\nx -= 1\nx *= 2\nx //= 2\nx %= 7\nx **= 1\nx |= 1\nx &= 7\nx ^= 2\n"
     "x <<= 1\nx >>= 1\ny = 2.0\ny /= 2\nr = cq.Workplane('XY').box(x, y, 1)", {"ok"}),
    ("two hundred boxes in a loop",
     "import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1)\nfor i in range(200):\n    w = cq.Workplane('XY').box(1, 1, 1)",
     {"ok"}),
    ("a large filleted cylinder", "import cadquery as cq\nr = cq.Workplane('XY').cylinder(50, 40).edges().fillet(5)",
     {"ok"}),
    ("a program of 30 holes",
     "import cadquery as cq\nr = cq.Workplane('XY').box(100, 100, 10)\n"
     + "".join(f"r = r.faces('>Z').workplane().center({i % 7 - 3}, {i % 5 - 2}).hole(0.5)\n" for i in range(30)),
     {"ok"}),
]

# Run after every corpus program: the worker must answer it as if nothing had run before.
PROBE = """import cadquery as cq
assert not isinstance('x', cq.DirectionMinMaxSelector)
assert isinstance(cq.Workplane('XY'), cq.Workplane)
print('probe')
r = cq.Workplane('XY').box(2, 3, 4)
"""
PROBE_VOLUME = 24.0
