"""tools/agendas.py: the teacher's guide's agendas add up to their windows, every section and exercise they name
exists where they say, the guide shows what the record gives, and the exercise table covers every lesson."""

import dataclasses
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import agendas  # noqa: E402
import run_times  # noqa: E402

LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GUIDE = ROOT / "docs" / "teaching.md"
RECORD = json.loads((ROOT / "notebooks" / "run_times.json").read_text())


@pytest.mark.parametrize("name", list(agendas.AGENDAS))
def test_every_agenda_adds_up_and_names_only_what_exists(name):
    agenda = agendas.AGENDAS[name]
    agendas.check(agenda)
    text = agendas.render(agenda, RECORD)
    assert f"<!--time:agenda/{name}-->" in GUIDE.read_text(), f"docs/teaching.md shows no agenda {name}"
    # The clock runs without a gap from the start to the end of every day.
    for day in agenda.days:
        spans = [f"{agendas.clock(agenda.start + sum(s.minutes for s in day[:i]), agenda.start > 0)}" for i in
                 range(len(day) + 1)]
        for begin, end in zip(spans, spans[1:]):
            assert f"| {begin}–{end} |" in text


def test_the_agendas_cover_the_whole_course():
    taught = {slot.notebook for day in agendas.TWO_DAYS.days for slot in day if slot.notebook}
    assert taught == {path.name[:2] for path in LESSONS}
    assert agendas.NINETY.window == 90 and sum(s.minutes for s in agendas.NINETY.days[0]) == 90
    assert len(agendas.TWO_DAYS.days) == 2


def test_a_plan_that_does_not_add_up_is_refused():
    day = list(agendas.NINETY.days[0])
    day[1] = dataclasses.replace(day[1], minutes=day[1].minutes + 5)
    with pytest.raises(ValueError, match="add up to 95 min, not 90"):
        agendas.check(dataclasses.replace(agendas.NINETY, days=(tuple(day),)))


def test_a_section_or_exercise_that_does_not_exist_is_refused():
    slot = agendas.NINETY.days[0][1]
    for wrong, message in ((dataclasses.replace(slot, live=("42",)), "no section '42'"),
                           (dataclasses.replace(slot, exercises=("my_softmax",)), "not in a live section"),
                           (dataclasses.replace(slot, exercises=("my_rms_norm",)), "not in a live section"),
                           (dataclasses.replace(slot, questions=slot.questions[:1]), "two or three questions")):
        with pytest.raises(ValueError, match=message):
            agendas.check(dataclasses.replace(agendas.NINETY, days=((agendas.NINETY.days[0][0], wrong)
                                                                    + agendas.NINETY.days[0][2:],)))


def test_live_run_times_come_from_the_record():
    record = json.loads(json.dumps(RECORD))
    record["notebooks"]["03"]["seconds"] = 754.0
    for cell in agendas.sections("03")["5"].cells:
        record["notebooks"]["03"]["cells"][cell] = 300.0
    text = agendas.render(agendas.NINETY, record)
    assert "| 03 The KV cache | Run All (13 min); sections 1, 3, 5 again (" in text
    assert "sections 1, 3, 5 again (10 min)" in text


def test_sections_and_study_times_are_read_from_the_lessons():
    assert agendas.section_key("5. An attention map") == "5"
    assert agendas.section_key("1–2. Two pipelines, one point encoder") == "1–2"
    assert agendas.section_key("4 · Memory: what the cache costs") == "4"
    assert agendas.section_key("CadQuery in six steps") == "CadQuery"
    for path in LESSONS:
        assert 30 <= agendas.study_minutes(path.name[:2]) <= 180
    assert agendas.study_minutes("03") == 80           # "about 60 min … 20 min more for the optional sections"
    assert "Recap" not in agendas.sections("01") and "top" in agendas.sections("01")


def test_the_guide_is_current_with_the_record():
    assert run_times.apply(write=False) == [], "run python tools/run_times.py"


def test_the_exercise_table_covers_every_exercise_of_every_lesson():
    table = {}
    for line in GUIDE.read_text().splitlines():
        match = re.match(r"\| (\d\d) \| (`.+?) \|", line)
        if match:
            table[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    for path in LESSONS:
        stubs = {name for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
                 and "raise NotImplementedError" in cell.source
                 for name in re.findall(r"^def (\w+)\(", cell.source, re.M)}
        assert stubs, f"{path.name} has no exercise"
        assert table.get(path.name[:2]) == stubs, f"the exercise table's row for {path.name[:2]}"
