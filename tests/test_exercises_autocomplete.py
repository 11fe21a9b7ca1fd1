"""The self-checks of notebook 09: the reference passes, a stub is "not attempted", and every plausible
wrong answer fails. The notebook's stored solutions pass in a fresh namespace."""

from pathlib import Path

import nbformat
import pytest
import torch

from cadlab.cad import autocomplete as ac
from cadlab.exercises.autocomplete import check_boundary, check_merged_weight, check_window_loss

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "09_cad_autocomplete.ipynb"


def _stub(*_args):
    raise NotImplementedError


def _first(offsets, cut, test):
    return next((i for i, span in enumerate(offsets) if test(span, cut)), len(offsets))


BOUNDARY_WRONG = {
    "end >= cut (masks one token too few)": lambda o, c: _first(o, c, lambda s, c: s[1] >= c),
    "start >= cut (masks the straddling token)": lambda o, c: _first(o, c, lambda s, c: s[0] >= c),
    "one past the boundary": lambda o, c: _first(o, c, lambda s, c: s[1] > c) + 1,
    "count tokens that start before the cut": lambda o, c: sum(s[0] < c for s in o),
}


def _window(micro_batches, how):
    if how == "mean of means":
        return sum(float(l[m].mean()) for l, m in micro_batches) / len(micro_batches)
    if how == "mean of means, NaN skipped":
        means = [float(l[m].mean()) for l, m in micro_batches if m.any()]
        return sum(means) / len(micro_batches) if means else None
    if how == "mean of means over the non-empty":
        means = [float(l[m].mean()) for l, m in micro_batches if m.any()]
        return sum(means) / len(means) if means else None
    if how == "zero for an empty window":
        total = sum(int(m.sum()) for _, m in micro_batches)
        return 0.0 if total == 0 else sum(float(l[m].sum()) for l, m in micro_batches) / total
    if how == "all tokens, mask ignored":
        return float(torch.cat([l for l, _ in micro_batches]).mean())


WINDOW_WRONG = ["mean of means", "mean of means, NaN skipped", "mean of means over the non-empty",
                "zero for an empty window", "all tokens, mask ignored"]

MERGE_WRONG = {
    "alpha, not alpha / r": lambda w, a, b, alpha, r: w + alpha * (b @ a),
    "r / alpha": lambda w, a, b, alpha, r: w + (r / alpha) * (b @ a),
    "no scale": lambda w, a, b, alpha, r: w + b @ a,
    "in place": lambda w, a, b, alpha, r: w.add_((alpha / r) * (b @ a)),
    "the delta only": lambda w, a, b, alpha, r: (alpha / r) * (b @ a),
}


def test_references_pass():
    assert check_boundary(lambda offsets, cut: ac.token_boundary(offsets, cut)[0]) is True
    reference = lambda mbs: (None if sum(int(m.sum()) for _, m in mbs) == 0 else
                             sum(float(l[m].sum()) for l, m in mbs) / sum(int(m.sum()) for _, m in mbs))
    assert check_window_loss(reference) is True
    assert check_merged_weight(lambda w, a, b, alpha, r: w + (alpha / r) * (b @ a)) is True


@pytest.mark.parametrize("check", [check_boundary, check_window_loss, check_merged_weight])
def test_a_stub_is_not_attempted(check, capsys):
    assert check(_stub) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("name", BOUNDARY_WRONG)
def test_check_boundary_fails_a_wrong_answer(name):
    with pytest.raises(AssertionError):
        check_boundary(BOUNDARY_WRONG[name])


@pytest.mark.parametrize("how", WINDOW_WRONG)
def test_check_window_loss_fails_a_wrong_answer(how):
    with pytest.raises(AssertionError):
        check_window_loss(lambda mbs: _window(mbs, how))


@pytest.mark.parametrize("name", MERGE_WRONG)
def test_check_merged_weight_fails_a_wrong_answer(name):
    with pytest.raises(AssertionError):
        check_merged_weight(MERGE_WRONG[name])


def test_the_notebooks_solutions_pass_in_a_fresh_namespace():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    solutions = [c.metadata["solution"] for c in notebook.cells if "exercise" in c.metadata.get("tags", [])]
    assert len(solutions) == 3
    for source in solutions:
        namespace = {}
        exec(compile(source, "<solution>", "exec"), namespace)
        assert namespace["passed"] is True
