"""The workshop agendas of docs/teaching.md: the plan as data, the clock and the run times computed.

A teacher plans a slot in minutes: which notebook, which of its sections to work through live (run, change,
re-run with the class), which to show pre-executed (scroll through the stored outputs on the projector), which
exercises to set in class, the takeaway and questions for discussion with their answers. Everything else is
computed here, never typed:

- the clock of every slot (the sum of the minutes before it, from the day's start);
- a check that each day's slots fill its window exactly (90 minutes, or 09:00–17:00);
- the sections a slot skips (those of its notebook that are neither live nor shown);
- the run time of what a slot runs, from the record `make execute` wrote (notebooks/run_times.json): the whole
  notebook, since every slot starts with *Run All* (no lesson takes more than a few tens of seconds), and the
  cells of its live sections, which the class runs again;
- each notebook's minutes in class against the study time the notebook states in its first cells.

tools/run_times.py renders an agenda where docs/teaching.md has the marker ``<!--time:agenda/NAME-->…<!--/time-->``
(NAME is a key of AGENDAS), so `make execute` and `python tools/run_times.py` keep it current, and
`python tools/run_times.py --check` (run by the unit tests) fails when it is stale. tests/test_agendas.py checks
that every agenda adds up and that every section, exercise and notebook it names exists.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from run_times import say_seconds

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SECTION_KEY = re.compile(r"^(\d+(?:–\d+)?)\b")
STUDY = re.compile(r"to\s+study[:,]?\s+about\s+(\d+)\s+min", re.I)
STUDY_MORE = re.compile(r"(\d+)\s+min\s+more", re.I)
EXERCISE = re.compile(r"^def (\w+)\(", re.M)


@dataclass(frozen=True)
class Slot:
    """One slot of a day. ``notebook`` is a lesson's number ('03'); a slot with none is a break, the setup or a
    recap. ``live`` and ``shown`` are section keys: a section's number ('5', '1–2') or, for an unnumbered
    section, the first word of its heading ('CadQuery', 'Appendix')."""

    minutes: int
    title: str
    notebook: str | None = None
    live: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()
    exercises: tuple[str, ...] = ()
    curious: str = ""                          # where to send those who want what the slot skips
    takeaway: str = ""
    questions: tuple[tuple[str, str], ...] = ()
    is_break: bool = False


@dataclass(frozen=True)
class Agenda:
    title: str
    days: tuple[tuple[Slot, ...], ...]
    start: int = 0                             # minutes after midnight of the first slot; 0 prints 0:00 clocks
    window: int = 90                           # minutes each day must fill exactly
    homework: str = ""


@dataclass
class Section:
    key: str
    heading: str
    cells: list[str] = field(default_factory=list)   # code cell ids
    defines: list[str] = field(default_factory=list)  # names of the functions its code cells define


def section_key(heading: str) -> str:
    """'5. An attention map' -> '5'; '1–2. Two pipelines' -> '1–2'; 'CadQuery in six steps' -> 'CadQuery'."""
    match = SECTION_KEY.match(heading)
    return match.group(1) if match else heading.split()[0].strip("·—")


def notebook_path(key: str) -> Path:
    matches = sorted(NOTEBOOKS.glob(f"{key}_*.ipynb"))
    if len(matches) != 1:
        raise KeyError(f"no lesson notebooks/{key}_*.ipynb")
    return matches[0]


def sections(key: str) -> dict[str, Section]:
    """A lesson's '## ' sections in order, each with its code cells; the cells above the first '## ' heading
    (the setup cell) form the section 'top'. Recap and What's next have no key of their own to plan."""
    found = {"top": Section("top", "the first cells")}
    current = found["top"]
    for cell in nbformat.read(notebook_path(key), as_version=4).cells:
        if cell.cell_type == "markdown":
            headings = [line[3:].strip() for line in cell.source.splitlines() if line.startswith("## ")]
            if headings:
                current = Section(section_key(headings[0]), headings[0])
                found.setdefault(current.key, current)
                current = found[current.key]
        else:
            current.cells.append(cell.id)
            current.defines += EXERCISE.findall(cell.source)
    for closing in ("Recap", "What's"):
        found.pop(closing, None)
    return found


