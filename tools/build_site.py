"""Build a static website of the executed course, offline, from the notebooks' stored outputs.

`make site` runs it. Nothing is executed: nbconvert's HTMLExporter (the 'lab' template) turns each
lesson notebooks/NN_*.ipynb and each solutions notebook notebooks/solutions/NN_*_solutions.ipynb into
one page with the outputs nbval checks, and an index page gives the syllabus (each lesson's title, its
"You will be able to" objectives and its recorded run time) and how to install the course.

The pages load nothing from the network. The 'lab' template's scripts from a CDN are left out:
require.js and the widget manager (no page needs them: the explorers' widgets need a live kernel and
are replaced by a note saying how to run them), MathJax (formulas stay as their LaTeX source) and
Mermaid (a diagram is shown as its source, with a note). Pictures are inlined by nbconvert, and the
3-D viewer of `cadlab.cad.view` carries three.js inline in its iframe, so it turns in the page.

    python tools/build_site.py                 # into build/site/
    python tools/build_site.py --out DIR
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
import time
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_times import say_seconds  # noqa: E402  (the times the lessons state, said the same way)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUN_TIMES = NOTEBOOKS / "run_times.json"
DEFAULT_OUT = ROOT / "build" / "site"

# An explorer (as tests/browser/test_explorers_in_jupyterlab.py finds them): ipywidgets on a live kernel.
EXPLORER = re.compile(r"widgets\.interact\(|\.on_click\(")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OBJECTIVES_HEADING = re.compile(r"^\*\*(You will be able to|What you will learn)[.:]?\*\*", re.M)
MERMAID_BLOCK = '<div class="jp-Mermaid">'
MERMAID_NOTE = ('<div class="jp-Mermaid site-diagram"><p class="site-note">A diagram, shown as its Mermaid source: '
                'JupyterLab draws it (<code>make lab</code>).</p>')

PAGE_CSS = """
.site-nav { font-family: system-ui, sans-serif; font-size: 14px; background: #f3f5f8; border: 1px solid #d8dee6;
            border-radius: 6px; padding: 8px 12px; margin: 12px 0 20px var(--jp-cell-prompt-width, 64px);
            line-height: 1.6; }
.site-nav a { margin-right: 14px; color: #0b57d0; text-decoration: underline; }
.site-note { font-family: system-ui, sans-serif; font-size: 13px; color: #5a4500; background: #fff8e1;
             border-left: 4px solid #f0b400; padding: 6px 10px; margin: 6px 0; }
p.site-explorer { margin-left: var(--jp-cell-prompt-width, 64px); }
.site-diagram pre.mermaid { background: #f7f7f7; border: 1px dashed #bbb; padding: 8px; margin-bottom: 1em; }
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
<p class="site-note site-explorer">An explorer: its controls need a live kernel.
{%- if cell.outputs %} What it printed and drew on its first run, stored with the notebook, is shown above as a still.
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


def without_widgets(notebook):
    """The notebook with no widget state and no widget views; explorer cells marked for the note."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        if is_explorer(cell):
            cell.metadata["site_explorer"] = True
    return notebook


def nav(links: list[tuple[str, str]], note: str = "") -> str:
    """The bar at the top of a page: (text, href) links, then a note."""
    items = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in links)
    return f'<nav class="site-nav">{items}{note}</nav>'


def site_exporter() -> HTMLExporter:
    """nbconvert's HTMLExporter with the 'lab' template, less its network scripts (TEMPLATE)."""
    return HTMLExporter(template_name="lab", template_file="site.html.j2",
                        extra_loaders=[jinja2.DictLoader({"site.html.j2": TEMPLATE})])


def render(exporter: HTMLExporter, notebook, name: str, label: str, site_nav: str) -> str:
    """A notebook's page from its stored outputs: ``name`` is its title, ``label`` its path for the notes."""
    resources = {"site_nav": site_nav, "site_notebook": label, "metadata": {"name": name}}
    body, _ = exporter.from_notebook_node(without_widgets(notebook), resources=resources)
    return body.replace(MERMAID_BLOCK, MERMAID_NOTE)


def export(exporter: HTMLExporter, notebook_path: Path, out: Path, site_nav: str) -> Path:
    """One notebook's page, written into the site."""
    notebook = nbformat.read(notebook_path, as_version=4)
    body = render(exporter, notebook, notebook_path.stem, notebook_path.relative_to(ROOT).as_posix(), site_nav)
    target = out / page_name(notebook_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


STATIC_NOTE = ('<br>A static copy of the stored outputs: formulas are shown as their LaTeX source, diagrams as '
               'their Mermaid source, and the explorers need a live kernel (<code>make lab</code>).')


def lesson_pages(exporter: HTMLExporter, out: Path) -> None:
    """Each lesson's page, linking to its solutions' page, and that page, linking back."""
    for lesson in lessons():
        solutions = solutions_of(lesson)
        export(exporter, lesson, out, nav([("Course index", "index.html"),
                                           (f"Solutions of {lesson.stem}", page_name(solutions))], STATIC_NOTE))
        export(exporter, solutions, out, nav([("Course index", "../index.html"),
                                              (f"The lesson {lesson.stem}", f"../{page_name(lesson)}")], STATIC_NOTE))


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
(recorded by <code>make execute</code>) · <a href="{page_name(lesson)}">the lesson</a> ·
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
tests check), its solutions on a page of their own. They are static: formulas are shown as their LaTeX source,
diagrams as their Mermaid source, and the explorers (sliders and dropdowns) need a live kernel.</p>
<h2>How to install and run it</h2>
<p>In a clone of the repository, with Python 3.11, 3.12 or 3.13 and <code>make</code>:</p>
<pre><code>make lab     # set up (first time: a few minutes), then open JupyterLab on the course
make test    # set up, run the unit tests, then execute every notebook against its stored outputs</code></pre>
<p>After setup, run <code>make check</code> first: it runs <code>cadlab doctor</code>, a one-minute check that
the course works on this machine, which says what to fix if it does not. The README says more: the platforms,
disk and memory the course needs, and a classroom without a network.</p>
<h2>Syllabus</h2>
{"".join(sections)}
</body>
</html>
"""
    target = out / "index.html"
    target.write_text(text, encoding="utf-8")
    return target


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the whole site into ``out`` (emptied first) and return its index page."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    lesson_pages(site_exporter(), out)
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
