"""Recorded run times, and the times the course's text states: written from the record, never typed.

`make execute` runs each lesson with tools/execute_notebook.py, which calls `record()`: the lesson's
wall time, each code cell's time (from the ``execution`` timestamps nbclient stores in the cell's
metadata), the machine (CPU model, cores, torch threads) and its load average before and after the run
go into ``notebooks/run_times.json``. Then this script rewrites every stated time from that record.

A stated time is marked in markdown (a notebook's markdown cells, README.md, docs/teaching.md):

    to run: <!--time:03-->…<!--/time-->          the whole lesson 03
    the next cell takes <!--time:03/ttft-sweep-->…<!--/time-->   one cell of lesson 03, by cell id
    <!--time:lessons-->…<!--/time-->             all lessons together
    <!--time:longest-lesson-->…<!--/time-->      the longest lesson's run
    <!--time:machine-->…<!--/time-->             where and when the times were recorded
    <!--time:slow-cells-->…<!--/time-->          a table of every cell that took SLOW_CELL s or more
    <!--time:slow-cell-threshold-->…<!--/time--> SLOW_CELL itself
    <!--time:agenda/90-min-->…<!--/time-->       a workshop agenda of tools/agendas.py, its clock and run times
    <!--time:exercises-->…<!--/time-->           every lesson's exercises, and which each agenda sets in class

HTML comments do not render, so a reader sees only the time. Usage:

    python tools/run_times.py            # rewrite the marked times from notebooks/run_times.json
    python tools/run_times.py --check    # exit 1 if a marked time differs from the record
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "notebooks" / "run_times.json"
TEXT_FILES = ("README.md", "docs/teaching.md")
MARKER = re.compile(r"<!--time:(?P<key>[\w/-]+)-->(?P<text>.*?)<!--/time-->", re.S)
LESSON = re.compile(r"^(\d\d)_")
SLOW_CELL = 10.0


def lesson_key(path: Path) -> str | None:
    """notebooks/03_kv_cache.ipynb and notebooks/solutions/03_kv_cache_solutions.ipynb -> '03'."""
    match = LESSON.match(path.name)
    return match.group(1) if match else None


def _timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def cell_seconds(notebook) -> dict[str, float]:
    """Each executed code cell's time (cell id -> seconds), from nbclient's execution metadata."""
    times = {}
    for cell in notebook.cells:
        execution = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in execution and "shell.execute_reply" in execution:
            elapsed = _timestamp(execution["shell.execute_reply"]) - _timestamp(execution["iopub.execute_input"])
            times[cell.id] = round(elapsed.total_seconds(), 2)
    return times


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def load() -> float:
    """The one-minute load average (0 on a system without one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def read_record(path: Path = RECORD) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"notebooks": {}}


def record(path: Path, seconds: float, load_before: float) -> None:
    """Store lesson ``path``'s run (just executed in place) in the record beside it (run_times.json)."""
    key = lesson_key(path)
    if key is None or path.parent.name == "solutions":
        return
    record_path = path.resolve().parent / RECORD.name
    notebook = nbformat.read(path, as_version=4)
    data = read_record(record_path)
    data["notebooks"][key] = {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "cells": cell_seconds(notebook),
        "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_before,
        "load_after": load(),
        "machine": machine(),
        "torch_threads": _torch_threads(),
    }
    data["notebooks"] = dict(sorted(data["notebooks"].items()))
    record_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def say_seconds(seconds: float) -> str:
    """A recorded time as a reader wants it: '4 s', '45 s', '2.5 min', '12 min'."""
    if seconds < 1:
        return "under a second"
    if seconds < 10:
        return f"{seconds:.0f} s"
    if seconds < 100:
        return f"{5 * round(seconds / 5):.0f} s"
    minutes = seconds / 60
    if minutes < 10:
        return f"{round(minutes * 2) / 2:g} min"
    return f"{minutes:.0f} min"


def describe_cell(notebook_path: Path, cell_id: str) -> str:
    """Name a cell for the slow-cell table: the heading of the section it is in."""
    heading = "the first cells"
    for cell in nbformat.read(notebook_path, as_version=4).cells:
        if cell.cell_type == "markdown":
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = headings[-1] if headings else heading
        elif cell.get("id") == cell_id:
            return heading.replace("|", "\\|")
    return cell_id


