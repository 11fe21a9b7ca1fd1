"""Grammar-constrained decoding (notebook 10): the grammar of the part language, the automaton by hand, the
mask by hand proven equal to llguidance's, the logits processor inside ``generate``, the sequence grammar of
the autocomplete, ``cadlab reconstruct --grammar`` and the outcome categories of ``cadlab eval-grammar``.
"""

import random

import numpy as np
import pytest
import regex
import torch
import trimesh

from cadlab.cad import deepcad
from cadlab.cad import reconstruct_cli
from cadlab.cad.autocomplete import PROMPT
from cadlab.cad.cadrecode import load_cadrecode, prepare_inputs
from cadlab.cad.program_grammar import box_grammar, library_grammar, program_grammar
from cadlab.cad.sequence_grammar import sequence_lark
from cadlab.cad.synth import generate_part, validate
from cadlab.lm.grammar import (DEAD, Alt, Automaton, Chars, ConstrainedLogits, HandGrammar, Repeat, Seq, Text, TokenTrie,
                               integers, one_of, to_regex)
from cadlab.lm.guidance import LibraryGrammar


@pytest.fixture(scope="module")
def mini():
    return load_cadrecode()


@pytest.fixture(scope="module")
def syntax_grammars(mini):
    _, tokenizer = mini
    grammar = program_grammar("syntax")
    return (HandGrammar(grammar, tokenizer), HandGrammar(grammar, tokenizer, fast_forward=True),
            LibraryGrammar(tokenizer, regex=to_regex(grammar)))


# ---------------------------------------------------------------------------------------------
# The grammar and its automaton
# ---------------------------------------------------------------------------------------------
def test_integers_are_exactly_the_range_as_python_writes_it():
    automaton = Automaton(integers(-100, 100))
    for n in range(-300, 301):
        assert automaton.matches(str(n)) == (-100 <= n <= 100), n
    for text in ("-0", "007", "+5", "", "1 ", "--1"):
        assert not automaton.matches(text), text


def test_one_of_merges_shared_beginnings_and_equal_rests():
    assert one_of(["10", "12", "2"]) == Alt(Seq("1", Chars("02")), "2")
    assert one_of(["a1", "b1"]) == Seq(Chars("ab"), "1")
    assert Automaton(one_of(["", "x"])).matches("") and Automaton(one_of(["", "x"])).matches("x")


def test_the_building_blocks_mean_what_they_say():
    automaton = Automaton(Seq("(", Repeat(Chars("ab"), 1, 3), Alt(")", "]")))
    assert [automaton.matches(t) for t in ("(a)", "(abb]", "()", "(abab)", "(c)", "(a")] == [
        True, True, False, False, False, False]
    assert Automaton(Repeat("ab")).matches("") and Automaton(Repeat("ab")).matches("ababab")
    assert not Automaton(Repeat("ab")).matches("aba")


def test_every_generated_program_is_a_sentence_and_the_regex_says_the_same():
    syntax, grid = Automaton(program_grammar("syntax")), Automaton(program_grammar("grid"))
    pattern = regex.compile(to_regex(program_grammar("grid")))
    for seed in range(400):
        family, code = generate_part(seed)
        assert syntax.matches(code) and grid.matches(code), (seed, family)
        assert pattern.fullmatch(code), seed


def test_what_the_grammar_refuses():
    syntax, grid = Automaton(program_grammar("syntax")), Automaton(program_grammar("grid"))
    code = generate_part(1)[1]                             # a plate
    broken = [code.replace("extrude(36)", "extrude(36"), code.replace(",mode='s'", ",mode='x'"),
              code.replace("import cadquery as cq\n", ""), code + "print(r)\n",
              code.replace("(-86,-14)", "(-86,)")]
    for text in broken:
        assert not syntax.matches(text), text
    out_of_grid = code.replace("extrude(36)", "extrude(360)")
    assert syntax.matches(out_of_grid) and not grid.matches(out_of_grid)
    state = syntax.walk(syntax.start, "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-")
    assert state != DEAD and syntax.choices(state) == set("0123456789")
    assert syntax.walk(syntax.start, "import numpy") == DEAD


def test_forced_text_is_what_the_grammar_writes_with_no_choice():
    automaton = Automaton(program_grammar("syntax"))
    assert automaton.forced_text(automaton.start) == "import cadquery as cq\n"
    state = automaton.walk(automaton.start, "import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,-9,0")
    assert automaton.forced_text(state) == "))\nr=w0."


