"""Every number a learner reads in a lesson's prose comes from a run they can see.

A number in a markdown cell with three or more significant digits (0.263, 172, 1,152, 18.4; not
0.07, 46 or 1,000) must appear in one of the notebook's stored outputs, rounded to the digits the
prose gives (0.2634 in an output allows 0.263 in the prose; 0.463 allows 46.3 %), or in a code
cell's source (a setting such as ``n_points=256``), or be a literature figure: a sentence that
carries its source as a markdown link. Not checked: inline code, fenced code, link targets, HTML
comments (the run-time markers of tools/run_times.py and the text between them, which that tool
writes), and numbers glued to letters (``Qwen2.5``, ``0.5B``, ``fp16``).

    python tests/test_notebook_numbers.py notebooks/03_kv_cache.ipynb   # list the offenders
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every lesson.
CHECKED = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

TIMED = re.compile(r"<!--time:[^>]*-->.*?<!--/time-->", re.S)
FENCED = re.compile(r"```.*?```", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
URL = re.compile(r"https?://\S+")
CITED = re.compile(r"\]\(https?://|\bet al\.")
# A number: optional thousands separators (comma, thin or narrow no-break space), optional decimals,
# not glued to a letter, a digit or an underscore on either side.
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:[,\u2009\u202f]\d{3})+|\d+)(\.\d+)?(?![\w]|\.\d)")
SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z*(])|\n\s*\n|\n\s*[-*|]|\n#")


def significant_digits(text: str) -> int:
    digits = re.sub(r"\D", "", text).lstrip("0")
    if "." not in text:
        digits = digits.rstrip("0")
    return len(digits)


def prose_numbers(markdown: str):
    """(number as written, its sentence) for each checked number of one markdown cell."""
    text = TIMED.sub(" ", markdown)
    text = FENCED.sub(" ", text)
    text = COMMENT.sub(" ", text)
    for sentence in SENTENCE_END.split(text):
        if CITED.search(sentence):
            continue
        plain = INLINE_CODE.sub(" ", sentence)
        plain = LINK_TARGET.sub("]", plain)
        plain = URL.sub(" ", plain)
        for match in NUMBER.finditer(plain):
            written = match.group(0)
            if significant_digits(written) >= 3:
                yield written, " ".join(sentence.split())


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(re.sub(r"[,\u2009\u202f_]", "", text))
    except InvalidOperation:
        return None


def output_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if "text" in output:
                parts.append(output["text"])
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") or mime in ("application/json",):
                    parts.append(value if isinstance(value, str) else str(value))
    return "\n".join(parts)


OUTPUT_NUMBER = re.compile(r"\d[\d,\u2009\u202f_]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def output_numbers(text: str) -> set[Decimal]:
    found = set()
    for match in OUTPUT_NUMBER.finditer(text):
        value = _decimal(match.group(0).rstrip(","))
        if value is not None:
            found.add(value)
    return found


def matches(written: str, seen: set[Decimal]) -> bool:
    value = _decimal(written)
    if value is None:
        return True
    places = -value.as_tuple().exponent if "." in written else 0
    quantum = Decimal(1).scaleb(-places)
    for candidate in seen:
        for scaled in (candidate, candidate * 100):
            try:
                if scaled.quantize(quantum) == value:
                    return True
            except InvalidOperation:
                continue
    return False


def unsourced_numbers(path: Path) -> list[str]:
    """Each markdown number of ``path`` that no output, code cell or cited source accounts for."""
    notebook = nbformat.read(path, as_version=4)
    seen = output_numbers(output_text(notebook))
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    seen |= output_numbers(code)
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        for written, sentence in prose_numbers(cell.source):
            if not matches(written, seen):
                problems.append(f"cell {index}: {written!r} in: {sentence[:160]}")
    return problems


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.stem)
def test_every_number_in_the_prose_comes_from_a_visible_run(path):
    problems = unsourced_numbers(path)
    assert not problems, (
        f"{path.name}: numbers in the prose that no output, code cell or linked source accounts for "
        "(write them from the cell that computes them, or cite the source):\n" + "\n".join(problems))


def test_the_rule_itself():
    seen = output_numbers("mean IoU 0.2634 | 1,152 MB | 0.463 | 18.4 tok/s | 2.5e-05")
    assert matches("0.263", seen) and matches("1,152", seen) and matches("46.3", seen)
    assert matches("18.4", seen) and not matches("0.264", seen) and not matches("1,208", seen)
    found = [n for n, _ in prose_numbers(
        "Qwen2.5-0.5B has 494,032,768 parameters and `n_embd=384`; IoU 0.079, 46 %, 1,000 steps. "
        "CAD-Recode scores 87.1 ([paper](https://arxiv.org/abs/2412.14042), Table 1). "
        "It took <!--time:01-->3.5 min<!--/time--> and 18.4 s.")]
    assert found == ["494,032,768", "18.4"]


def main(argv: list[str]) -> int:
    failed = 0
    for name in argv or [str(p) for p in CHECKED]:
        problems = unsourced_numbers(Path(name))
        failed += bool(problems)
        print(f"{name}: {len(problems)} unsourced number(s)")
        for problem in problems:
            print("  " + problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
