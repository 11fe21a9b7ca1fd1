"""The static site of `make site` in headless Chromium with every http(s) request refused: the index and the
CAD page of notebook 07 open with no console error and no page error, and notebook 07's 3-D viewers draw
(three.js is carried inline). Screenshots go to out/browser/site_index.png, out/browser/site_07.png (the top
of the page) and out/browser/site_07_viewer.png (its first 3-D view)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"
CAD_PAGE = "07_cad_recode.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
    build_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_site)
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
        time.sleep(2)                                   # the viewers decode their GLB and draw on the next frames
        first.screenshot(path=str(OUT / "site_07_viewer.png"))
        assert not errors, "the CAD page logged errors:\n" + "\n".join(map(str, errors))
        assert not refused, f"the CAD page asked the network for: {refused}"
    finally:
        page.close()
