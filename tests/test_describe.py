"""cadlab.cad.describe: Text2CAD-like descriptions of synth parts at four levels, deterministic given a seed."""

import pytest

from cadlab.cad.describe import LEVELS, describe, describe_levels, describe_part, numbers, parse_program, section_letter
from cadlab.cad.synth import FAMILIES, generate_part, program_numbers

SEEDS = range(12)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_is_described_at_every_level(family):
    for seed in SEEDS:
        name, code = generate_part(seed, family)
        texts = describe_levels(code, name, seed=seed)
        assert list(texts) == list(LEVELS)
        assert all(t and t.endswith(".") for t in texts.values())
        assert len(set(texts.values())) == len(LEVELS), texts          # the levels differ
        lengths = [len(texts[level]) for level in LEVELS]
        assert lengths[-1] == max(lengths)                              # expert says the most


@pytest.mark.parametrize("family", list(FAMILIES))
def test_expert_numbers_are_exactly_the_programs_numbers(family):
    """Every number of the program, in its order, and no other: the expert text determines the program."""
    for seed in SEEDS:
        name, code = generate_part(seed, family)
        assert numbers(describe(code, name, "expert", seed)) == program_numbers(code)


def test_lower_levels_hide_positions_and_abstract_has_no_numbers():
    name, code = generate_part(1, "plate")      # four holes near the corners
    texts = describe_levels(code, name, seed=0)
    assert numbers(texts["abstract"]) == []
    assert "(-26,-89)" in texts["expert"] and "(-26,-89)" not in texts["intermediate"]
    assert all(n % 10 == 0 for n in numbers(texts["beginner"]))        # the beginner's sizes are rounded


def test_wordings_are_deterministic_and_vary_with_the_seed():
    name, code = generate_part(5, "counterbore")
    assert describe(code, name, "expert", seed=3) == describe(code, name, "expert", seed=3)
    wordings = {describe(code, name, "expert", seed=s) for s in range(10)}
    assert len(wordings) > 1
    assert {tuple(numbers(w)) for w in wordings} == {tuple(program_numbers(code))}
    assert describe_part(5, "expert", "counterbore", wording=3) == describe(code, name, "expert", seed=3)


def test_names_come_from_the_sketch():
    assert section_letter([(-10, -100), (10, -100), (10, 56), (36, 56), (36, 100), (-36, 100), (-36, 56),
                           (-10, 56)]) == "T"
    assert section_letter([(-50, -50), (50, -50), (50, 50), (40, 50), (40, -40), (-40, -40), (-40, 50),
                           (-50, 50)]) == "U"
    texts = [describe(generate_part(s, "prism")[1], "prism", "abstract") for s in range(20)]
    assert any("hexagonal" in t for t in texts) and any("triangular" in t for t in texts)


def test_parse_program_reads_bodies_and_primitives():
    part = parse_program(generate_part(2, "shaft")[1])
    assert part.plane == "XY" and part.origin == (0, 0, -100)
    assert [(b.offset, b.depth) for b in part.bodies] == [(0, 52), (52, 148)]
    union = parse_program(generate_part(1, "union")[1])
    assert [p.kind for p in union.primitives] == ["box", "cylinder"]
    with pytest.raises(ValueError):
        parse_program("import cadquery as cq\nr=cq.Workplane('XY').sphere(3)\n")
    with pytest.raises(ValueError):
        describe(generate_part(1, "plate")[1], "plate", level="poet")