def study_minutes(key: str) -> int:
    """The study time a lesson states in its first cells ('to study: about 60 min …, 20 min more for …')."""
    cells = nbformat.read(notebook_path(key), as_version=4).cells[:4]
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    match = STUDY.search(text)
    if match is None:
        raise ValueError(f"lesson {key} states no 'to study: about N min' in its first cells")
    more = STUDY_MORE.search(text[match.end():match.end() + 200])
    return int(match.group(1)) + (int(more.group(1)) if more else 0)


def exercises(key: str) -> list[str]:
    """A lesson's exercises, in order: the functions defined in code cells whose body is a stub
    (``raise NotImplementedError``) for the learner to fill in."""
    cells = nbformat.read(notebook_path(key), as_version=4).cells
    return [name for cell in cells if cell.cell_type == "code" and "raise NotImplementedError" in cell.source
            for name in EXERCISE.findall(cell.source)]


def exercise_table() -> str:
    """Every lesson's exercises, and which of them each agenda sets in class; the rest are homework."""
    in_class = {name: {} for name in AGENDAS}
    for name, agenda in AGENDAS.items():
        for day in agenda.days:
            for slot in day:
                if slot.notebook:
                    in_class[name].setdefault(slot.notebook, set()).update(slot.exercises)
    labels = [f"In class: {agenda.title.split(':')[0].lower()}" for agenda in AGENDAS.values()]
    rows = ["| Lesson | Exercises | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(AGENDAS)]
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        key = path.name[:2]
        names = exercises(key)
        cells = [", ".join(f"`{e}`" for e in names if e in in_class[a].get(key, ())) or "—" for a in AGENDAS]
        rows.append(f"| {key} | {', '.join(f'`{e}`' for e in names)} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(rows) + "\n"


def check(agenda: Agenda) -> None:
    """Raise ValueError naming what does not add up or does not exist."""
    for number, day in enumerate(agenda.days, 1):
        total = sum(slot.minutes for slot in day)
        if total != agenda.window:
            raise ValueError(f"{agenda.title}, day {number}: the slots add up to {total} min, not {agenda.window}")
        for slot in day:
            if slot.notebook is None:
                if slot.live or slot.shown or slot.exercises:
                    raise ValueError(f"{slot.title}: sections or exercises without a notebook")
                continue
            known = sections(slot.notebook)
            for name in slot.live + slot.shown:
                if name not in known:
                    raise ValueError(f"{slot.title}: lesson {slot.notebook} has no section {name!r} ({list(known)})")
            live_defs = {d for name in slot.live + ("top",) for d in known[name].defines}
            for exercise in slot.exercises:
                if exercise not in live_defs:
                    raise ValueError(f"{slot.title}: exercise {exercise!r} is not in a live section of "
                                     f"lesson {slot.notebook}")
            if not 2 <= len(slot.questions) <= 3 or not slot.takeaway:
                raise ValueError(f"{slot.title}: a takeaway and two or three questions with answers are needed")


def day_slots(agenda: Agenda) -> list[Slot]:
    return [slot for day in agenda.days for slot in day]


def clock(minutes: int, from_midnight: bool) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}" if from_midnight else f"{minutes // 60}:{minutes % 60:02d}"


def _sections(keys, known: dict[str, Section]) -> str:
    """('3',) -> 'section 3'; ('1', '2') -> 'sections 1, 2'; an unnumbered one by its heading; () -> '—'."""
    numbered = [key for key in keys if SECTION_KEY.match(key)]
    named = [f"“{known[key].heading.split(' — ')[0]}”" for key in keys if not SECTION_KEY.match(key)]
    said = named + ([("section " if len(numbered) == 1 else "sections ") + ", ".join(numbered)] if numbered else [])
    return ", ".join(said) or "—"


def render(agenda: Agenda, record: dict) -> str:
    """The agenda as markdown: per day a table (clock, slot, what runs live and for how long by the record,
    what is shown, the exercises), then per slot its takeaway, what it skips, its questions and answers; then
    each lesson's minutes in class against its study time."""
    check(agenda)
    lessons = record["notebooks"]
    out, in_class, run_all, live_total = [], {}, 0.0, 0.0
    for number, day in enumerate(agenda.days, 1):
        if len(agenda.days) > 1:
            out.append(f"\n**Day {number}**\n")
        out += ["", "| Clock | Slot | Run live (recorded run time) | Show pre-executed | Exercises in class |",
                "|---|---|---|---|---|"]
        notes, t = [], agenda.start
        for slot in day:
            span = f"{clock(t, agenda.start > 0)}–{clock(t + slot.minutes, agenda.start > 0)}"
            t += slot.minutes
            if slot.notebook is None:
                out.append(f"| {span} | {'*' + slot.title + '*' if slot.is_break else slot.title} | | | |")
                if not slot.is_break:
                    notes.append((span, slot, None, []))
                continue
            entry = lessons.get(slot.notebook)
            if entry is None:
                raise KeyError(f"no recorded run of lesson {slot.notebook} (make execute NB=...)")
            known = sections(slot.notebook)
            live_seconds = sum(entry["cells"].get(c, 0.0) for name in slot.live for c in known[name].cells)
            run_all += entry["seconds"]
            live_total += live_seconds
            in_class[slot.notebook] = in_class.get(slot.notebook, 0) + slot.minutes
            covered = {k for other in day_slots(agenda) if other.notebook == slot.notebook
                       for k in other.live + other.shown}   # a lesson split over two slots skips neither's part
            skipped = [k for k in known if k != "top" and k not in covered]
            live = f"Run All ({say_seconds(entry['seconds'])})"
            if slot.live:
                live += f"; {_sections(slot.live, known)} again ({say_seconds(live_seconds)})"
            exercises = ", ".join(f"`{e}`" for e in slot.exercises) or "—"
            out.append(f"| {span} | {slot.title} | {live} | {_sections(slot.shown, known)} | {exercises} |")
            notes.append((span, slot, known, skipped))
        for span, slot, known, skipped in notes:
            out.append(f"\n**{span} · {slot.title}** ({slot.minutes} min). *Takeaway:* {slot.takeaway}")
            if known is not None:
                skip = _sections(skipped, known) if skipped else "nothing"
                out.append(f"\n- *Skip:* {skip}." + (f" {slot.curious}" if slot.curious else ""))
            else:
                out.append("" if not slot.curious else f"\n- {slot.curious}")
            for question, answer in slot.questions:
                out.append(f"- *Ask:* {question} *Answer:* {answer}")
    days = " + ".join(f"{sum(s.minutes for s in day)} min" for day in agenda.days)
    out.append(f"\n*Adds up:* {days} of slots fill {'each day' if len(agenda.days) > 1 else 'the window'}. "
               f"What the class runs, by the recorded run times: {say_seconds(run_all)} of *Run All* and "
               f"{say_seconds(live_total)} of live sections again.")
    out += ["", "| Lesson | In class | Its study time (its own estimate) | Left for homework |", "|---|---|---|---|"]
    for key in sorted(in_class):
        study = study_minutes(key)
        out.append(f"| {key} | {in_class[key]} min | {study} min | {max(study - in_class[key], 0)} min |")
    absent = [f"{key} ({study_minutes(key)} min)" for key in sorted(lessons) if key not in in_class]
    if absent:
        out.append(f"\nNot in class (study time): {', '.join(absent)}.")
    if agenda.homework:
        out.append(f"\n{agenda.homework}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# The slots. Takeaways and questions belong to what a slot covers, so slots that cover the same ground share
# them (the constants below); the minutes and sections are the plan of each agenda.
# ---------------------------------------------------------------------------------------------------------

BREAK = Slot(15, "Break", is_break=True)
LUNCH = Slot(60, "Lunch", is_break=True)

Q01 = (
    ("Why does a model built on the meta device have a parameter count but no memory use?",
     "The meta device records each tensor's shape and dtype and allocates nothing; the count comes from the "
     "shapes, so the full architecture can be inspected for free (section 2)."),
    ("Where do more than a quarter of Qwen2.5-0.5B's parameters sit, and why?",
     "In the embedding table: 151,936 tokens × 896 dimensions. A small model with a large vocabulary spends much "
     "of its budget there, and tying the LM head to it saves as much again."),
    ("Our forward pass equals the library's to within 1e-4, not exactly. Is that a bug?",
     "No: the same operations in a different order (or fused) round differently in floating point; exact token "
     "agreement and a small tolerance on logits is the right test."),
)
Q01_LOOK = (
    ("Half of SmolLM2's heads put most of their weight on the first token. Is that attention 'to' the first word?",
     "Mostly not: the first position acts as a sink where a head parks weight it does not need elsewhere (softmax "
     "must sum to 1); the map shows where weight goes, not what the model 'means'."),
    ("What does the logit lens assume, and why does ' Paris' appear only at the last layer?",
     "It applies the final norm and LM head to an intermediate residual stream, as if it were the last one; "
     "early layers are not trained to be read that way, so the answer becomes legible late."),
)
Q02 = (
    ("Temperature 0 is greedy. What does temperature 2 do to the distribution, and to the text?",
     "Dividing logits by T > 1 flattens the softmax: rare tokens gain probability, so the text becomes more "
     "varied and, past a point, incoherent (section 2's draws)."),
    ("Why does top-p always keep at least one token?",
     "It keeps the smallest set whose probability reaches p, and that set is never empty: the most likely token "
     "is kept even when it alone exceeds p."),
    ("A call of `model.generate()` with no arguments gave two different answers. Why?",
     "The checkpoint's generation config switches sampling on (with top_k=50 by default); say do_sample and "
     "the processors explicitly (section 6)."),
)
Q03 = (
    ("What exactly does the cache hold after a prefill of P tokens and n decode steps?",
     "Per layer, K and V of shape [batch, kv_heads, P + n, head_dim]: one row per position, written once and "
     "never recomputed."),
    ("Why is cached generation token-identical to uncached, and not merely close?",
     "A causal model's keys and values at a position depend only on the tokens up to it, so the stored rows "
     "are the ones an uncached pass would recompute; the decode step does the same arithmetic on them."),
    ("GQA shares one key/value head among several query heads. What does that buy?",
     "A cache as many times smaller as there are query heads per key/value head (7× for Qwen2.5-0.5B, 14 query "
     "heads on 2 key/value heads), with almost no change to the compute."),
)
Q04 = (
    ("babyGPT's window slides once it is full. Why does the cache stop saving work there?",
     "Its positions are learned and absolute: after a slide every kept token sits at a new position, so every "
     "key and value changes and the whole window is recomputed each step."),
    ("Why did the original sampler's bug stay invisible with one-character prompts?",
     "The prefill computed the layers for the last position only, so from layer 2 on the earlier positions' "
     "keys and values were wrong; a one-character prompt has no earlier position."),
)
Q05 = (
    ("After k Jacobi passes, how many tokens of the block are guaranteed to equal greedy's?",
     "k: each pass makes at least one more position's input correct; any beyond that are right only by luck."),
    ("Fewer forward passes but more wall-clock time: how can both be true?",
     "A pass over a block of k tokens costs more than a one-token pass; on an ordinary model Jacobi verifies "
     "about one token per pass, so it pays the bigger pass without saving passes (section 4)."),
)
Q06 = (
    ("Why normalize every part into the same frame before sampling points?",
     "So that the model sees shape, not size or placement, and the numbers in its programs live on one fixed "
     "grid (the unit frame × 100)."),
    ("Why farthest-point sampling rather than 256 random points?",
     "It spreads the points evenly: its coverage radius is about half a random subset's, so thin features are "
     "not missed."),
    ("Chamfer distance has a floor above 0 even for a perfect reconstruction. Why?",
     "Both solids are represented by finite samples of their surfaces; two samplings of the same surface are "
     "still some distance apart, and the floor shrinks as the number of samples grows."),
)
Q07 = (
    ("Where do the 256 points enter the language model?",
     "As embeddings written into the first 256 prompt positions on the prefill (the −1 mask marks them); "
     "with the KV cache, the point encoder runs once per program."),
    ("Why run the generated code in a sandbox, never in the notebook?",
     "It is model output: it can loop, exhaust memory or call anything. A separate process with a time limit, "
     "a memory cap and an allow-list of names keeps the kernel and the learner's work safe."),
    ("The mini model loses to the bounding-box baseline on average. Then why is best of 8 worth it?",
     "Picking the program closest to the input cloud among 8 samples, then fitting its numbers, nearly matches "
     "the nearest-training-program baseline: test-time compute buys what the small model lacks (section 10)."),
)
Q08 = (
    ("How does one model read a point cloud, four pictures or a sentence?",
     "All three become rows of one chat batch: points go into 256 placeholder positions, pictures through the "
     "vision tower onto video tokens, text as text; the same language model writes the program."),
    ("Why could the mini CAD-Recode's language model drop into Qwen2-VL's place unchanged?",
     "With text only, mrope gives a token the same index on all three axes, which is ordinary 1-D RoPE."),
    ("The RL stage rewards 10·IoU and −10 for an invalid program. What does Dr.CPPO train on?",
     "Each sample's advantage is its reward minus its group's mean, and only the samples furthest from the mean "
     "are trained on."),
)
Q09 = (
    ("Why must the label boundary come from the tokenizer's offset mapping, not from tokenizing the prefix?",
     "Tokens merge across the boundary: tokenizing the prefix alone ends differently from the full text, so the "
     "count was late on every example measured and hid the 'another operation, or close' token."),
    ("Where did the NaN losses come from?",
     "Micro-batches whose completion was cut away by the length limit: 0 labelled tokens, so the loss was 0/0."),
    ("LoRA starts with B = 0. Why?",
     "So the adapted model equals the base model at step 0; training moves only the small matrices A and B."),
)
Q10 = (
    ("How does a grammar become a mask over 49,152 tokens without checking each one?",
     "The automaton's state and a trie of the vocabulary are walked together; a branch whose characters the "
     "automaton refuses is cut whole, so only the live part of the trie is visited."),
    ("Is constrained decoding the same as sampling from the model conditioned on a valid program?",
     "No: renormalizing step by step cannot look ahead; the toy two-step model shows a valid but unlikely "
     "program gaining probability (section 9)."),
    ("The bounding-box grammar holds every true program, yet it lowers IoU. Why?",
     "A mask cannot round a number: when the model wants a size a little beyond the box, the refused digit "
     "turns it into a shorter or another number (section 10)."),
)

SETUP_TAKEAWAY = ("The course takes a real model apart, writes its generation by hand, and ends with a model that "
                  "reads a part and writes its CAD program.")
SETUP_QUESTIONS = (
    ("What does 'proven equal' mean in this course?",
     "Every hand-written piece is checked against the library's own result, with an assert in the notebook and a "
     "unit test; a learner's version of it must pass the same check."),
    ("Why CPU and a 135M-parameter model?",
     "Every step then runs on a laptop in seconds, and the architecture is the same as the large models'; the "
     "real Qwen2.5, CAD-Recode and Cadrille checkpoints load when a learner has them."),
)
RECAP_QUESTIONS = (
    ("Which step of generation did the cache change, and which did it leave alone?",
     "It removed the recomputation of earlier positions from each decode step; the logits, the processors and "
     "the chosen tokens are unchanged."),
    ("Where in CAD-Recode are the ideas of the morning?",
     "The same decoder, the same loop and the same cache; only the first 256 prompt positions are points "
     "instead of words."),
)

NINETY = Agenda(
    title="90 minutes: what an inference step really is",
    days=((
        Slot(10, "Setup: `make lab`, open notebook 01", takeaway=SETUP_TAKEAWAY, questions=SETUP_QUESTIONS,
             curious="Check the laptops the day before (the morning checklist below), so this slot is only "
                     "opening JupyterLab."),
        Slot(20, "01 Inside a decoder", "01", live=("3",), shown=("1", "2", "5", "6"),
             curious="Section 4 (RoPE, RMSNorm) and the four exercises are homework; section 7 is what 03 "
                     "explains.",
             takeaway="A forward pass is a handful of tensor operations, and ours gives the library's logits.",
             questions=Q01[1:] + Q01_LOOK[:1]),
        Slot(20, "02 The sampling loop", "02", live=("1", "2"), shown=("3", "5", "6"),
             exercises=("my_greedy",),
             curious="The processors' exercises (section 3) and the repetition penalty (section 7) are homework.",
             takeaway="Generation is a loop of logits, processors and a choice; temperature and top-p only "
                      "reshape the distribution it draws from.",
             questions=Q02),
        Slot(20, "03 The KV cache", "03", live=("1", "3", "5"), shown=("4",),
             curious="Section 2 writes the cache by hand (the exercises); 6–7 profile a decode step.",
             takeaway="The cache stores every earlier position's keys and values, so a decode step computes only "
                      "the new token's, with the same tokens as before.",
             questions=Q03[:2]),
        Slot(15, "07 CAD-Recode end to end", "07", live=("7", "8"), shown=("1", "2", "3", "4", "9", "11"),
             curious="Say before section 8 that the demo part is the median held-out shape: a typical result, "
                     "not the best; section 11 shows the whole distribution, failures included.",
             takeaway="CAD-Recode is the same decoder and loop, with the first 256 prompt positions given to "
                      "points instead of words.",
             questions=Q07[:2]),
        Slot(5, "Recap and homework", takeaway="Every step of inference was written out and checked against the "
             "library; the rest of the course builds on those pieces.", questions=RECAP_QUESTIONS),
    ),),
    homework="Homework: notebooks 04 and 05, and every exercise of 01–03 and 07 (the exercise table below).",
)

# Slots the one-day and two-day agendas share.
DAY_SETUP = Slot(20, "Setup check and the course's map", takeaway=SETUP_TAKEAWAY, questions=SETUP_QUESTIONS)
SAMPLING_HOUR = Slot(
    60, "02 The sampling loop", "02", live=("1", "2", "3", "5"), shown=("6", "7"), exercises=("my_top_k", "my_top_p"),
    curious="Sections 8 (a chat) and 9 (the explorer) are for those who finish early.",
    takeaway="Generation is a loop of logits, processors and a choice; ours equals `model.generate`.",
    questions=Q02)
POINT_CLOUDS = Slot(
    45, "06 Point clouds", "06", live=("CadQuery", "2", "3", "5"), shown=("1", "4"),
    exercises=("my_normalize_points", "my_chamfer"),
    curious="The appendix (the mini model's training data) is reading for 07.",
    takeaway="A part becomes 256 evenly spread points in one frame, and two solids are compared by Chamfer distance "
             "and IoU.",
    questions=Q06)
CAD_RECODE = Slot(
    75, "07 CAD-Recode end to end", "07", live=("2", "3", "4", "5", "7", "8", "9"), shown=("1", "10", "11", "12"),
    exercises=("my_embed_prompt", "my_box_iou"),
    curious="Say before section 8 that the demo part is the median held-out shape; section 11 shows the "
            "distribution, failures included. Sections 13–14 are homework.",
    takeaway="Points in, code out: the same decoder and loop, and its result judged against two baselines with no "
             "model.",
    questions=Q07)

ONE_DAY = Agenda(
    title="One day: from a decoder to CAD-Recode",
    start=9 * 60, window=8 * 60,
    days=((
        DAY_SETUP,
        Slot(70, "01 Inside a decoder", "01", live=("1", "2", "3", "5"), shown=("4", "6", "7"),
             exercises=("count_parameters", "my_repeat_kv"),
             curious="RoPE's and RMSNorm's exercises (section 4) are homework.",
             takeaway="A forward pass is a handful of tensor operations, and ours gives the library's logits.",
             questions=Q01[:2] + Q01_LOOK[:1]),
        BREAK,
        SAMPLING_HOUR,
        Slot(45, "03 The KV cache", "03", live=("1", "2", "3", "5"), shown=("4",),
             exercises=("my_append_kv", "my_decode_attention"),
             curious="Sections 6–7 (where a decode step's time goes) are optional reading.",
             takeaway="The cache makes a decode step compute only the new token, with the same tokens as before.",
             questions=Q03),
        LUNCH,
        POINT_CLOUDS,
        CAD_RECODE,
        BREAK,
        Slot(45, "10 Constrained decoding", "10", live=("1", "2", "4", "6", "7"), shown=("9", "10"),
             exercises=("my_allowed",),
             curious="Sections 3 and 5 (the automaton, the library), 8 (the cost) and 11 (the pipeline, an "
                     "explorer, the third exercise) are homework.",
             takeaway="A grammar becomes a mask on the logits, one step at a time: it removes programs that "
                      "cannot parse, and it distorts.",
             questions=Q10),
        Slot(30, "Recap, questions, homework",
             takeaway="Every step of inference was written out and checked; CAD-Recode is that machinery "
                      "with a point encoder in front.",
             questions=RECAP_QUESTIONS),
    ),),
    homework="Homework: notebooks 04, 05, 08 and 09, and the exercises the day left out.",
)

TWO_DAYS = Agenda(
    title="Two days: language models, then CAD",
    start=9 * 60, window=8 * 60,
    days=((
        DAY_SETUP,
        Slot(70, "01 Inside a decoder", "01", live=("1", "2", "3", "4", "5"), shown=("6", "7"),
             exercises=("count_parameters", "my_repeat_kv", "my_rms_norm"),
             takeaway="A forward pass is a handful of tensor operations, and ours gives the library's logits.",
             questions=Q01[:2] + Q01_LOOK[1:]),
        BREAK,
        SAMPLING_HOUR,
        Slot(45, "03 The KV cache (1): what it holds", "03", live=("1", "2", "3"),
             exercises=("my_append_kv", "my_decode_attention"),
             takeaway="The cache stores every earlier position's keys and values; using them is exact.",
             questions=Q03[:2]),
        LUNCH,
        Slot(30, "03 The KV cache (2): what it costs and buys", "03", live=("4", "5"), shown=("6", "7"),
             exercises=("my_kv_cache_bytes",),
             takeaway="The cache costs memory in proportion to layers × kv heads × tokens, and buys decode steps "
                      "whose time barely grows with the context.",
             questions=Q03[2:] + (
                 ("Without the cache, why does a step's time grow with the context?",
                  "Each step recomputes every earlier position through every layer; with the cache only the "
                  "new position is computed, against stored keys and values."),)),
        Slot(60, "04 babyGPT", "04", live=("1", "2", "3", "4"), shown=("5", "6"),
             exercises=("cached_step",),
             curious="Training (section 7) and the interactive loop (8) are homework.",
             takeaway="A whole GPT fits in one short module; its cache is exact, and a sliding window of learned "
                      "positions takes the saving away.",
             questions=Q04),
        BREAK,
        Slot(75, "05 Parallel decoding", "05", live=("1", "2", "3", "4"), shown=("5", "6"),
             exercises=("jacobi_step", "verified_prefix"),
             takeaway="Jacobi decoding equals greedy only when it commits the verified prefix, and fewer passes "
                      "are less time only when many tokens per pass are verified.",
             questions=Q05),
        Slot(30, "Recap of day 1",
             takeaway="Inference is a forward pass, a loop and a cache, each written by hand and checked.",
             questions=RECAP_QUESTIONS[:1] + Q05[1:]),
    ), (
        Slot(10, "Day 2: the map from words to parts", takeaway="Day 2 swaps the prompt's first words for a "
             "part's points and reads the model's text as a program.", questions=SETUP_QUESTIONS),
        dataclasses.replace(POINT_CLOUDS, minutes=60, exercises=("my_part",) + POINT_CLOUDS.exercises),
        BREAK,
        dataclasses.replace(CAD_RECODE, live=CAD_RECODE.live + ("10",), shown=("1", "11", "12")),
        Slot(50, "08 Cadrille", "08", live=("3", "5", "9"), shown=("1–2", "6", "10", "11"),
             exercises=("my_insert_points",),
             curious="The batch, generation and proofs (sections 4, 7, 8) and rendering (12) are homework.",
             takeaway="One Qwen2-VL reads points, pictures or text, because each becomes rows of the same chat "
                      "batch.",
             questions=Q08),
        LUNCH,
        Slot(75, "09 CAD autocomplete with LoRA", "09", live=("1", "2", "3", "4", "5", "6"),
             shown=("8", "9", "10"), exercises=("my_boundary", "my_window_loss"),
             curious="Memory (section 7) and the multimodal variant (11) are homework.",
             takeaway="Fine-tuning is teacher forcing with masked labels; the boundary and the loss's "
                      "normalisation decide whether it trains at all.",
             questions=Q09),
        BREAK,
        Slot(75, "10 Constrained decoding", "10", live=("1", "2", "3", "4", "6", "7", "9"), shown=("5", "8", "10"),
             exercises=("my_allowed", "my_masked"),
             curious="Section 11 (the command line, an explorer, the third exercise) is homework.",
             takeaway="A grammar becomes a mask on the logits, one step at a time: it removes programs that "
                      "cannot parse, and it distorts.",
             questions=Q10),
        Slot(45, "Recap of the course, the explorers, what to try next",
             takeaway="Every piece of inference, from a forward pass to a grammar's mask, was written by hand and "
                      "checked against the library.",
             questions=(("What would make the mini CAD-Recode better, by what the course measured?",
                         "More data and parameters (from-scratch models reach about half to three quarters IoU, "
                         "pretrained code models 87–92 %), and test-time compute: best of k with fitted numbers."),
                        ("What did the grammar not fix in the autocomplete?",
                         "Its failures are texts cut at the token budget, not wrong characters; a budget-aware "
                         "stop would help, a grammar cannot."))),
    )),
    homework="Homework: the exercises each slot left out (the exercise table below).",
)

AGENDAS = {"90-min": NINETY, "one-day": ONE_DAY, "two-days": TWO_DAYS}
