r"""Build a static website of the executed course, offline, from the notebooks' stored outputs.

`make site` runs it. Nothing is executed: nbconvert's HTMLExporter (the 'lab' template) turns each
lesson notebooks/NN_*.ipynb and each solutions notebook notebooks/solutions/NN_*_solutions.ipynb into
one page with the outputs nbval checks, and an index page gives the syllabus (each lesson's title, its
"You will be able to" objectives and its recorded run time) and how to install the course.

The pages load nothing from the network. The 'lab' template's scripts from a CDN are left out, and what
they would do is done here, ahead of time:

- MathJax: each formula of a markdown cell ($…$ or $$…$$, outside code spans and fenced blocks) is drawn by
  matplotlib's mathtext as an SVG picture, inlined as a data URL, sized to the line and on its baseline, its
  LaTeX as alt text and title. The LaTeX mathtext does not know is rewritten first (MATHTEXT_REWRITES: \ge,
  \le, \big, \tfrac, \lVert, \sqrt d; an aligned block is drawn one row per line); the notebooks keep their
  LaTeX, which JupyterLab's MathJax draws. A formula mathtext still cannot draw stays as its LaTeX in <code>.
  Each formula becomes a plain word before nbconvert renders the markdown, and its HTML replaces that word
  afterwards, so markdown never sees (nor mangles) the LaTeX.
- Mermaid: a diagram is shown as the SVG JupyterLab drew of it, stored by `make stills` in notebooks/stills/
  (tools/make_stills.py), with its Mermaid source in a <details> below.
- require.js and the widget manager: the explorers' widgets need a live kernel; each is shown as its still
  from `make stills` (a screenshot after its first run and one move of a control), with a note saying how
  to run it.

A still is used only while the cell it was taken of is unchanged (stills.json keeps a hash of its source);
otherwise the diagram is shown as its Mermaid source, the explorer with its note alone, and the build
prints a warning naming `make stills`. It also prints how many formulas were drawn and which were left as
source. Pictures in the outputs are inlined by nbconvert, and the 3-D viewer of `cadlab.cad.view` carries
three.js inline in its iframe, so it turns in the page.

    python tools/build_site.py                 # into build/site/
    python tools/build_site.py --out DIR
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

import jinja2
import matplotlib
import nbformat
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.mathtext import MathTextParser
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune

sys.path.insert(0, str(Path(__file__).resolve().parent))
import agendas  # noqa: E402  (each lesson's study time, as the teacher's guide reads it)
import make_stills  # noqa: E402  (the stills of the diagrams and explorers, and whether each is current)
from run_times import say_seconds  # noqa: E402  (the times the lessons state, said the same way)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUN_TIMES = NOTEBOOKS / "run_times.json"
DEFAULT_OUT = ROOT / "build" / "site"
GUIDE = ROOT / "docs" / "teaching.md"
GUIDE_PAGE = "teaching.html"

# An explorer (as tests/browser/test_explorers_in_jupyterlab.py finds them): ipywidgets on a live kernel.
EXPLORER = re.compile(r"widgets\.interact\(|\.on_click\(")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OBJECTIVES_HEADING = re.compile(r"^\*\*(You will be able to|What you will learn)[.:]?\*\*", re.M)
MERMAID_BLOCK = '<div class="jp-Mermaid">'
MERMAID_NOTE = ('<div class="jp-Mermaid site-diagram"><p class="site-note">A diagram, shown as its Mermaid source: '
                'JupyterLab draws it (<code>make lab</code>; <code>make stills</code> takes its picture for '
                'these pages).</p>')

# What a markdown cell's formulas and diagrams are looked for in: the text outside code spans and fenced
# blocks (split out by CODE; a ```mermaid block is one of them). A formula is $$…$$, or $…$ on one line with
# no space just inside either dollar and no digit just after the closing one (as pandoc reads TeX math), so a
# price ("$5, or $10") is left as text; an escaped dollar \$ is never one.
CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
MERMAID_FENCE = re.compile(r"```mermaid[ \t]*\n(.*?)```", re.S)
FORMULA = re.compile(r"(?<!\\)\$\$(.+?)\$\$|(?<![\\$])\$(?=\S)([^$\n]*?\S)(?<!\\)\$(?![\d$])", re.S)
ALIGNED = re.compile(r"\s*\\begin\{aligned\}(.*)\\end\{aligned\}\s*", re.S)
# A word markdown leaves as it is, standing in a cell's source for HTML put in after nbconvert rendered it
# (a formula in a heading would also land in the heading's id: no lesson has one).
SWAP = re.compile(r"<p>(cadlabswap\d+x)</p>|(cadlabswap\d+x)")
# LaTeX that JupyterLab's MathJax knows and mathtext does not, rewritten (in this order) to what mathtext
# draws the same or nearly so (\text{...} needs none: mathtext has it, spaces and hyphens kept); an aligned
# block is drawn one row per line (mathtext_rows). The notebooks keep their LaTeX.
MATHTEXT_REWRITES = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"\\ge(?![a-zA-Z])", r"\\geq"), (r"\\le(?![a-zA-Z])", r"\\leq"),   # the short names of >= and <=
    (r"\\[bB]igg?[lr]?(?![a-zA-Z])", ""),                               # \big( ... \big): plain delimiters
    (r"\\tfrac(?![a-zA-Z])", r"\\frac"),                                # a text-size fraction: a fraction
    (r"\\(d?frac)\s*(\w)\s*(\w)", r"\\\1{\2}{\3}"),                     # \frac12 -> \frac{1}{2}
    (r"\\sqrt\s+(\w)", r"\\sqrt{\1}"),                                  # \sqrt d -> \sqrt{d}
    (r"\\[lr]Vert(?![a-zA-Z])", r"\\Vert"),                             # the norm's bars
]]
DISPLAY_FRACTION = (re.compile(r"\\frac(?![a-zA-Z])"), r"\\dfrac")      # in $$…$$: a fraction as TeX sets it there
MATH_PT = 10.0          # the size mathtext draws at; a picture's size is then given in em of the text around it
MATH_SCALE = 1.2        # a formula's letters a little larger than the text's, as MathJax draws them
MATH_FONTS = "cm"       # mathtext's Computer Modern: TeX's look, as MathJax's
MATH_RC = {"svg.fonttype": "path", "svg.hashsalt": "cadlab"}   # glyphs as paths; the same bytes every build

PAGE_CSS = """
.site-nav { font-family: system-ui, sans-serif; font-size: 14px; background: #f3f5f8; border: 1px solid #d8dee6;
            border-radius: 6px; padding: 8px 12px; margin: 12px 0 20px var(--jp-cell-prompt-width, 64px);
            line-height: 1.6; }
