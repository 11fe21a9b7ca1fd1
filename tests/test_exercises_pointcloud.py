"""The self-check of 06's CadQuery primer exercise: the right part passes, plausible wrong parts fail with a reason."""

import cadquery as cq
import pytest

from cadlab.exercises.pointcloud import PRIMER_HOLES, check_through_bore, primer_part


def _plate(bore: str | None, radius: int = 15):
    sketch = cq.Workplane("ZX", origin=(0, -30, 0)).sketch().rect(200, 120).push(PRIMER_HOLES).circle(10, mode="s")
    if bore == "cut":
        sketch = sketch.push([(0, 0)]).circle(radius, mode="s")
    elif bore == "added":            # mode='s' forgotten: the circle is added to the rectangle
        sketch = sketch.push([(0, 0)]).circle(radius)
    elif bore == "too small":
        sketch = sketch.push([(0, 0)]).circle(radius - 3, mode="s")
    elif bore == "off centre":
        sketch = sketch.push([(40, 0)]).circle(radius, mode="s")
    return sketch.finalize().extrude(20)


def _boss(radius: int = 15):
    return (cq.Workplane("ZX", origin=(0, -30, 0)).workplane(offset=20).sketch().circle(30).circle(radius, mode="s")
            .finalize().extrude(40))


def test_the_right_part_passes_as_a_workplane_or_a_solid(capsys):
    assert check_through_bore(lambda radius: primer_part(radius, through=True)) is True
    assert check_through_bore(lambda radius: _plate("cut", radius).union(_boss(radius)).val()) is True
    assert "check_through_bore: one solid" in capsys.readouterr().out


def test_a_stub_is_not_attempted(capsys):
    def my_part(radius):
        raise NotImplementedError

    assert check_through_bore(my_part) is False
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("make, words", [
    (lambda r: primer_part(r), "nothing was cut from the plate"),
    (lambda r: _plate("added", r).union(_boss(r)), "mode='s'"),
    (lambda r: _plate("cut", r).add(_boss(r)), "2 separate solids"),
    (lambda r: _plate("too small", r).union(_boss(r)), "lacks 0 it has"),
    (lambda r: _plate("off centre", r).union(_boss(r)), "at (0, 0) of both sketches"),
    (lambda r: _plate("cut", r), "lacks"),
    (lambda r: primer_part(15, through=True), "radius 8: "),    # the radius ignored
], ids=["unchanged", "mode='s' forgotten", "not unioned", "bore too small", "bore off centre", "no boss",
        "radius ignored"])
def test_a_wrong_part_fails_with_a_reason(make, words):
    with pytest.raises(AssertionError) as error:
        check_through_bore(make)
    assert words in str(error.value)
