"""``cadlab.cad.view.view`` survives an HTML export with no network: a notebook whose one cell calls it is
executed, exported to HTML by nbconvert, and opened in headless Chromium with every http(s) request refused.
Inside the viewer's iframe three.js (carried inline) must draw on a WebGL canvas, with no error logged by it.
A screenshot goes to out/browser/view_export.png."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"

CELL = """import numpy as np
import trimesh
from cadlab.cad.view import view

plate = trimesh.creation.box((40, 30, 6)).difference(trimesh.creation.cylinder(radius=6, height=20))
view(plate.sample(256, seed=0), plate, titles=["256 points", "the part"])"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    folder = tmp_path_factory.mktemp("view_export")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")    # the kernel imports this checkout's cadlab
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute(env=env)
    assert any("text/html" in output.get("data", {}) for output in notebook.cells[0].outputs), notebook.cells[0].outputs
    body, _ = HTMLExporter().from_notebook_node(notebook)
    path = folder / "view.html"
    path.write_text(body)
    return path


def test_the_viewer_draws_offline_from_an_html_export(exported, browser, out_dir):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    refused, errors = [], []
    page.route("http*://**", lambda route: (refused.append(route.request.url), route.abort()))
    page.on("console", lambda message: message.type == "error" and errors.append(
        (message.location.get("url", ""), message.text)))
    page.on("pageerror", lambda error: errors.append(("pageerror", str(error))))
    try:
        page.goto(exported.as_uri(), wait_until="load", timeout=60_000)
        frames = page.locator("iframe[srcdoc]")
        assert frames.count() == 1, "one viewer, in one iframe"
        viewer = page.frame_locator("iframe[srcdoc]").first
        canvas = viewer.locator("canvas")
        canvas.wait_for(timeout=60_000)
        frame = next(f for f in page.frames if f != page.main_frame)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not frame.evaluate(
                "() => { const c = document.querySelector('canvas');"
                " return !!(c && (c.getContext('webgl2') || c.getContext('webgl'))) }"):
            time.sleep(0.5)
        assert frame.evaluate("() => { const c = document.querySelector('canvas');"
                              " return !!(c.getContext('webgl2') || c.getContext('webgl')) }"), "no WebGL context"
        box = canvas.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 200
        time.sleep(2)                                   # the GLB is decoded and drawn on the next frames
        page.screenshot(path=str(OUT / "view_export.png"), full_page=True)
        from_viewer = [e for e in errors if e[0] in ("about:srcdoc", "pageerror") or "THREE" in e[1]]
        assert not from_viewer, "the viewer logged errors:\n" + "\n".join(map(str, from_viewer))
        assert not any("three" in url.lower() for url in refused), f"three.js was fetched: {refused}"
    finally:
        page.close()