def slow_cells(data: dict, root: Path) -> str:
    rows = ["| Notebook | Section (cell id) | Time |", "|---|---|---|"]
    for key, entry in data["notebooks"].items():
        for cell_id, seconds in entry["cells"].items():
            if seconds >= SLOW_CELL:
                what = describe_cell(root / "notebooks" / entry["notebook"], cell_id)
                rows.append(f"| {key} | {what} (cell `{cell_id}`) | {say_seconds(seconds)} |")
    return "\n" + "\n".join(rows) + "\n"


def stated(key: str, data: dict, root: Path = ROOT) -> str:
    """The text a marker with ``key`` stands for; KeyError names what the record lacks."""
    lessons = data["notebooks"]
    if key == "slow-cells":
        return slow_cells(data, root)
    if key == "slow-cell-threshold":
        return say_seconds(SLOW_CELL)
    if key.startswith("agenda/") or key == "exercises":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import agendas  # imported here: agendas uses say_seconds from this module
        if key == "exercises":
            return agendas.exercise_table()
        name = key.removeprefix("agenda/")
        if name not in agendas.AGENDAS:
            raise KeyError(f"no agenda {name!r} in tools/agendas.py ({', '.join(agendas.AGENDAS)})")
        return "\n" + agendas.render(agendas.AGENDAS[name], data)
    if key == "longest-lesson":
        return say_seconds(max(entry["seconds"] for entry in lessons.values()))
    if key == "lessons":
        return say_seconds(sum(entry["seconds"] for entry in lessons.values()))
    if key == "machine":
        entries = list(lessons.values())
        first = entries[0]["machine"]
        loads = [entry["load_before"] for entry in entries]
        dates = sorted({entry["recorded"][:10] for entry in entries})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        return (f"{first['cores']} CPU cores ({first['cpu']}), recorded on {when} by `make execute` "
                f"with a load average of {min(loads):.1f}–{max(loads):.1f} before each notebook")
    notebook, _, cell = key.partition("/")
    if notebook not in lessons:
        raise KeyError(f"no recorded run of lesson {notebook} (run make execute NB=notebooks/{notebook}_*.ipynb)")
    entry = lessons[notebook]
    if not cell:
        return say_seconds(entry["seconds"])
    if cell not in entry["cells"]:
        raise KeyError(f"lesson {notebook} has no recorded cell {cell!r} (a cell id of {entry['notebook']})")
    return say_seconds(entry["cells"][cell])


def rewrite(text: str, data: dict, where: str, root: Path = ROOT) -> str:
    def replace(match):
        try:
            value = stated(match.group("key"), data, root)
        except KeyError as error:
            raise SystemExit(f"{where}: {error.args[0]}") from None
        return f"<!--time:{match.group('key')}-->{value}<!--/time-->"

    return MARKER.sub(replace, text)


def marked_files(root: Path = ROOT) -> list[Path]:
    files = sorted((root / "notebooks").rglob("*.ipynb"))
    files = [f for f in files if ".ipynb_checkpoints" not in f.parts]
    return files + [root / name for name in TEXT_FILES if (root / name).exists()]


def apply(root: Path = ROOT, data: dict | None = None, write: bool = True) -> list[str]:
    """Rewrite every marked time under ``root``; returns the files that changed (or would change)."""
    data = read_record(root / "notebooks" / "run_times.json") if data is None else data
    changed = []
    for path in marked_files(root):
        where = str(path.relative_to(root))
        if path.suffix == ".ipynb":
            notebook = nbformat.read(path, as_version=4)
            dirty = False
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type == "markdown" and "<!--time:" in cell.source:
                    new = rewrite(cell.source, data, f"{where} cell {index}", root)
                    dirty |= new != cell.source
                    cell.source = new
            if dirty:
                changed.append(where)
                if write:
                    nbformat.write(notebook, path)
        else:
            text = path.read_text()
            new = rewrite(text, data, where, root)
            if new != text:
                changed.append(where)
                if write:
                    path.write_text(new)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a stated time is stale")
    args = parser.parse_args(argv)
    changed = apply(write=not args.check)
    for where in changed:
        print(f"{where}: {'stale' if args.check else 'rewritten'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
