"""Stills of the lessons' Mermaid diagrams and widget explorers, for the static site (`make stills`).

The site (tools/build_site.py) has no kernel and loads no script, so it cannot draw a Mermaid diagram nor run
an explorer. `make stills` takes pictures of both in a real JupyterLab, driven in headless Chromium, and
stores them in notebooks/stills/:

    NN_<cellid>_<k>.svg   the k-th ```mermaid block of a markdown cell, the SVG JupyterLab drew
    NN_<cellid>.png       an explorer cell's output area after its first run and one control move (a PNG
                          with a palette, in the 1300 px wide window of the test)
    stills.json           for each still: its notebook, cell id, kind and a hash of the cell's source

It does so by running the two browser tests that already drive JupyterLab,
tests/browser/test_diagrams_in_jupyterlab.py and tests/browser/test_explorers_in_jupyterlab.py, with
``CADLAB_STILLS`` set to the stills folder: the tests then save what they checked there (``save_diagram``
and ``save_explorer`` below) and record it in the manifest. A still whose cell source has changed since
is stale: ``current_still`` then returns None, the site shows the cell's fallback and says to run
`make stills`, and tests/test_site.py fails until the stills are taken again. After the run, entries of
cells that no longer exist are removed with their files.

    python tools/make_stills.py                  # every diagram and explorer (about 4 minutes on 2 cores)
    python tools/make_stills.py -k 03_kv_cache   # extra arguments go to pytest (make stills ARGS="-k ...")
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STILLS = NOTEBOOKS / "stills"
MANIFEST = "stills.json"
ENV = "CADLAB_STILLS"
TESTS = ["tests/browser/test_diagrams_in_jupyterlab.py", "tests/browser/test_explorers_in_jupyterlab.py"]
PNG_COLORS = 256            # explorer stills are stored with a palette: a quarter of the size, same look


def source_hash(source: str) -> str:
    """The first 16 hex digits of the SHA-256 of a cell's source (a still is current while it matches)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def diagram_name(notebook: Path, cell_id: str, k: int) -> str:
    """notebooks/03_kv_cache.ipynb, cell 'abc', block 0 -> 03_abc_0.svg"""
    return f"{notebook.name[:2]}_{cell_id}_{k}.svg"


def explorer_name(notebook: Path, cell_id: str) -> str:
    """notebooks/03_kv_cache.ipynb, cell 'abc' -> 03_abc.png"""
    return f"{notebook.name[:2]}_{cell_id}.png"


def load_manifest(folder: Path = STILLS) -> dict:
    """The manifest's entries, by still file name ({} when there is none)."""
    path = folder / MANIFEST
    return json.loads(path.read_text())["stills"] if path.is_file() else {}


def write_manifest(entries: dict, folder: Path = STILLS) -> None:
    text = json.dumps({"stills": dict(sorted(entries.items()))}, indent=1) + "\n"
    (folder / MANIFEST).write_text(text)


def record(folder: Path, name: str, data: bytes, notebook: Path, cell_id: str, kind: str, source: str) -> Path:
    """Write a still and its manifest entry (notebook path relative to the repository, cell id, hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    entries = load_manifest(folder)
    entries[name] = {"notebook": notebook.resolve().relative_to(ROOT).as_posix(), "cell": cell_id, "kind": kind,
                     "source_sha256": source_hash(source)}
    write_manifest(entries, folder)
    return folder / name


def stills_folder() -> Path | None:
    """The folder ``CADLAB_STILLS`` names (relative to the repository), or None when it is not set."""
    value = os.environ.get(ENV)
    return (ROOT / value) if value else None


def svg_of_data_url(url: str) -> bytes:
    """The SVG of a ``data:image/svg+xml[;base64],...`` URL, as JupyterLab's Mermaid renderer sets it."""
    header, _, payload = url.partition(",")
    return base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)


def save_diagram(notebook: Path, cell, k: int, data_url: str) -> Path | None:
    """Store the k-th diagram of a markdown cell, when ``CADLAB_STILLS`` is set."""
    folder = stills_folder()
    if folder is None:
        return None
    return record(folder, diagram_name(notebook, cell["id"], k), svg_of_data_url(data_url), notebook, cell["id"],
                  "diagram", _source(cell))


def small_png(png: bytes) -> bytes:
    """The screenshot with a palette of PNG_COLORS colors (plots and text need no more)."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=PNG_COLORS, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save_explorer(notebook: Path, cell, png: bytes) -> Path | None:
    """Store an explorer's screenshot, when ``CADLAB_STILLS`` is set."""
    folder = stills_folder()
    if folder is None:
        return None
    return record(folder, explorer_name(notebook, cell["id"]), small_png(png), notebook, cell["id"], "explorer",
                  _source(cell))


def _source(cell) -> str:
    """A cell's source as one string (nbformat's node, or the raw JSON's list of lines)."""
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def current_still(lesson: Path, cell, name: str, folder: Path = STILLS, entries: dict | None = None) -> Path | None:
    """The still ``name`` of a lesson's cell if it exists and was taken of the cell's present source, else None.

    A solutions notebook's cells have the ids and sources of its lesson's: pass the lesson.
    """
    entries = load_manifest(folder) if entries is None else entries
    entry = entries.get(name)
    if entry is None or not (folder / name).is_file():
        return None
    if entry["notebook"] != f"notebooks/{lesson.name}" or entry["cell"] != cell["id"]:
        return None
    return folder / name if entry["source_sha256"] == source_hash(_source(cell)) else None


def prune(folder: Path = STILLS) -> list[str]:
    """Remove the entries (and files) of cells that no longer exist, and files the manifest does not list."""
    entries, removed = load_manifest(folder), []
    ids = {}
    for name, entry in list(entries.items()):
        notebook = ROOT / entry["notebook"]
        if notebook not in ids:
            ids[notebook] = {c.id for c in nbformat.read(notebook, as_version=4).cells} if notebook.is_file() else set()
        if entry["cell"] not in ids[notebook]:
            del entries[name]
    write_manifest(entries, folder)
    for path in folder.iterdir():
        if path.name != MANIFEST and path.name not in entries:
            path.unlink()
            removed.append(path.name)
    return removed


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    import conftest                                       # the browser tests' Chromium lookup

    if conftest.find_chromium() is None:
        print(f"cadlab: make stills needs Chromium: {conftest.SKIP_REASON}", file=sys.stderr)
        return 1
    STILLS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{ENV: STILLS.relative_to(ROOT).as_posix()})
    status = subprocess.call([sys.executable, "-m", "pytest", "-q", *TESTS, *argv], cwd=ROOT, env=env)
    removed = prune()
    entries = load_manifest()
    kinds = [e["kind"] for e in entries.values()]
    print(f"cadlab: {kinds.count('diagram')} diagram and {kinds.count('explorer')} explorer stills in "
          f"{STILLS.relative_to(ROOT)}/" + (f"; removed {', '.join(removed)}" if removed else ""))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