.site-nav a { margin-right: 14px; color: #0b57d0; text-decoration: underline; }
.site-note { font-family: system-ui, sans-serif; font-size: 13px; color: #5a4500; background: #fff8e1;
             border-left: 4px solid #f0b400; padding: 6px 10px; margin: 6px 0; }
p.site-explorer { margin-left: var(--jp-cell-prompt-width, 64px); }
.site-diagram pre.mermaid { background: #f7f7f7; border: 1px dashed #bbb; padding: 8px; margin-bottom: 1em; }
img.site-math { display: inline; margin: 0 0.08em; }
.site-math-display { display: block; text-align: center; margin: 0.6em 0; }
.site-math-display img.site-math { display: block; margin: 0.35em auto; }
img.site-diagram-still { display: block; width: 100%; height: auto; margin: 0.5em auto; }
.site-diagram details, .site-diagram summary { font-family: system-ui, sans-serif; font-size: 13px; color: #444; }
.site-diagram details pre { background: #f7f7f7; border: 1px dashed #bbb; padding: 8px; }
img.site-explorer-still { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee6;
                          margin: 6px 0 0 var(--jp-cell-prompt-width, 64px); }
"""

# The 'lab' template less its network scripts, plus the navigation and the explorers' note.
TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">""" + PAGE_CSS + """</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}{{ resources.site_nav }}{%- endblock body_header -%}
{% block codecell %}{{ super() }}
{%- if cell.metadata.get("site_explorer") -%}
{%- if cell.metadata.get("site_still") %}
<img class="site-explorer-still" src="{{ cell.metadata.site_still }}"
 alt="A still of the explorer: its output in JupyterLab after its first run and one move of a control">
{%- endif %}
<p class="site-note site-explorer">An explorer: its controls need a live kernel.
{%- if cell.metadata.get("site_still") %} Above is a still of it: what it showed in JupyterLab after its first run
and one move of a control (taken by <code>make stills</code>).
{%- elif cell.outputs %} What it printed and drew on its first run, stored with the notebook, is shown above as a still.
{%- else %} The notebook stores no output of it (what it shows depends on the controls).
{%- endif %} To use it, run <code>make lab</code>, open <code>{{ resources.site_notebook }}</code> and run its
cells from the top.</p>
{%- endif -%}
{% endblock codecell %}
"""

INDEX_CSS = """
body { font-family: system-ui, sans-serif; max-width: 920px; margin: 2em auto; padding: 0 1em; line-height: 1.5;
       color: #1d2329; }
h1 { font-size: 1.7em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #dde; }
pre { background: #f3f5f8; padding: 10px 12px; border-radius: 6px; overflow-x: auto; }
code { background: #f3f5f8; padding: 0 3px; border-radius: 3px; }
pre code { padding: 0; }
.lesson { border: 1px solid #d8dee6; border-radius: 8px; padding: 4px 16px 10px; margin: 14px 0; }
.lesson h3 { margin-bottom: 4px; } .meta { color: #555; font-size: 0.92em; }
.lesson ul, .lesson ol { margin-top: 4px; }
"""


GUIDE_CSS = """
table { border-collapse: collapse; margin: 10px 0; font-size: 0.92em; }
th, td { border: 1px solid #d8dee6; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f5f8; }
"""


def is_explorer(cell) -> bool:
    """A widget cell: ``widgets.interact(...)``, or controls wired to a button (notebook 04)."""
    return cell.cell_type == "code" and EXPLORER.search(cell.source) is not None


def lessons() -> list[Path]:
    """notebooks/01_*.ipynb ... notebooks/10_*.ipynb, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def solutions_of(lesson: Path) -> Path:
    """notebooks/03_kv_cache.ipynb -> notebooks/solutions/03_kv_cache_solutions.ipynb"""
    return NOTEBOOKS / "solutions" / f"{lesson.stem}_solutions.ipynb"


def page_name(notebook: Path) -> str:
    """Where a notebook's page lies in the site: 03_kv_cache.html, solutions/03_kv_cache_solutions.html."""
    return ("solutions/" if notebook.parent.name == "solutions" else "") + notebook.stem + ".html"


def title_and_objectives(notebook) -> tuple[str, str]:
    """The first markdown cell's heading, and the objectives list of the markdown cells before the first code
    cell (as markdown; '' when they have none)."""
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    intro = "\n\n".join(c.source for c in notebook.cells[:first_code] if c.cell_type == "markdown")
    title = next(line for line in intro.splitlines() if line.startswith("# "))[2:].strip()
    heading = OBJECTIVES_HEADING.search(intro)
    if heading is None:
        return title, ""
    items = []
    for line in intro[heading.end():].splitlines()[1:]:      # the lines after the heading's own line
        if re.match(r"\s*(\d+\.|[-*])\s", line) or (items and line.startswith(" ") and line.strip()):
            items.append(line)                               # an item, or the continuation of one
        elif items:
            break
    return title, "\n".join(items)


def data_url(mime: str, data: bytes) -> str:
    """The bytes as a ``data:`` URL (a picture that is part of the page, not a file it loads)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def mathtext_rows(tex: str, display: bool = False) -> list[tuple[str, str]]:
    """A formula as mathtext is given it: (the LaTeX, what mathtext draws) for each line, the rewrites of
    MATHTEXT_REWRITES applied (and, in a display formula, \\frac as \\dfrac: mathtext has no display style) and
    the spaces and newlines collapsed; an aligned block gives one line per row, its & dropped (the rows are
    centred, not aligned)."""
    aligned = ALIGNED.fullmatch(tex)
    rows = [row.replace("&", "") for row in aligned.group(1).split("\\\\")] if aligned else [tex]
    lines = []
    for row in filter(str.strip, rows):
        drawn = DISPLAY_FRACTION[0].sub(DISPLAY_FRACTION[1], row) if display else row
        for pattern, replacement in MATHTEXT_REWRITES:
            drawn = pattern.sub(replacement, drawn)
        lines.append((" ".join(row.split()), " ".join(drawn.split())))
    return lines


@functools.lru_cache(maxsize=None)
def formula_svg(tex: str) -> tuple[bytes, float, float, float] | None:
    """A formula drawn by mathtext as an SVG picture with a transparent background: (the SVG, its width, height
    and depth below the baseline in em of MATH_PT), or None when mathtext cannot draw it."""
    math, prop = f"${tex}$", FontProperties(size=MATH_PT, math_fontfamily=MATH_FONTS)
    with matplotlib.rc_context(MATH_RC):
        try:
            width, height, depth, _, _ = MathTextParser("path").parse(math, dpi=72, prop=prop)
        except ValueError:
            return None
        figure = Figure(figsize=(width / 72, height / 72))
        figure.text(0, depth / height, math, fontproperties=prop)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", transparent=True, metadata={"Date": None})
    return buffer.getvalue(), width / MATH_PT, height / MATH_PT, depth / MATH_PT


def formula_img(latex: str, drawn: str) -> str | None:
    """An <img> of the formula, sized to the line it sits on and on its baseline; its LaTeX as alt and title."""
    svg = formula_svg(drawn)
    if svg is None:
        return None
    picture, width, height, depth = svg
    width, height, depth = (round(size * MATH_SCALE, 3) for size in (width, height, depth))
    text = html.escape(latex)
    return (f'<img class="site-math" src="{data_url("image/svg+xml", picture)}" alt="{text}" title="{text}" '
            f'style="width:{width}em;height:{height}em;vertical-align:{-depth}em">')


def formula_html(tex: str, display: bool) -> str:
    """A formula as pictures (a display formula centred, one picture per line), or, when mathtext cannot draw
    one of its lines, as its LaTeX source in <code>."""
    images = [formula_img(latex, drawn) for latex, drawn in mathtext_rows(tex, display)]
    if not images or None in images:
        dollars = "$$" if display else "$"
        return f'<code class="site-math-source">{html.escape(dollars + tex.strip() + dollars)}</code>'
    return f'<span class="site-math-display">{"".join(images)}</span>' if display else images[0]


def formulas(source: str) -> list[tuple[str, bool]]:
    """A markdown source's formulas, outside its code: (the LaTeX, whether it is a display formula)."""
    found = []
    for part in CODE.split(source)[::2]:
        found += [(m.group(1) or m.group(2), m.group(1) is not None) for m in FORMULA.finditer(part)]
    return found


def diagram_html(svg: bytes, source: str) -> str:
    """A diagram's still (the SVG JupyterLab drew), no wider than JupyterLab drew it, and its Mermaid source."""
    width = re.search(rb'max-width:\s*([\d.]+)px', svg)
    style = f' style="max-width:{float(width.group(1)):.0f}px"' if width else ""
    return (f'<div class="site-diagram"><img class="site-diagram-still" src="{data_url("image/svg+xml", svg)}"{style} '
            f'alt="A diagram (its Mermaid source is below), as JupyterLab draws it">'
            f'<details><summary>Its Mermaid source</summary><pre>{html.escape(source)}</pre></details></div>')


def lesson_of(notebook_path: Path) -> Path:
    """The lesson a page's cells come from: the notebook itself, or the lesson of a solutions notebook."""
    return NOTEBOOKS / (notebook_path.stem.removesuffix("_solutions") + ".ipynb")


def diagram_still(lesson: Path | None, cell, k: int) -> Path | None:
    """The current still of the k-th diagram of a lesson's markdown cell, or None."""
    if lesson is None:
        return None
    return make_stills.current_still(lesson, cell, make_stills.diagram_name(lesson, cell.id, k))


def explorer_still(lesson: Path | None, cell) -> Path | None:
    """The current still of a lesson's explorer cell, or None."""
    if lesson is None:
        return None
    return make_stills.current_still(lesson, cell, make_stills.explorer_name(lesson, cell.id))


def with_swaps(cell, lesson: Path | None, swaps: dict[str, str]) -> None:
    """Each formula of a markdown cell, and each diagram that has a current still, replaced in its source by a
    word of SWAP; the HTML that stands for it goes into ``swaps`` (``swapped`` puts it into the page)."""
    def swap(markup: str) -> str:
        word = f"cadlabswap{len(swaps)}x"
        swaps[word] = markup
        return word

    def swap_formula(match: re.Match) -> str:
        display = match.group(1) is not None
        return swap(formula_html(match.group(1) if display else match.group(2), display))

    parts, diagrams = CODE.split(cell.source), 0
    for index, part in enumerate(parts):
        if index % 2 == 0:                                 # text: its formulas
            parts[index] = FORMULA.sub(swap_formula, part)
        elif mermaid := MERMAID_FENCE.fullmatch(part):     # a diagram: its still, when it has a current one
            still = diagram_still(lesson, cell, diagrams)
            if still is not None:
                parts[index] = f"\n\n{swap(diagram_html(still.read_bytes(), mermaid.group(1)))}\n\n"
            diagrams += 1
    cell.source = "".join(parts)


def swapped(body: str, swaps: dict[str, str]) -> str:
    """The page with each word of ``with_swaps`` (alone in a paragraph, or in a line) replaced by its HTML."""
    return SWAP.sub(lambda m: swaps[m.group(1) or m.group(2)], body)


def for_the_site(notebook, lesson: Path | None = None) -> dict[str, str]:
    """The notebook made ready for its page: no widget state and no widget views; explorer cells marked for the
    note and given their current still; formulas and diagrams swapped out (the swaps are returned)."""
    notebook.metadata.pop("widgets", None)
    swaps = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            with_swaps(cell, lesson, swaps)
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        if is_explorer(cell):
            cell.metadata["site_explorer"] = True
            still = explorer_still(lesson, cell)
            if still is not None:
                cell.metadata["site_still"] = data_url("image/png", still.read_bytes())
    return swaps


def nav(links: list[tuple[str, str]], note: str = "") -> str:
    """The bar at the top of a page: (text, href) links, then a note."""
    items = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in links)
    return f'<nav class="site-nav">{items}{note}</nav>'


def site_exporter() -> HTMLExporter:
    """nbconvert's HTMLExporter with the 'lab' template, less its network scripts (TEMPLATE)."""
    return HTMLExporter(template_name="lab", template_file="site.html.j2",
                        extra_loaders=[jinja2.DictLoader({"site.html.j2": TEMPLATE})])


def render(exporter: HTMLExporter, notebook, name: str, label: str, site_nav: str, lesson: Path | None = None) -> str:
    """A notebook's page from its stored outputs: ``name`` is its title, ``label`` its path for the notes,
    ``lesson`` the lesson whose stills its cells may have (None: no stills)."""
    resources = {"site_nav": site_nav, "site_notebook": label, "metadata": {"name": name}}
    swaps = for_the_site(notebook, lesson)
    body, _ = exporter.from_notebook_node(notebook, resources=resources)
    return swapped(body, swaps).replace(MERMAID_BLOCK, MERMAID_NOTE)


def export(exporter: HTMLExporter, notebook_path: Path, out: Path, site_nav: str) -> Path:
    """One notebook's page, written into the site."""
    notebook = nbformat.read(notebook_path, as_version=4)
    body = render(exporter, notebook, notebook_path.stem, notebook_path.relative_to(ROOT).as_posix(), site_nav,
                  lesson_of(notebook_path))
    target = out / page_name(notebook_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


STATIC_NOTE = ('<br>A static copy of the stored outputs: formulas are drawn by matplotlib, diagrams and explorers '
               'are shown as stills taken in JupyterLab, and the explorers need a live kernel to move '
               '(<code>make lab</code>).')


def lesson_pages(exporter: HTMLExporter, out: Path) -> None:
    """Each lesson's page, linking to its solutions' page, and that page, linking back."""
    for lesson in lessons():
        solutions = solutions_of(lesson)
        export(exporter, lesson, out, nav([("Course index", "index.html"),
                                           (f"Solutions of {lesson.stem}", page_name(solutions))], STATIC_NOTE))
        export(exporter, solutions, out, nav([("Course index", "../index.html"),
                                              (f"The lesson {lesson.stem}", f"../{page_name(lesson)}")], STATIC_NOTE))


def guide_page(out: Path) -> Path:
    """The teacher's guide, docs/teaching.md, as a page of the site (its agendas and tables included)."""
    body = markdown2html_mistune(GUIDE.read_text(encoding="utf-8"))
    text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>cadlab: the teacher's guide</title>
<style>{INDEX_CSS}{GUIDE_CSS}</style>
</head>
<body>
<p><a href="index.html">Course index</a> · the guide's source: <code>docs/teaching.md</code></p>
{body}
</body>
</html>
"""
    target = out / GUIDE_PAGE
    target.write_text(text, encoding="utf-8")
    return target


def index_page(out: Path) -> Path:
    """The syllabus: every lesson's title, objectives, run time and pages; how to install."""
    times = json.loads(RUN_TIMES.read_text())["notebooks"]
    sections = []
    for lesson in lessons():
        title, objectives = title_and_objectives(nbformat.read(lesson, as_version=4))
        key = lesson.name[:2]
        run_time = say_seconds(times[key]["seconds"]) if key in times else "not recorded"
        sections.append(f"""<section class="lesson" id="lesson-{key}">
<h3><a href="{page_name(lesson)}">{html.escape(title)}</a></h3>
<p class="meta">Notebook <code>notebooks/{lesson.name}</code> · to run: {run_time} on a 2-core laptop CPU
(recorded by <code>make execute</code>) · to study: about {agendas.study_minutes(key)} min (the lesson's
estimate) · <a href="{page_name(lesson)}">the lesson</a> ·
<a href="{page_name(solutions_of(lesson))}">its solutions</a></p>
{"<p><strong>You will be able to</strong></p>" + markdown2html_mistune(objectives) if objectives else ""}
</section>""")
    text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>cadlab: how transformer inference really works, from Qwen2.5's layers to CAD-Recode</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<h1>cadlab: how transformer inference really works, from Qwen2.5's layers to CAD-Recode</h1>
<p>A notebook course with a small helper package. It takes a real language model apart layer by layer, writes
the sampling loop and the KV cache by hand, builds a GPT from scratch, and ends with CAD-Recode: a point cloud
of a mechanical part goes in, CadQuery code comes out, and the code becomes a solid. Everything runs offline on
a laptop CPU.</p>
<p>These pages are the executed course: each lesson with the outputs stored in the repository (the ones the
tests check), its solutions on a page of their own. They are static: the formulas are pictures drawn by
matplotlib, the diagrams and the explorers (sliders and dropdowns) are shown as stills taken in JupyterLab, and
an explorer needs a live kernel to move.</p>
<h2>How to install and run it</h2>
<p>In a clone of the repository, with Python 3.11, 3.12 or 3.13 and <code>make</code>:</p>
<pre><code>make lab     # set up (first time: a few minutes), then open JupyterLab on the course
make test    # set up, run the unit tests, then execute every notebook against its stored outputs</code></pre>
<p>After setup, run <code>make check</code> first: it runs <code>cadlab doctor</code>, a one-minute check that
the course works on this machine, which says what to fix if it does not. The README says more: the platforms,
disk and memory the course needs, and a classroom without a network.</p>
<h2>Teaching it</h2>
<p><a href="{GUIDE_PAGE}">The teacher's guide</a>: agendas for 90 minutes, one day and two days, with what to run
live, what to show and what to skip in each slot, its takeaway and questions with their answers; the exercises;
the morning checklist; what to do when a laptop fails; a glossary.</p>
<h2>Syllabus</h2>
{"".join(sections)}
</body>
</html>
"""
    target = out / "index.html"
    target.write_text(text, encoding="utf-8")
    return target


def lesson_formulas() -> list[tuple[str, bool]]:
    """Every formula of the lessons' markdown cells: (its LaTeX, whether it is a display formula)."""
    return [formula for lesson in lessons() for cell in nbformat.read(lesson, as_version=4).cells
            if cell.cell_type == "markdown" for formula in formulas(cell.source)]


def formulas_left_as_source() -> list[str]:
    """The lessons' formulas that mathtext cannot draw, even rewritten (the pages show their LaTeX)."""
    return [tex for tex, display in lesson_formulas() if "site-math-source" in formula_html(tex, display)]


def missing_stills() -> list[str]:
    """The lessons' diagrams and explorers without a current still (none taken, or taken of another source)."""
    missing = []
    for lesson in lessons():
        for cell in nbformat.read(lesson, as_version=4).cells:
            where = f"notebooks/{lesson.name}, cell {cell.id}"
            if cell.cell_type == "markdown":
                blocks = [part for part in CODE.split(cell.source)[1::2] if MERMAID_FENCE.fullmatch(part)]
                missing += [f"{where}: diagram {k}" for k in range(len(blocks))
                            if diagram_still(lesson, cell, k) is None]
            elif is_explorer(cell) and explorer_still(lesson, cell) is None:
                missing.append(f"{where}: explorer")
    return missing


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the whole site into ``out`` (emptied first) and return its index page; say how many formulas are
    drawn and which diagrams and explorers have no current still."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    lesson_pages(site_exporter(), out)
    guide_page(out)
    as_source = formulas_left_as_source()
    print(f"cadlab: formulas of the lessons: {len(lesson_formulas()) - len(as_source)} drawn by mathtext, "
          f"{len(as_source)} left as LaTeX source" + "".join(f"\n    {tex!r}" for tex in as_source))
    for still in missing_stills():
        print(f"cadlab: warning: no current still of {still}: the page shows its fallback (run make stills)")
    return index_page(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the site's folder (default: build/site)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    index = build(args.out)
    pages = len(list(args.out.rglob("*.html")))
    print(f"cadlab: {pages} pages in {time.perf_counter() - start:.1f} s; open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
