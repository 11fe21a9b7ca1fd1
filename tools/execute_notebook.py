"""Run notebooks top to bottom and store their outputs in place: what `make execute` calls.

    python tools/execute_notebook.py notebooks/07_cad_recode.ipynb [...]

The same as ``jupyter nbconvert --to notebook --execute --inplace`` (nbclient, the ``python3`` kernel, the
notebook's folder as working directory, a cell timeout), with two differences:

- No imitation of ipywidgets' Output widget. nbclient plays a front end for the Output widget that
  ``widgets.interact`` uses, and to do so it sends comm messages on the shell channel while it is
  waiting on that channel for the cell's ``execute_reply``. Now and then the reply is lost and the run
  hangs at an explorer cell with the kernel idle (jupyter/nbclient#312, jupyter/nbconvert#2029); here
  it stopped notebook 07 at its explorer in 2 runs of 2. Without the imitation a widget's output is
  ordinary cell output and nothing is sent on the shell channel while a cell runs.
- Explorer cells (``widgets.interact(...)`` or a button's ``.on_click(...)``) are stored without
  outputs and no widget state is stored: an explorer only works in a running kernel, and its
  stored output would be a dead widget and a large picture. nbval ignores those cells' outputs.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_times  # noqa: E402  (tools/ is not a package)

EXPLORER = re.compile(r"widgets\.interact\(|\.on_click\(")


class HeadlessClient(NotebookClient):
    """nbclient without its Output-widget front end (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.widget_registry = {}


def execute(path: Path, timeout: int = 600) -> float:
    """Run ``path`` in place and record its run time (tools/run_times.py); returns the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    load_before = run_times.load()
    start = time.perf_counter()
    HeadlessClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.resolve().parent)}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code" and EXPLORER.search(cell.source):
            cell.outputs = []
    notebook.metadata.pop("widgets", None)
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    run_times.record(path, seconds, load_before)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may take")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"executing {path} ...", flush=True)
        print(f"{path}: {execute(path, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
