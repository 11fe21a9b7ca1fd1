"""tools/execute_notebook.py (`make execute`): runs a notebook in place like nbconvert, an explorer
included, and stores the explorer without outputs or widget state."""

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("execute_notebook", ROOT / "tools" / "execute_notebook.py")
execute_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebook)


def test_a_notebook_with_an_explorer_runs_in_place_and_its_explorer_is_stored_empty(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# a lesson"),
        nbformat.v4.new_code_cell("import os\nprint(os.getcwd())"),
        nbformat.v4.new_code_cell("import ipywidgets as widgets\n\n"
                                  "def show(n):\n    print('n squared is', n * n)\n\n"
                                  "widgets.interact(show, n=widgets.IntSlider(value=3, max=9));"),
        nbformat.v4.new_code_cell("6 * 7"),
    ]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(notebook, path)
    assert execute_notebook.main([str(path), "--timeout", "60"]) == 0
    stored = nbformat.read(path, as_version=4)
    first, explorer, last = stored.cells[1:]
    assert first.outputs[0]["text"].strip() == str(tmp_path)          # run in the notebook's folder
    assert explorer.execution_count == 2 and explorer.outputs == []   # ran, stored without outputs
    assert last.outputs[0]["data"]["text/plain"] == "42"
    assert "widgets" not in stored.metadata
