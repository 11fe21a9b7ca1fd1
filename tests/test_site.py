"""tools/build_site.py (`make site`): the static site of the executed course, built into a temporary folder.

Every lesson and solutions notebook has a page, the index gives the syllabus, every internal link and source
resolves to a file of the site (and an anchor to an id in it), no page loads a script, a stylesheet, a picture
or a frame from the network, the solutions are linked from the lessons but not mixed into them, and every
explorer and every Mermaid diagram carries its note. The browser side (no console error in Chromium) is
tests/browser/test_site_in_chromium.py.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "tools"))
_spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)
from run_times import say_seconds  # noqa: E402

LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
EXPLORER = re.compile(r"widgets\.interact\(|\.on_click\(")
MERMAID = re.compile(r"^```mermaid\s*$", re.M)
NOT_A_FILE = ("http:", "https:", "mailto:", "data:", "javascript:")
# Where a page would load something from the network: <script src>, <link href>, <img src>, <iframe src>, ...
LOADING_TAGS = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "video": "src",
                "audio": "src", "embed": "src", "object": "data"}
REMOTE_IN_TEXT = re.compile(r"""import\s*\(\s*["']https?:|url\(\s*["']?https?:|@import\s+["']https?:""")


class Links(HTMLParser):
    """Every href and src of a page (and of the pages inside its iframes' srcdoc), its ids, its loads."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.ids, self.loads, self.srcdocs = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append((tag, attrs[name]))
        for name in ("id", "name"):
            if attrs.get(name) and (name == "id" or tag == "a"):
                self.ids.add(attrs[name])
        if tag in LOADING_TAGS and attrs.get(LOADING_TAGS[tag]):
            self.loads.append((tag, attrs[LOADING_TAGS[tag]]))
        if attrs.get("srcdoc"):
            self.srcdocs.append(attrs["srcdoc"])


def parse(text: str) -> Links:
    parser = Links()
    parser.feed(text)
    return parser


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    build_site.build(out)
    print(f"site built in {time.perf_counter() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def pages(site) -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(site.rglob("*.html"))}


def test_every_lesson_and_solutions_notebook_has_a_page(site):
    assert len(LESSONS) == 10 and len(SOLUTIONS) == 10
    for notebook in LESSONS:
        assert (site / f"{notebook.stem}.html").is_file(), notebook.name
    for notebook in SOLUTIONS:
        assert (site / "solutions" / f"{notebook.stem}.html").is_file(), notebook.name
    assert (site / "index.html").is_file()


def test_every_internal_link_and_source_resolves(site, pages):
    checked = 0
    for path, text in pages.items():
        parsed = parse(text)
        documents = [parsed] + [parse(doc) for doc in parsed.srcdocs]
        for document in documents:
            for tag, link in document.links:
                if link.lower().startswith(NOT_A_FILE):
                    continue
                target = urlsplit(link)
                file = (path.parent / unquote(target.path)).resolve() if target.path else path
                assert file.is_file(), f"{path.relative_to(site)}: <{tag}> {link} -> no such file in the site"
                assert site.resolve() in file.parents, f"{path.relative_to(site)}: {link} leaves the site"
                if target.fragment:
                    ids = parsed.ids if file == path else parse(file.read_text(encoding="utf-8")).ids
                    # as a browser looks for it: the fragment as written, then percent-decoded (nbconvert's
                    # heading ids are percent-encoded, and so are the links to them)
                    assert {target.fragment, unquote(target.fragment)} & ids, \
                        f"{path.relative_to(site)}: {link}: no such anchor"
                checked += 1
    assert checked > 50, f"only {checked} internal links: the index and the page navigation alone have more"


def test_no_page_loads_anything_from_the_network(pages, site):
    for path, text in pages.items():
        parsed = parse(text)
        for document_text, document in [(text, parsed)] + [(doc, parse(doc)) for doc in parsed.srcdocs]:
            remote = [(tag, url) for tag, url in document.loads if url.lower().startswith(("http:", "https:", "//"))]
            assert not remote, f"{path.relative_to(site)} loads from the network: {remote}"
            assert not REMOTE_IN_TEXT.search(document_text), \
                f"{path.relative_to(site)}: {REMOTE_IN_TEXT.search(document_text).group(0)}"
        assert "require.min.js" not in text and "mathjax" not in text.lower(), path.name


def test_the_index_gives_the_syllabus_and_how_to_install(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    text = visible_text(index)
    for command in ("make lab", "make test", "cadlab doctor"):
        assert command in text, command
    times = json.loads((NOTEBOOKS / "run_times.json").read_text())["notebooks"]
    links = {link for _, link in parse(index).links}
    for lesson in LESSONS:
        key = lesson.name[:2]
        section = re.search(rf'<section class="lesson" id="lesson-{key}">(.*?)</section>', index, re.S)
        assert section, f"no syllabus entry for {lesson.name}"
        intro = nbformat.read(lesson, as_version=4).cells[0].source
        title = intro.splitlines()[0].removeprefix("# ").strip()
        assert html.escape(title) in section.group(1), title
        assert f"to run: {say_seconds(times[key]['seconds'])}" in visible_text(section.group(1)), key
        assert len(re.findall(r"<li>", section.group(1))) >= 5, f"{lesson.name}: its objectives are missing"
        assert f"{lesson.stem}.html" in links and f"solutions/{lesson.stem}_solutions.html" in links, lesson.name


def test_solutions_are_linked_from_each_lesson_but_not_mixed_in(site):
    for lesson in LESSONS:
        page = (site / f"{lesson.stem}.html").read_text(encoding="utf-8")
        solutions_page = (site / "solutions" / f"{lesson.stem}_solutions.html").read_text(encoding="utf-8")
        assert f'href="solutions/{lesson.stem}_solutions.html"' in page, lesson.name
        assert f'href="../{lesson.stem}.html"' in solutions_page, lesson.name
        notebook = nbformat.read(lesson, as_version=4)
        lesson_source = "\n".join(c.source for c in notebook.cells)
        solutions = [c.metadata["solution"] for c in notebook.cells if "solution" in c.metadata]
        assert solutions, f"{lesson.name} has no exercise with a solution"
        lesson_text, solutions_text = visible_text(page), visible_text(solutions_page)
        for solution in solutions:
            # the solution's longest line that the lesson's stub does not have: on the solutions page only
            line = max((ln.strip() for ln in solution.splitlines() if ln.strip() not in lesson_source), key=len)
            assert line in solutions_text, f"{lesson.name}: {line!r} is not on the solutions page"
            assert line not in lesson_text, f"{lesson.name}: the solution line {line!r} is on the lesson page"


@pytest.mark.parametrize("notebook", LESSONS + SOLUTIONS, ids=lambda p: p.stem)
def test_explorers_and_diagrams_carry_their_note(notebook, site):
    cells = nbformat.read(notebook, as_version=4).cells
    page_path = site / ("solutions/" if notebook.parent.name == "solutions" else "") / f"{notebook.stem}.html"
    page = page_path.read_text(encoding="utf-8")
    explorers = sum(1 for c in cells if c.cell_type == "code" and EXPLORER.search(c.source))
    assert explorers >= 1, f"{notebook.name} has no explorer"
    notes = re.findall(r'<p class="site-note site-explorer">(.*?)</p>', page, re.S)
    assert len(notes) == explorers, f"{notebook.name}: {len(notes)} explorer notes for {explorers} explorers"
    for note in notes:
        assert "make lab" in note and notebook.relative_to(ROOT).as_posix() in note, note
    assert "application/vnd.jupyter.widget" not in page and "widget-state" not in page, notebook.name
    diagrams = sum(len(MERMAID.findall(c.source)) for c in cells if c.cell_type == "markdown")
    assert page.count('<div class="jp-Mermaid site-diagram"><p class="site-note">') == diagrams, notebook.name
    assert page.count('<div class="jp-Mermaid">') == 0, f"{notebook.name}: a diagram without its note"


def test_an_explorer_keeps_its_stored_still_and_loses_its_widget_view():
    """An explorer stored with outputs (a printed line, a picture, the widget's view): the page shows the line
    and the picture as a still, drops the view and the notebook's widget state, and says how to run it."""
    still = "a 1x1 PNG standing for the explorer's first picture"
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    cell = nbformat.v4.new_code_cell("import ipywidgets as widgets\nwidgets.interact(show, n=(1, 9));", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="n = 5: the first run\n"),
        nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": still}),
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "interactive(children=(IntSlider(value=5),))"}),
    ])
    plain = nbformat.v4.new_code_cell("print('not an explorer')", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="not an explorer\n")])
    notebook = nbformat.v4.new_notebook(cells=[cell, plain])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    page = build_site.render(build_site.site_exporter(), notebook, "demo", "notebooks/99_demo.ipynb", "")
    assert "n = 5: the first run" in page and f"data:image/png;base64,{png}" in page
    assert "interactive(children" not in page and "widget-state" not in page and "widget-view" not in page
    notes = re.findall(r'<p class="site-note site-explorer">(.*?)</p>', page, re.S)
    assert len(notes) == 1, "one note, for the explorer only"
    assert "as a still" in notes[0] and "make lab" in notes[0] and "notebooks/99_demo.ipynb" in notes[0]
