"""The static site of `make site` in headless Chromium with every http(s) request refused: the index, the CAD
page of notebook 07 and page 01 open with no console error and no page error; notebook 07's 3-D viewers draw
(three.js is carried inline) and its explorer's still shows; page 01 shows its diagram and its formulas as
pictures. Screenshots go to out/browser/site_index.png, out/browser/site_07.png (the top of the page),
out/browser/site_07_viewer.png (its first 3-D view), out/browser/site_07_explorer.png (its explorer's still),
out/browser/site_01_formulas.png (its first display formula and the text around it) and
out/browser/site_01_diagram.png."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"
CAD_PAGE = "07_cad_recode.html"
FORMULA_PAGE = "01_qwen25_layers.html"           # a diagram, inline and display formulas, an aligned block
_spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)
DRAWN = "img => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().height > 0"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    build_site.build(out)
    return out


def open_offline(browser, path: Path, height: int = 900):
    """The page, loaded with every http(s) request refused; the errors it logged, the requests refused."""
    page = browser.new_page(viewport={"width": 1200, "height": height})
    refused, errors = [], []
    page.route("http*://**", lambda route: (refused.append(route.request.url), route.abort()))
    page.on("console", lambda message: message.type == "error" and errors.append(
        (message.location.get("url", ""), message.text)))
    page.on("pageerror", lambda error: errors.append(("pageerror", str(error))))
    page.goto(path.as_uri(), wait_until="load", timeout=60_000)
    return page, errors, refused


def test_the_index_opens_offline_with_no_error(site, browser, out_dir):
    page, errors, refused = open_offline(browser, site / "index.html")
    try:
        lessons = page.locator("section.lesson")
        assert lessons.count() == 10
        assert page.locator(f'section.lesson a[href="{CAD_PAGE}"]').count() >= 1
        page.screenshot(path=str(OUT / "site_index.png"), full_page=True)
        assert not errors, "the index logged errors:\n" + "\n".join(map(str, errors))
        assert not refused, f"the index asked the network for: {refused}"
    finally:
        page.close()


def test_the_cad_page_opens_offline_its_viewers_draw_and_nothing_errs(site, browser, out_dir):
    page, errors, refused = open_offline(browser, site / CAD_PAGE)
    try:
        page.screenshot(path=str(OUT / "site_07.png"))  # the top of the page: its navigation, the diagram's note
        viewers = page.locator("iframe[srcdoc]")
        assert viewers.count() >= 1, "notebook 07 stores at least one 3-D view"
        first = viewers.first
        first.scroll_into_view_if_needed()
        frame = first.element_handle().content_frame()
        frame.locator("canvas").first.wait_for(timeout=60_000)
        webgl = ("() => { const c = document.querySelector('canvas');"
                 " return !!(c && (c.getContext('webgl2') || c.getContext('webgl'))) }")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not frame.evaluate(webgl):
            time.sleep(0.5)
        assert frame.evaluate(webgl), "the first viewer has no WebGL canvas"
        assert page.locator("p.site-explorer").count() == 1, "notebook 07's explorer carries its note"
        still = page.locator("img.site-explorer-still")
        assert still.count() == 1, "notebook 07's explorer is shown as its still (make stills)"
        still.scroll_into_view_if_needed()
        assert still.evaluate(DRAWN), "the explorer's still does not show"
        still.screenshot(path=str(OUT / "site_07_explorer.png"))
        time.sleep(2)                                   # the viewers decode their GLB and draw on the next frames
        first.screenshot(path=str(OUT / "site_07_viewer.png"))
        assert not errors, "the CAD page logged errors:\n" + "\n".join(map(str, errors))
        assert not refused, f"the CAD page asked the network for: {refused}"
    finally:
        page.close()


def test_page_01_shows_its_diagram_and_formulas_as_pictures(site, browser, out_dir):
    notebook = nbformat.read(ROOT / "notebooks" / "01_qwen25_layers.ipynb", as_version=4)
    formulas = [f for cell in notebook.cells if cell.cell_type == "markdown" for f in build_site.formulas(cell.source)]
    page, errors, refused = open_offline(browser, site / FORMULA_PAGE)
    try:
        pictures = page.locator("img.site-math")
        assert page.locator("code.site-math-source").count() == 0, "a formula of page 01 is left as its source"
        assert pictures.count() >= len(formulas) > 10, f"{pictures.count()} pictures for {len(formulas)} formulas"
        undrawn = [pictures.nth(i).get_attribute("alt") for i in range(pictures.count())
                   if not pictures.nth(i).evaluate(DRAWN)]
        assert not undrawn, f"formula pictures that do not show: {undrawn}"
        inline = page.locator("p img.site-math").first                # a formula in a line of text: about its height
        height, line = inline.evaluate("img => [img.getBoundingClientRect().height,"
                                       " parseFloat(getComputedStyle(img.parentElement).fontSize)]")
        assert 0.4 * line < height < 2.5 * line, f"an inline formula {height}px high in {line}px text"
        display = page.locator(".site-math-display").first
        display.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -150)")
        page.screenshot(path=str(OUT / "site_01_formulas.png"))
        diagram = page.locator("img.site-diagram-still")
        assert diagram.count() == 1, "page 01's diagram is shown as its still (make stills)"
        diagram.scroll_into_view_if_needed()
        assert diagram.evaluate(DRAWN), "page 01's diagram does not show"
        box = diagram.bounding_box()
        assert box["width"] > 200 and box["height"] > 100, f"page 01's diagram is {box}"
        diagram.screenshot(path=str(OUT / "site_01_diagram.png"))
        assert not errors, "page 01 logged errors:\n" + "\n".join(map(str, errors))
        assert not refused, f"page 01 asked the network for: {refused}"
    finally:
        page.close()
