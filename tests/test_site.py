"""tools/build_site.py (`make site`): the static site of the executed course, built into a temporary folder.

Every lesson and solutions notebook has a page, the index gives the syllabus, every internal link and source
resolves to a file of the site (and an anchor to an id in it), no page loads a script, a stylesheet, a picture
or a frame from the network, the solutions are linked from the lessons but not mixed into them, every formula
is drawn by mathtext (and a dollar in code or in a price is left alone), every Mermaid diagram and every
explorer of the lessons has a current still in notebooks/stills/ (`make stills`) and the pages show them, and
every explorer carries its note. The browser side (no console error in Chromium, the pictures show) is
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
        assert f"to study: about {build_site.agendas.study_minutes(key)} min" in visible_text(section.group(1)), key
        assert len(re.findall(r"<li>", section.group(1))) >= 5, f"{lesson.name}: its objectives are missing"
        assert f"{lesson.stem}.html" in links and f"solutions/{lesson.stem}_solutions.html" in links, lesson.name


def test_the_teachers_guide_is_a_page_linked_from_the_index(site):
    assert "teaching.html" in {link for _, link in parse((site / "index.html").read_text(encoding="utf-8")).links}
    guide = (site / "teaching.html").read_text(encoding="utf-8")
    text = visible_text(guide)
    for heading in ("90 minutes: what an inference step really is", "One day: from a decoder to CAD-Recode",
                    "Two days: language models, then CAD", "The morning checklist", "Glossary"):
        assert heading in text, heading
    assert guide.count("<table") >= 5, "the agendas' tables are not rendered as tables"
    assert "index.html" in {link for _, link in parse(guide).links}


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
    assert page.count('class="site-explorer-still"') == explorers, f"{notebook.name}: an explorer without its still"
    diagrams = sum(len(MERMAID.findall(c.source)) for c in cells if c.cell_type == "markdown")
    assert page.count('<div class="site-diagram"><img class="site-diagram-still"') == diagrams, notebook.name
    assert page.count("<summary>Its Mermaid source</summary>") == diagrams, notebook.name
    assert "jp-Mermaid" not in page, f"{notebook.name}: a diagram shown as its source (no current still)"


def test_every_diagram_and_explorer_of_the_lessons_has_a_current_still():
    missing = build_site.missing_stills()
    assert not missing, ("no still, or a still of an older source, of:\n    " + "\n    ".join(missing)
                         + "\nrun `make stills` (it needs Chromium) and commit notebooks/stills/")


def test_every_formula_is_drawn_by_mathtext():
    formulas = build_site.lesson_formulas()
    assert len(formulas) >= 90, f"the lessons have {len(formulas)} formulas: fewer than when this test was written"
    assert not build_site.formulas_left_as_source(), "formulas mathtext cannot draw, even rewritten"


@pytest.mark.parametrize("notebook", LESSONS + SOLUTIONS, ids=lambda p: p.stem)
def test_each_formula_is_a_picture_on_its_page(notebook, site):
    page = (site / build_site.page_name(notebook)).read_text(encoding="utf-8")
    found = [f for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown"
             for f in build_site.formulas(c.source)]
    pictures = sum(len(build_site.mathtext_rows(tex, display)) for tex, display in found)
    assert page.count('<img class="site-math"') == pictures, notebook.name
    assert page.count('<span class="site-math-display">') == sum(display for _, display in found), notebook.name
    assert "site-math-source" not in page and "cadlabswap" not in page, notebook.name
    for tex, display in found:
        if not display:
            assert f'alt="{html.escape(" ".join(tex.split()))}"' in page, f"{notebook.name}: {tex!r} has no alt text"


def test_dollars_in_code_and_prices_are_left_alone():
    text = ("A price: $5, or $10 with shipping. The shell's `echo $HOME` and $x^2$.\n\n"
            "```bash\necho $PATH $y$\n```\n\n$$\\begin{aligned} a &\\ge b \\\\ \\text{so} &\\quad c \\end{aligned}$$")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    page = build_site.render(build_site.site_exporter(), notebook, "demo", "notebooks/99_demo.ipynb", "")
    shown = visible_text(page)
    for kept in ("$5, or $10 with shipping", "echo $HOME", "echo $PATH $y$"):
        assert kept in shown, kept
    assert re.findall(r'<img class="site-math"[^>]* alt="([^"]*)"', page) == ["x^2", "a \\ge b", "\\text{so} \\quad c"]
    assert page.count('<span class="site-math-display">') == 1


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


def test_a_stale_or_missing_still_gives_the_fallback(tmp_path):
    """A still is current only while its cell's source is the one it was taken of; without one, a diagram is
    shown as its Mermaid source with its note."""
    lesson = LESSONS[0]
    cell = nbformat.v4.new_markdown_cell("```mermaid\nflowchart LR\n  a --> b\n```", id="demo")
    name = build_site.make_stills.diagram_name(lesson, "demo", 0)
    build_site.make_stills.record(tmp_path, name, b"<svg/>", lesson, "demo", "diagram", cell.source)
    assert build_site.make_stills.current_still(lesson, cell, name, tmp_path) == tmp_path / name
    cell.source += "\n"
    assert build_site.make_stills.current_still(lesson, cell, name, tmp_path) is None, "a stale still is current"
    page = build_site.render(build_site.site_exporter(), nbformat.v4.new_notebook(cells=[cell]), "demo",
                             "notebooks/99_demo.ipynb", "")
    assert page.count(build_site.MERMAID_NOTE) == 1 and 'class="site-diagram-still"' not in page
