"""Solutions notebooks are generated from the lessons, and every solution passes its own check.

A lesson's exercise is a code cell tagged ``exercise`` with the stub as its source and the
solution in ``metadata["solution"]`` (see tools/make_solutions.py). `make notebooks` runs only
the lessons under nbval; these tests cover the solutions instead: (a) the committed solutions
notebook is what the script makes from the lesson, (b) each solution, run in a fresh
namespace, sets ``passed`` to True.
"""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LESSONS = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if not p.stem.endswith("_solutions"))

_spec = importlib.util.spec_from_file_location("make_solutions", ROOT / "tools" / "make_solutions.py")
make_solutions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_solutions)

CHECK_CALL = re.compile(r"\bcheck_\w+\(")


def _exercises(lesson: Path):
    notebook = nbformat.read(lesson, as_version=4)
    return [cell for cell in notebook.cells if "exercise" in cell.get("metadata", {}).get("tags", [])]


def _cells(notebook):
    return [(cell["cell_type"], cell["source"], cell.get("metadata", {}).get("tags", [])) for cell in notebook.cells]


def test_there_are_lessons():
    assert len(LESSONS) >= 7, LESSONS


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_with_self_checks_tags_its_exercises(lesson):
    notebook = nbformat.read(lesson, as_version=4)
    checks = [cell.get("id") for cell in notebook.cells if cell["cell_type"] == "code"
              and CHECK_CALL.search(cell["source"]) and "exercise" not in cell.get("metadata", {}).get("tags", [])]
    assert not checks, (
        f"{lesson.name}: code cells {checks} call a check_...() but are not tagged 'exercise'. Tag each exercise "
        "cell 'exercise', keep the stub as its source and put the solution in metadata['solution'] "
        "(tools/make_solutions.py makes the solutions notebook from them)")
    for cell in _exercises(lesson):
        assert cell["cell_type"] == "code", (lesson.name, cell.get("id"))
        solution = cell["metadata"].get("solution")
        assert isinstance(solution, str) and solution.strip() != cell["source"].strip(), (lesson.name, cell.get("id"))
        assert "NotImplementedError" in cell["source"], f"{lesson.name} {cell.get('id')}: the stub should raise it"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_committed_solutions_notebook_is_generated_from_its_lesson(lesson):
    target = make_solutions.solutions_path(lesson)
    assert target.is_file(), f"{target.relative_to(ROOT)} is missing: run `python tools/make_solutions.py {lesson.relative_to(ROOT)}`"
    committed = nbformat.read(target, as_version=4)
    generated = make_solutions.solutions_notebook(lesson)
    assert _cells(committed) == _cells(generated), (
        f"{target.relative_to(ROOT)} differs from its lesson: run `make execute NB={lesson.relative_to(ROOT)}`")


def test_every_solutions_notebook_has_a_lesson():
    lessons = {make_solutions.solutions_path(lesson) for lesson in LESSONS}
    orphans = [p.name for p in (NOTEBOOKS / "solutions").glob("*.ipynb") if p not in lessons]
    assert not orphans, orphans


EXERCISES = [(lesson, cell) for lesson in LESSONS for cell in _exercises(lesson)]


@pytest.mark.parametrize("lesson, cell", EXERCISES, ids=[f"{lesson.stem[:2]}-{cell.get('id')}" for lesson, cell in EXERCISES])
def test_each_solution_passes_its_check_in_a_fresh_namespace(lesson, cell):
    namespace = {}
    exec(compile(cell["metadata"]["solution"], f"{lesson.name}:{cell.get('id')}", "exec"), namespace)  # noqa: S102
    assert namespace.get("passed") is True, f"{lesson.name} cell {cell.get('id')}: the solution must set passed = True"


def test_the_generator_replaces_exercises_keeps_outputs_of_unchanged_cells(tmp_path):
    lesson = tmp_path / "01_demo.ipynb"
    stub = nbformat.v4.new_code_cell("def f():\n    raise NotImplementedError\n\npassed = check(f)")
    stub.metadata.update(tags=["exercise"], solution="def f():\n    return 1\n\npassed = f() == 1")
    plain = nbformat.v4.new_code_cell("x = 1")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Demo"), plain, stub]), lesson)

    target = make_solutions.write_solutions(lesson)
    assert target == tmp_path / "solutions" / "01_demo_solutions.ipynb"
    notebook = nbformat.read(target, as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells[0]["cell_type"] == "markdown" and "generated from the lesson" in notebook.cells[0]["source"]
    assert "`01_demo.ipynb`" in notebook.cells[0]["source"]
    assert [c["source"] for c in notebook.cells[1:]] == ["# Demo", "x = 1", "def f():\n    return 1\n\npassed = f() == 1"]
    assert "solution" not in notebook.cells[3]["metadata"] and notebook.cells[3]["metadata"]["tags"] == ["exercise"]

    notebook.cells[2]["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="kept\n")]
    notebook.cells[3]["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")]
    nbformat.write(notebook, target)
    changed = nbformat.read(lesson, as_version=4)
    changed.cells[2]["metadata"]["solution"] = "passed = True"
    nbformat.write(changed, lesson)
    again = nbformat.read(make_solutions.write_solutions(lesson), as_version=4)
    assert again.cells[2]["outputs"][0]["text"] == "kept\n"
    assert again.cells[3]["source"] == "passed = True" and again.cells[3]["outputs"] == []


def test_the_generator_refuses_solution_only_cells_and_exercises_without_a_solution(tmp_path):
    lesson = tmp_path / "02_demo.ipynb"
    note = nbformat.v4.new_markdown_cell("The answer is 1.")
    note.metadata["tags"] = ["solution-only"]
    nbformat.write(nbformat.v4.new_notebook(cells=[note]), lesson)
    with pytest.raises(ValueError, match="solution-only"):
        make_solutions.solutions_notebook(lesson)
    bare = nbformat.v4.new_code_cell("raise NotImplementedError")
    bare.metadata["tags"] = ["exercise"]
    nbformat.write(nbformat.v4.new_notebook(cells=[bare]), lesson)
    with pytest.raises(ValueError, match="metadata\\['solution'\\]"):
        make_solutions.solutions_notebook(lesson)


@pytest.mark.parametrize("lesson, cell", EXERCISES, ids=[f"{lesson.stem[:2]}-{cell.get('id')}" for lesson, cell in EXERCISES])
def test_each_untouched_stub_is_reported_not_attempted(lesson, cell, capsys):
    """A learner who runs an exercise cell before writing anything gets ``passed = False`` and a
    "not attempted yet" line, not a traceback."""
    namespace = {}
    exec(compile(cell["source"], f"{lesson.name}:{cell.get('id')} (stub)", "exec"), namespace)  # noqa: S102
    assert namespace.get("passed") is False, f"{lesson.name} cell {cell.get('id')}: the stub must set passed = False"
    assert "not attempted yet" in capsys.readouterr().out, f"{lesson.name} cell {cell.get('id')}"


def test_every_check_in_the_package_is_used_by_an_exercise():
    """Each ``check_*`` of ``cadlab.exercises`` is called by some lesson's exercise solution."""
    defined = {name for module in (ROOT / "cadlab" / "exercises").glob("*.py")
               for name in re.findall(r"^def (check_\w+)\(", module.read_text(), re.MULTILINE)}
    used = {name for _, cell in EXERCISES for name in CHECK_CALL.findall(cell["metadata"]["solution"])}
    used = {name.rstrip("(") for name in used}
    assert defined - used == set(), f"checks no exercise uses: {sorted(defined - used)}"