def test_the_box_grammar_holds_every_true_program_and_refuses_a_number_outside_the_box():
    from cadlab.train.cadrecode import held_out_set

    test = held_out_set(progress=False)
    for code, cloud in list(zip(test["codes"], test["points"]))[:12]:
        assert Automaton(box_grammar(cloud)).matches(code)
    # a flat plate: 36 units high, so an extrude of 100 leaves its box
    code = generate_part(1)[1]
    mesh, reason = validate(code)
    assert reason is None
    box = Automaton(box_grammar(trimesh.sample.sample_surface(mesh, 4000, seed=0)[0] / 100.0))
    assert box.matches(code) and not box.matches(code.replace("extrude(36)", "extrude(100)"))


# ---------------------------------------------------------------------------------------------
# The mask by hand, and llguidance's
# ---------------------------------------------------------------------------------------------
def test_the_trie_walk_equals_checking_every_token(syntax_grammars):
    hand, _, _ = syntax_grammars
    automaton, texts = hand.automaton, hand.texts
    code = generate_part(8)[1]
    for cut in range(0, len(code), 7):
        state = automaton.walk(automaton.start, code[:cut])
        brute = sorted(i for i, t in texts.items() if t and automaton.walk(state, t) != DEAD)
        assert sorted(hand.trie.allowed(automaton, state)[0]) == brute


def test_the_trie_finds_a_node_and_walks_below_it():
    trie = TokenTrie({1: "a", 2: "ab", 3: "abc", 4: "b"})
    assert trie.node("zz") is None and trie.ids[trie.node("ab")] == [2]
    automaton = Automaton(Seq("a", Repeat("bc")))
    assert sorted(trie.allowed(automaton, automaton.start)[0]) == [1, 2, 3]
    assert trie.allowed(automaton, automaton.walk(automaton.start, "a"), trie.node("a"))[0] == [2, 3]


def _walks(grammar, tokenizer, n_walks: int, rng: random.Random):
    """Token sequences drawn uniformly from the hand mask: valid prefixes, tokenized in any way."""
    for _ in range(n_walks):
        matcher, ids = grammar.matcher(), []
        for _ in range(rng.randrange(5, 80)):
            allowed = [i for i in matcher.allowed_ids() if i != tokenizer.eos_token_id]
            if not allowed:
                break
            ids.append(rng.choice(allowed))
            matcher.advance(ids[-1])
        yield ids


def test_the_hand_mask_equals_llguidance_on_program_prefixes_and_random_walks(mini, syntax_grammars):
    _, tokenizer = mini
    _, hand, library = syntax_grammars
    sequences = [tokenizer(generate_part(10_000_000 + s)[1])["input_ids"] + [tokenizer.eos_token_id]
                 for s in range(30)]
    sequences += list(_walks(hand, tokenizer, 30, random.Random(0)))
    steps = 0
    for ids in sequences:
        h, lib = hand.matcher(), library.matcher()
        for token in ids:
            assert torch.equal(h.mask(), lib.mask()), tokenizer.decode(ids[:steps])
            h.advance(token)
            lib.advance(token)
            steps += 1
    assert steps > 1500


def test_without_fast_forward_the_hand_mask_differs_only_where_text_is_forced(mini, syntax_grammars):
    _, tokenizer = mini
    plain, _, library = syntax_grammars
    differed = 0
    for s in range(10):
        h, lib = plain.matcher(), library.matcher()
        for token in tokenizer(generate_part(10_000_000 + s)[1])["input_ids"]:
            ours, theirs = h.mask(), lib.mask()
            if not torch.equal(ours, theirs):
                differed += 1
                assert bool((theirs <= ours).all()) and plain.automaton.forced_text(h.state)
            h.advance(token)
            lib.advance(token)
    assert differed > 0


def test_the_grid_and_box_masks_equal_llguidance_too(mini):
    from cadlab.train.cadrecode import held_out_set

    _, tokenizer = mini
    cloud = held_out_set(progress=False)["points"][3]
    for grammar in (program_grammar("grid"), box_grammar(cloud)):
        hand = HandGrammar(grammar, tokenizer, fast_forward=True)
        library = LibraryGrammar(tokenizer, regex=to_regex(grammar))
        for ids in _walks(hand, tokenizer, 10, random.Random(1)):
            h, lib = hand.matcher(), library.matcher()
            for token in ids:
                assert torch.equal(h.mask(), lib.mask())
                h.advance(token)
                lib.advance(token)


