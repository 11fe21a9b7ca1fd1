"""tools/run_times.py: run times are recorded by `make execute`, and every time the course states is
written from that record: none is stale, none is typed by hand in the lessons."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
_spec = importlib.util.spec_from_file_location("run_times", ROOT / "tools" / "run_times.py")
run_times = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_times)
_spec = importlib.util.spec_from_file_location("execute_notebook", ROOT / "tools" / "execute_notebook.py")
execute_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebook)

LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Every lesson: none has a hand-typed time left.
NO_TYPED_TIMES = LESSONS


def test_a_recorded_time_reads_as_a_reader_wants_it():
    assert [run_times.say_seconds(s) for s in (0.4, 4.2, 44, 47.6, 99, 150, 412, 725)] == [
        "under a second", "4 s", "45 s", "50 s", "100 s", "2.5 min", "7 min", "12 min"]


def test_make_execute_records_the_run_and_the_marked_times_are_written_from_it(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    lesson = nbformat.v4.new_notebook()
    lesson.cells = [
        nbformat.v4.new_markdown_cell("## A short nap\n\nTo run: <!--time:01-->?<!--/time-->. The nap takes "
                                      "<!--time:01/nap-->?<!--/time-->."),
        nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nimport time\ntime.sleep(1.2)"),
        nbformat.v4.new_code_cell("6 * 7"),
    ]
    lesson.cells[1]["id"] = "nap"
    path = notebooks / "01_lesson.ipynb"
    nbformat.write(lesson, path)
    (tmp_path / "README.md").write_text("| 01 | <!--time:01-->old<!--/time--> |\nall: <!--time:lessons-->x<!--/time-->\n"
                                        "<!--time:slow-cells--><!--/time-->\n")
    monkeypatch.setattr(run_times, "SLOW_CELL", 1.0)

    assert execute_notebook.main([str(path), "--timeout", "60"]) == 0
    record = json.loads((notebooks / "run_times.json").read_text())["notebooks"]["01"]
    assert record["notebook"] == "01_lesson.ipynb" and record["seconds"] >= 1.2
    assert 1.2 <= record["cells"]["nap"] < record["seconds"]
    assert set(record["cells"]) == {"nap", lesson.cells[2]["id"]}
    assert record["machine"]["cores"] >= 1 and "load_before" in record and "recorded" in record

    assert run_times.apply(tmp_path, write=False) == ["notebooks/01_lesson.ipynb", "README.md"]
    run_times.apply(tmp_path)
    stated = nbformat.read(path, as_version=4).cells[0].source
    assert re.fullmatch(r"## A short nap\n\nTo run: <!--time:01-->\d+ s<!--/time-->\. The nap takes <!--time:01/nap-->1 s<!--/time-->\.",
                        stated), stated
    readme = (tmp_path / "README.md").read_text()
    assert "<!--time:01-->old" not in readme and "| 01 | A short nap (cell `nap`) | 1 s |" in readme
    assert run_times.apply(tmp_path, write=False) == []        # written once, nothing stale


def test_a_marker_the_record_cannot_answer_names_what_is_missing(tmp_path):
    data = {"notebooks": {"01": {"notebook": "01_a.ipynb", "seconds": 3.0, "cells": {"x": 1.0}}}}
    with pytest.raises(SystemExit, match="no recorded run of lesson 02"):
        run_times.rewrite("<!--time:02-->?<!--/time-->", data, "README.md")
    with pytest.raises(SystemExit, match="lesson 01 has no recorded cell 'y'"):
        run_times.rewrite("<!--time:01/y-->?<!--/time-->", data, "README.md")


def test_every_lesson_has_a_recorded_run_and_states_it_at_the_top():
    record = run_times.read_record()["notebooks"]
    for path in NO_TYPED_TIMES:
        key = path.name[:2]
        assert key in record and record[key]["notebook"] == path.name, f"{path.name}: no recorded run (make execute)"
        top = "".join(c.source for c in nbformat.read(path, as_version=4).cells[:3] if c.cell_type == "markdown")
        assert f"<!--time:{key}-->" in top, f"{path.name}: the top cells do not state the recorded run time"


def test_no_stated_time_is_stale():
    """Every marked time in the notebooks, README.md and docs/teaching.md equals what the record says."""
    assert run_times.apply(ROOT, write=False) == []


TYPED_TIME = re.compile(r"(?:≈|~|about|under|over|within)?\s*(\d+(?:\.\d+)?)\s*(?:s|sec|seconds?|min|minutes?)\b")


@pytest.mark.parametrize("path", NO_TYPED_TIMES, ids=lambda p: p.stem)
def test_no_lesson_types_a_run_time_by_hand(path):
    """A time in a lesson's prose is a marker written by tools/run_times.py (or printed by the cell that
    measured it). A study-time estimate (a sentence saying "study" or "estimate", or a table whose header
    says "study" or "reading") is not a measurement and is allowed."""
    notebook = nbformat.read(path, as_version=4)
    typed = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        text = run_times.MARKER.sub(" ", cell.source)
        text = re.sub(r"```.*?```|`[^`\n]*`|<!--.*?-->|\$[^$\n]*\$", " ", text, flags=re.S)
        for block in re.split(r"\n\s*\n", text):
            lines = [line.strip() for line in block.splitlines() if line.strip()]
            if lines and all(line.startswith("|") for line in lines):       # a table: exempt if about study
                pieces = [] if re.search(r"\b(study|reading)\b", lines[0], re.I) else lines
            else:                                                            # prose: sentence by sentence
                pieces = re.split(r"(?<=[.!?])\s+", " ".join(lines))
            for piece in pieces:
                if re.search(r"\b(study|estimate)\b", piece, re.I):
                    continue
                for match in TYPED_TIME.finditer(piece):
                    typed.append(f"cell {index}: {match.group(0).strip()!r} in: {piece[:120]}")
    assert not typed, f"{path.name}: times typed by hand (use a <!--time:..--> marker):\n" + "\n".join(typed)
