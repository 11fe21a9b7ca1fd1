"""The lessons' Mermaid diagrams render in JupyterLab: every ```mermaid block of a markdown cell becomes
a picture (an SVG image), and none becomes an error box. The notebooks are copied with their markdown cells
only (a diagram needs no kernel); a screenshot of each diagram goes to out/browser/. With ``CADLAB_STILLS`` set
(`make stills`, tools/make_stills.py), each diagram's SVG is also stored there as the site's still of it."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"
sys.path.insert(0, str(ROOT / "tools"))
import make_stills  # noqa: E402  (stores the stills when CADLAB_STILLS is set)
MERMAID = re.compile(r"^```mermaid\s*$", re.M)
WITH_DIAGRAMS = [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                 if any(c.cell_type == "markdown" and MERMAID.search(c.source)
                        for c in nbformat.read(p, as_version=4).cells)]


def test_some_lesson_has_a_diagram():
    assert WITH_DIAGRAMS, "no lesson has a ```mermaid diagram"


def save_stills(path: Path, notebook, rendered_cells):
    """Each diagram's SVG as the site's still of it (only with CADLAB_STILLS set; the cells are those of the
    copy, markdown only, in the order JupyterLab shows them)."""
    for index, cell in enumerate(notebook.cells):
        for k in range(len(MERMAID.findall(cell.source))):
            image = rendered_cells.nth(index).locator(".jp-RenderedMermaid img").nth(k)
            make_stills.save_diagram(path, cell, k, image.get_attribute("src"))


@pytest.mark.parametrize("path", WITH_DIAGRAMS, ids=lambda p: p.stem)
def test_every_diagram_renders_in_jupyterlab(path, lab, browser, out_dir):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [c for c in notebook.cells if c.cell_type == "markdown"]
    expected = sum(len(MERMAID.findall(c.source)) for c in notebook.cells)
    name = f"diagrams_{path.name}"
    nbformat.write(notebook, lab.folder / name)
    page = browser.new_page(viewport={"width": 1300, "height": 1800})
    console = []
    page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    try:
        page.goto(lab.url(f"lab/tree/{name}") + "&reset", wait_until="domcontentloaded", timeout=60_000)
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        panel.locator(".jp-MarkdownCell").first.wait_for(timeout=60_000)
        # JupyterLab renders a markdown cell when it first comes into view: bring each one there. A
        # diagram becomes an <img> of SVG inside .jp-RenderedMermaid (an error box has .jp-mod-warning).
        cells = panel.locator(".jp-MarkdownCell")
        for index in range(cells.count()):
            cells.nth(index).scroll_into_view_if_needed()
        diagrams = panel.locator(".jp-RenderedMermaid:not(.jp-mod-warning) img[src^='data:image/svg+xml']")
        deadline = time.monotonic() + 60
        while diagrams.count() < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert diagrams.count() == expected, (
            f"{path.name}: {diagrams.count()} of {expected} Mermaid diagrams rendered as pictures")
        warnings = panel.locator(".jp-RenderedMermaid.jp-mod-warning")
        assert warnings.count() == 0, f"{path.name}: a diagram failed to parse:\n{warnings.first.inner_text()}"
        for index in range(expected):
            diagrams.nth(index).scroll_into_view_if_needed()
            box = diagrams.nth(index).bounding_box()
            assert box and box["width"] > 50 and box["height"] > 50, f"{path.name}: diagram {index} is empty"
            diagrams.nth(index).screenshot(path=str(OUT / f"{path.stem}_diagram{index}.png"))
        errors = [line for line in console if line.startswith("[error]") and "mermaid" in line.lower()]
        assert not errors, "Mermaid logged errors:\n" + "\n".join(errors)
        save_stills(path, notebook, cells)
    finally:
        page.close()
        lab.shutdown_kernels()
