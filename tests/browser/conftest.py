"""A real JupyterLab, driven in headless Chromium, for the notebooks' widget explorers.

Chromium comes from the system (Debian: ``apt-get install chromium``) or ``CADLAB_CHROMIUM=/path``;
Playwright (pinned in the test extras) only drives it: nothing is downloaded, and without a
Chromium every test here is skipped with the reason. JupyterLab runs on a free loopback port with a
random token, in a temporary folder holding copies of the lessons, with its own settings,
workspaces and runtime folders, so neither the repository nor the user's Jupyter setup is touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"          # screenshots (always) and console logs (on failure)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# JupyterLab settings for a test run: every cell kept in the page (no windowing, so a cell far down
# is found without scrolling), the notebook's kernel started without asking, and no news or update
# check (the machine has no network).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        '{"windowingMode": "none", "autoStartDefaultKernel": true}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        '{"fetchNews": "false", "checkForUpdates": false}',
}


def find_chromium() -> str | None:
    """``CADLAB_CHROMIUM`` if set (it must exist), else the first Chromium on the PATH."""
    chosen = os.environ.get("CADLAB_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


SKIP_REASON = ("no Chromium found: the browser tests need one (Debian/Ubuntu: apt-get install chromium; "
               "or set CADLAB_CHROMIUM=/path/to/chromium)")


@pytest.fixture(scope="session")
def chromium_path():
    path = find_chromium()
    if path is None and os.environ.get("CADLAB_CHROMIUM"):       # asked for, so not skipped: a clear failure
        pytest.fail(f"CADLAB_CHROMIUM={os.environ['CADLAB_CHROMIUM']} is not a file: point it at a Chromium binary")
    if path is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("playwright", reason="Playwright is not installed: pip install -e '.[test]'")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running ``jupyter lab`` server: ``url(path)``, ``api(method, path)``, ``log()``."""

    def __init__(self, folder: Path, port: int, token: str, process: subprocess.Popen, log_path: Path):
        self.folder, self.port, self.token, self.process, self.log_path = folder, port, token, process, log_path

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def api(self, method: str, path: str):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        import json
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        """Stop every session's kernel, so the next notebook has the CPU to itself."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def out_dir(chromium_path):
    """out/browser/, emptied at the start of a run so that it only holds this run's pictures and logs."""
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    return OUT


@pytest.fixture(scope="session")
def lab(chromium_path, tmp_path_factory):
    """``jupyter lab`` serving a temporary folder (the tests write their notebooks into ``lab.folder``)."""
    base = tmp_path_factory.mktemp("lab")
    folder, settings = base / "notebooks", base / "settings"
    folder.mkdir()
    for name, text in SETTINGS.items():
        plugin, file = name.rsplit("/", 1)
        (settings / plugin).mkdir(parents=True, exist_ok=True)
        (settings / plugin / file).write_text(text)
    port, token = _free_port(), secrets.token_hex(16)
    # OMP_NUM_THREADS=1: each kernel's torch uses one thread. On a shared machine a second thread
    # makes torch far slower, not faster (its threads wait for a busy core), and the explorers' steps
    # are small; the lessons' own timings are taken by `make execute`, not here.
    env = dict(os.environ, OMP_NUM_THREADS="1", JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_DATA_DIR=str(base / "data"),
               JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTERLAB_WORKSPACES_DIR=str(base / "ws"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), PYTHONPATH=str(ROOT))
    log_path = base / "jupyter.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={folder}"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        command.append("--allow-root")
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Lab(folder, port, token, process, log_path)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with status {process.returncode}:\n{server.log()[-3000:]}")
            try:
                server.api("GET", "status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer on port {port} within 90 s:\n{server.log()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()
