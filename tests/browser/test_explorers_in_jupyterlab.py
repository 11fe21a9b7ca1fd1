"""Every notebook explorer, in a real JupyterLab in headless Chromium: it renders, a control moves
through the page, the output changes, and no error appears (in the notebook or the browser console).

Each notebook is copied into the lab's folder with only the cells its explorers need (the first
code cell, which loads the model, the cells named in ``NEEDS``, and the explorer cells), because
running whole lessons would take far longer than the 5 minutes this run may take; the lessons
themselves run under nbval. The copy is opened in JupyterLab and run with Run > Run All Cells.
A screenshot of each explorer after its control moved goes to out/browser/ (on failure also a
screenshot of the page, the browser console and the server log). With ``CADLAB_STILLS`` set (`make stills`,
tools/make_stills.py), that screenshot is also stored there as the site's still of the explorer.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "out" / "browser"           # the same folder as conftest.OUT (the fixture out_dir empties it)
sys.path.insert(0, str(ROOT / "tools"))
import make_stills  # noqa: E402  (stores the stills when CADLAB_STILLS is set)

# notebook -> (source markers of the cells the explorers need besides the first code cell,
#              [(explorer marker, control kind, control label, new value[, button to click then])]:
#              one control moved per explorer)
NEEDS = {
    "01_qwen25_layers.ipynb": ([], [("def show_attention", "slider", "head", "4"),
                                    ("def show_lens", "slider", "layers", "10")]),
    "02_sampling_loop.ipynb": (["EOS ="], [("def explore(prompt", "slider", "seed", "3")]),
    "03_kv_cache.ipynb": ([], [("def show_cache", "dropdown", "dtype", "float32")]),
    "04_babygpt.ipynb": ([], [("button.on_click(", "slider", "temperature", "0.0", "Generate")]),
    "05_parallel_decoding.ipynb": ([], [("def show_block", "slider", "refine_iter", "5")]),
    "06_point_clouds.ipynb": (["parts = {", "meshes[name] = load_mesh(path)", "normalized = {name: normalize_mesh"],
                              [("def show_cloud", "dropdown", "shape", "plate")]),
    "07_cad_recode.ipynb": (["demo_seed = ranked[", "mesh = load_mesh(stl_path)",
                             "inputs = prepare_inputs(points, tokenizer)", "seen_embeddings, encoder_calls = [], []",
                             "MAX_NEW = 256", "predicted_code = extract_code(text)",
                             "predicted_mesh = closed_solid(result)", "library = load_library()",
                             "truth_codes, truth_meshes = {}, {}"],
                            [("def show_reconstruction", "dropdown", "shape", "cadlab/data/parts/")]),
    "08_cadrille.ipynb": ([], [("def explore(mode", "dropdown", "part", "10000002")]),
    "09_cad_autocomplete.ipynb": (["tuned, _ = ta.load_autocomplete"], [("def explore(seed", "slider", "kept ops", "2")]),
    "10_constrained_decoding.ipynb": (['recode = logs["cadrecode"]["grammar"]'],
                                      [("def explore(shape", "dropdown", "grammar", "box")]),
}
RUN_TIMEOUT_S = 150          # one notebook's cells, on a loaded 2-core machine
CHANGE_TIMEOUT_S = 90        # one explorer step (notebook 07 runs the whole pipeline: generation, sandbox, fit)


def error_outputs(panel) -> list[str]:
    """The notebook's outputs that show a Python traceback (an error in a cell or in a widget callback)."""
    return [e.inner_text()[:1500] for e in panel.locator(".jp-OutputArea-output").all()
            if "Traceback (most recent call last)" in e.inner_text()]


def is_explorer(cell) -> bool:
    """A widget cell: ``widgets.interact(...)``, or controls wired to a button (notebook 04)."""
    return cell["cell_type"] == "code" and re.search(r"widgets\.interact\(|\.on_click\(", "".join(cell["source"])) is not None


def trimmed_copy(name: str, folder: Path) -> Path:
    """The lesson with only its first code cell, the ``NEEDS`` cells and its explorers; no outputs."""
    notebook = json.loads((NOTEBOOKS / name).read_text())
    markers, explorers = NEEDS[name]
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    kept = [code_cells[0]]
    for marker in markers:
        hits = [c for c in code_cells if marker in "".join(c["source"])]
        assert len(hits) == 1, f"{name}: {len(hits)} cells contain {marker!r} (expected exactly one)"
        kept.append(hits[0])
    kept += [c for c in code_cells if is_explorer(c)]
    assert len([c for c in kept if is_explorer(c)]) == len(explorers), f"{name}: explorers and NEEDS disagree"
    order = {id(c): i for i, c in enumerate(notebook["cells"])}
    notebook["cells"] = sorted({id(c): c for c in kept}.values(), key=lambda c: order[id(c)])
    for cell in notebook["cells"]:
        cell["outputs"], cell["execution_count"] = [], None
    notebook["metadata"].pop("widgets", None)
    path = folder / name
    path.write_text(json.dumps(notebook, indent=1))
    return path


def explorer_cell(name: str, marker: str) -> dict:
    """The lesson's explorer cell (its id and source) that contains ``marker``."""
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    return next(c for c in cells if is_explorer(c) and marker in "".join(c["source"]))


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def output_signature(cell) -> str:
    """What the explorer shows: the text of its output widget plus the images in it."""
    output = cell.locator(".widget-output").first
    images = output.locator("img").evaluate_all("nodes => nodes.map(n => n.src.length + ':' + n.src.slice(-64))")
    return output.inner_text() + "|" + "|".join(images)