def test_the_end_token_only_after_a_whole_program(mini, syntax_grammars):
    _, tokenizer = mini
    _, hand, _ = syntax_grammars
    matcher = hand.matcher()
    code = generate_part(3)[1]
    ids = tokenizer(code)["input_ids"]
    for token in ids[:-1]:
        matcher.advance(token)
        assert not matcher.mask()[tokenizer.eos_token_id]
    matcher.advance(ids[-1])
    assert matcher.mask()[tokenizer.eos_token_id]
    matcher.advance(tokenizer.eos_token_id)
    assert matcher.finished and not matcher.is_dead
    wrong = hand.matcher()
    wrong.advance(tokenizer.eos_token_id)
    assert wrong.is_dead


# ---------------------------------------------------------------------------------------------
# Inside generate
# ---------------------------------------------------------------------------------------------
def test_generate_under_the_grammar_writes_sentences_greedy_and_sampled(mini):
    from cadlab.cad.reconstruct import generate_codes
    from cadlab.train.cadrecode import held_out_set

    model, tokenizer = mini
    test = held_out_set(progress=False)
    language = Automaton(program_grammar("syntax"))
    clouds = np.stack(test["points"][:2])
    for grammar in ("syntax", "box"):
        codes = generate_codes(model, tokenizer, clouds, samples=3, seed=0, temperature=2.0, grammar=grammar)
        assert len(codes) == 6 and all(language.matches(code) for code in codes), codes
    box = Automaton(box_grammar(test["points"][1]))
    codes = generate_codes(model, tokenizer, test["points"][1], samples=4, temperature=2.0, grammar="box")
    assert all(box.matches(code) for code in codes)


def test_the_processor_masks_each_row_and_leaves_finished_rows_alone(mini, syntax_grammars):
    model, tokenizer = mini
    _, hand, _ = syntax_grammars
    processor = ConstrainedLogits(lambda row: hand.matcher())
    scores = torch.zeros(2, len(tokenizer))
    out = processor(torch.zeros(2, 3, dtype=torch.long), scores)
    allowed = hand.matcher().mask()
    assert torch.isinf(out[:, ~allowed]).all() and not torch.isinf(out[:, allowed]).any()
    assert not torch.isinf(scores).any()                  # the caller's scores are not written into
    processor.matchers[1].finished = True
    out = processor(torch.ones(2, 4, dtype=torch.long), scores)
    assert not torch.isinf(out[1]).any() and processor.steps == 2 and processor.mask_seconds > 0


def test_library_grammar_levels_and_errors(mini):
    _, tokenizer = mini
    assert library_grammar("syntax", tokenizer) is library_grammar("syntax", tokenizer)    # compiled once
    with pytest.raises(ValueError, match="point cloud"):
        library_grammar("box", tokenizer)
    with pytest.raises(ValueError, match="syntax, grid, box"):
        library_grammar("strict", tokenizer)
    with pytest.raises(ValueError, match="exactly one"):
        LibraryGrammar(tokenizer)
    with pytest.raises(ValueError, match="rejected"):
        LibraryGrammar(tokenizer, regex="(unclosed")
    matcher = library_grammar("syntax", tokenizer).matcher()
    with pytest.raises(ValueError, match="outside the grammar"):
        matcher.advance_tokens(tokenizer("import numpy")["input_ids"])
    inputs = prepare_inputs(np.zeros((256, 3), dtype=np.float32), tokenizer)
    assert inputs["input_ids"].shape == (1, 257)


# ---------------------------------------------------------------------------------------------
# The sequence grammar of the autocomplete
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from cadlab.lm.models import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


def test_every_held_out_sequence_text_is_in_the_sequence_grammar(smol_tokenizer):
    grammar = LibraryGrammar(smol_tokenizer, lark=sequence_lark())
    for seed in range(1_000_000, 1_000_040):
        caption, full = deepcad.sample_sequence(seed)
        prompt = PROMPT.format(caption=caption)
        ids = smol_tokenizer(prompt + deepcad.serialize(full))["input_ids"][len(smol_tokenizer(prompt)["input_ids"]):]
        matcher = grammar.matcher(written=ids)
        assert not matcher.is_dead
        assert matcher.mask()[smol_tokenizer.eos_token_id]              # a whole sequence: it may end


def test_the_sequence_grammar_refuses_broken_json(smol_tokenizer):
    grammar = LibraryGrammar(smol_tokenizer, lark=sequence_lark())
    caption, full = deepcad.sample_sequence(1_000_016)
    text = deepcad.serialize(full, 2)
    for broken in (text.replace('"value":48', '"value":"48'), text.replace('"Circle3D"', '"Circle4D"'),
                   text + " ,{\"index\":2,\"type\":\"Sketch\",\"entity\":\"S2\",\"colour\":1"):
        with pytest.raises(ValueError, match="outside the grammar"):
            grammar.matcher(written=smol_tokenizer(broken)["input_ids"])