def move_control(page, cell, kind: str, label: str, value: str):
    box = cell.locator(f".widget-{'slider' if kind == 'slider' else 'dropdown'}").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
    assert box.count() == 1, f"no {kind} labelled {label!r} in the explorer"
    if kind == "slider":                              # type into the slider's editable readout
        readout = box.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
        page.keyboard.press("Enter")
        wait_until(lambda: float(readout.inner_text().strip()) == float(value), 10, f"the {label} slider to read {value}")
    else:                                             # the first option whose label starts with value
        select = box.locator("select")
        options = select.locator("option").all_inner_texts()
        choice = next((o for o in options if o.startswith(value)), None)
        assert choice is not None, f"no option starting with {value!r} in {options}"
        select.select_option(label=choice)


def run_all(page):
    """Run > Run All Cells, through the menu bar."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu-item", has_text=re.compile(r"Run All Cells"))
    item.first.wait_for(timeout=10_000)
    item.first.click()


@pytest.mark.parametrize("name", list(NEEDS))
def test_explorer_runs_and_responds_in_jupyterlab(name, lab, browser, out_dir):
    stem = name.removesuffix(".ipynb")
    trimmed_copy(name, lab.folder)
    page = browser.new_page(viewport={"width": 1300, "height": 1800})
    console, page_errors = [], []
    page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    started = time.monotonic()
    try:
        # ?reset: a fresh workspace, so the notebooks opened by earlier tests do not reopen as tabs
        page.goto(lab.url(f"lab/tree/{name}") + "&reset", wait_until="domcontentloaded", timeout=60_000)
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        panel.locator(".jp-CodeCell").first.wait_for(timeout=60_000)
        status = panel.locator(".jp-Notebook-ExecutionIndicator")
        wait_until(lambda: status.get_attribute("data-status") == "idle", 60, "the kernel to start")
        select_kernel = page.locator(".jp-Dialog .jp-mod-accept", has_text="Select")
        if select_kernel.is_visible():                    # if JupyterLab asks which kernel: the notebook's own
            select_kernel.click()
        wait_until(lambda: "Idle" in page.locator(".jp-StatusBar-Widget", has_text="|").first.inner_text(), 60,
                   "the status bar to show the kernel idle")
        cells = panel.locator(".jp-Notebook .jp-CodeCell")
        prompts = cells.locator(".jp-InputArea-prompt")
        for attempt in range(2):      # a Run All sent while the kernel's websocket (re)connects can be lost
            run_all(page)
            try:
                wait_until(lambda: any(t.strip() != "[ ]:" for t in prompts.all_inner_texts()), 30,
                           "the cells to start running")
                break
            except AssertionError:
                if attempt:
                    raise
        n_cells = cells.count()
        wait_until(lambda: all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in prompts.all_inner_texts())
                   and status.get_attribute("data-status") == "idle", RUN_TIMEOUT_S, f"the {n_cells} cells to run")
        run_s = time.monotonic() - started
        assert not error_outputs(panel), f"error output in {name}:\n" + "\n---\n".join(error_outputs(panel))

        for marker, kind, label, value, *button in NEEDS[name][1]:
            cell = cells.filter(has_text=marker)
            assert cell.count() == 1, f"explorer cell {marker!r} not found"
            cell.locator(".widget-output").first.wait_for(timeout=30_000)   # the widget manager rendered it
            wait_until(lambda: output_signature(cell) != "|", CHANGE_TIMEOUT_S, "the explorer's first output")
            wait_until(lambda: status.get_attribute("data-status") == "idle", CHANGE_TIMEOUT_S, "the first output")
            before = output_signature(cell)
            move_control(page, cell, kind, label, value)
            if button:
                cell.locator("button", has_text=re.compile(f"^{re.escape(button[0])}$")).click()
            wait_until(lambda: output_signature(cell) != before, CHANGE_TIMEOUT_S,
                       f"the output of {marker!r} to change after {label} -> {value}")
            wait_until(lambda: status.get_attribute("data-status") == "idle", CHANGE_TIMEOUT_S, "the kernel")
            time.sleep(0.5)                                                  # let the last image paint
            output = cell.locator(".jp-Cell-outputWrapper")
            output.scroll_into_view_if_needed()
            output.screenshot(path=str(OUT / f"{stem}_{marker.removeprefix('def ').split('(')[0]}.png"))
            if make_stills.stills_folder() is not None:        # the output alone, without the active cell's bar
                png = cell.locator(".jp-Cell-outputArea").screenshot()
                make_stills.save_explorer(NOTEBOOKS / name, explorer_cell(name, marker), png)

        assert not error_outputs(panel), f"error output in {name}:\n" + "\n---\n".join(error_outputs(panel))
        assert "Error displaying widget" not in panel.locator(".jp-Notebook").inner_text()
        assert not page_errors, f"uncaught errors in the page: {page_errors}"
        console_errors = [line for line in console if line.startswith("[error]")]
        widget_errors = [line for line in console_errors if re.search(r"widget|jupyter-widgets", line, re.I)]
        assert not widget_errors, "the widget manager logged errors in the console:\n" + "\n".join(widget_errors)
        assert not console_errors, "errors in the browser console:\n" + "\n".join(console_errors)
        print(f"{name}: {n_cells} cells ran in {run_s:.0f} s; whole test {time.monotonic() - started:.0f} s")
    except BaseException:
        page.screenshot(path=str(OUT / f"{stem}_FAILED.png"), full_page=True)
        (OUT / f"{stem}_console.txt").write_text("\n".join(console + ["", "page errors:"] + page_errors
                                                           + ["", "jupyter server log (tail):", lab.log()[-5000:]]))
        raise
    finally:
        page.close()
        lab.shutdown_kernels()