def test_json_start_finds_the_sequence_on_a_token_boundary(smol_tokenizer):
    from cadlab.train.autocomplete import json_start

    caption, full = deepcad.sample_sequence(1_000_003)
    prompt = PROMPT.format(caption=caption) + deepcad.serialize(full, 1)
    start = json_start(smol_tokenizer, prompt)
    ids = smol_tokenizer(prompt)["input_ids"]
    assert smol_tokenizer.decode(ids[start:]) == deepcad.serialize(full, 1)


# ---------------------------------------------------------------------------------------------
# The command line and the evaluation's categories
# ---------------------------------------------------------------------------------------------
def test_reconstruct_grammar_flag(tmp_path, capsys):
    truth, reason = validate(generate_part(1)[1])
    assert reason is None
    part = tmp_path / "plate.stl"
    truth.export(part)
    status = reconstruct_cli.main([str(part), "-o", str(tmp_path / "out"), "--samples", "2", "--no-fit",
                                   "--grammar", "box"])
    out = capsys.readouterr().out
    assert status in (0, 3) and Automaton(program_grammar("syntax")).matches(out)
    assert reconstruct_cli.main([str(part), "--grammar", "box", "--model", str(tmp_path)]) == 2
    assert "only the mini CAD-Recode" in capsys.readouterr().err
    assert reconstruct_cli.main([str(part), "--grammar", "tight"]) == 2
    assert "invalid choice: 'tight'" in capsys.readouterr().err
    assert reconstruct_cli.main([str(part), "--model", "cadrille", "--mode", "pc", "--grammar", "box"]) == 2


def test_outcome_categories():
    from cadlab.train.grammar_eval import outcome, summarize

    code = generate_part(1)[1]
    truth, _ = validate(code)
    cloud = trimesh.sample.sample_surface(truth, 256, seed=0)[0]
    assert outcome("r = (", truth, cloud)["outcome"] == "no parse"
    assert outcome("import cadquery as cq\nr = 1\n", truth, cloud)["outcome"] == "outside the language"
    assert outcome(code.replace("extrude(36)", "extrude(0)"), truth, cloud)["outcome"] == "no solid"
    valid = outcome(code, truth, cloud)
    assert valid["outcome"] == "valid" and valid["iou"] > 0.99
    rows = [valid, {"outcome": "no parse", "iou": 0.0}]
    assert summarize(rows) == {"n": 2, "valid": 0.5, "no solid": 0.0, "outside the language": 0.0, "no parse": 0.5,
                               "mean_iou": pytest.approx(valid["iou"] / 2)}


# ---------------------------------------------------------------------------------------------
# The exercises' self-checks refuse plausible wrong answers
# ---------------------------------------------------------------------------------------------
def test_exercise_checks_refuse_plausible_wrong_answers():
    from cadlab.exercises import grammar as checks

    assert checks.check_allowed(lambda a, texts, q: [i for i, t in texts.items() if t and a.walk(q, t) != DEAD])
    with pytest.raises(AssertionError, match="whole token"):           # only the first character walked
        checks.check_allowed(lambda a, texts, q: [i for i, t in texts.items() if t and a.step(q, t[0]) != DEAD])
    with pytest.raises(AssertionError, match="prefix of some"):        # only tokens that finish a sentence
        checks.check_allowed(lambda a, texts, q: [i for i, t in texts.items() if t and a.accepts(a.walk(q, t))])
    assert checks.check_integer_grammar(lambda hi: integers(0, hi))
    with pytest.raises(AssertionError, match="leading zeros"):
        checks.check_integer_grammar(lambda hi: Alt(*(Text(f"{n:0{len(str(hi))}d}") for n in range(hi + 1)),
                                                    *(Text(str(n)) for n in range(hi + 1))))
    with pytest.raises(AssertionError, match="accepts"):                # one too many
        checks.check_integer_grammar(lambda hi: integers(0, hi + 1))
    with pytest.raises(AssertionError, match="renormalized"):
        checks.check_masked_distribution(lambda logits, allowed: (torch.softmax(logits, -1) * allowed,
                                                                  float(torch.softmax(logits, -1)[allowed].sum())))
    with pytest.raises(AssertionError, match="forbidden share"):
        checks.check_masked_distribution(lambda logits, allowed: (
            torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1),
            1 - float(torch.softmax(logits, -1)[allowed].sum())))
