"""cadlab.cad.autocomplete: DeepCAD-format data, the converter (through the sandbox), the text, the labels,
the seed's boundary and NaN defects and their fixes, and LoRA by hand against peft."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from cadlab.cad import autocomplete as ac
from cadlab.cad import deepcad
from cadlab.lm import lora
from cadlab.lm.models import tiny_qwen2

N_PARTS = 60          # parts for the tokenizer properties (about 190 examples, all their truncations)


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2-135M-Instruct's fast tokenizer, offline (the model itself is not loaded)."""
    from transformers import AutoTokenizer

    from cadlab.lm.models import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


@pytest.fixture(scope="module")
def samples():
    return ac.examples(N_PARTS)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def test_sample_sequence_is_deepcad_format_and_pure():
    curve_types, operations, extent_types, families = set(), set(), set(), set()
    for seed in range(80):
        caption, full = deepcad.sample_sequence(seed)
        assert (caption, full) == deepcad.sample_sequence(seed)
        assert caption[0].isupper() and caption.endswith(".") and len(caption) > 20
        assert list(full) == ["entities", "properties", "sequence"]
        box = full["properties"]["bounding_box"]
        assert set(box) == {"min_point", "max_point"} and all(box["min_point"][c] < box["max_point"][c] for c in "xyz")
        assert [item["index"] for item in full["sequence"]] == list(range(len(full["sequence"])))
        assert set(full["entities"]) == {item["entity"] for item in full["sequence"]}
        for item in full["sequence"]:
            entity = full["entities"][item["entity"]]
            assert entity["type"] == item["type"] in ("Sketch", "ExtrudeFeature")
            if item["type"] == "Sketch":
                assert set(entity["transform"]) == {"origin", "x_axis", "z_axis"}
                for profile in entity["profiles"].values():
                    assert profile["loops"][0]["is_outer"] is True
                    for lp in profile["loops"]:
                        curve_types |= {c["type"] for c in lp["profile_curves"]}
            else:
                assert all(ref["sketch"] in full["entities"] and ref["profile"] in full["entities"][ref["sketch"]]["profiles"]
                           for ref in entity["profiles"])
                operations.add(entity["operation"])
                extent_types.add(entity["extent_type"])
                assert ("extent_two" in entity) == (entity["extent_type"] == "TwoSidesFeatureExtentType")
    for family in deepcad.FAMILIES:
        caption, full = deepcad.sample_sequence(7, family=family)
        families.add(family)
        assert len(full["sequence"]) >= 2
    assert curve_types == {"Line3D", "Arc3D", "Circle3D"}
    assert operations == {"NewBodyFeatureOperation", "JoinFeatureOperation", "CutFeatureOperation"}
    assert extent_types == {"OneSideFeatureExtentType", "SymmetricFeatureExtentType", "TwoSidesFeatureExtentType"}


def test_captions_use_correct_plurals():
    assert [deepcad._count(n, w) for n, w in ((1, "hole"), (3, "hole"), (1, "cylindrical boss"), (2, "cylindrical boss"))] \
        == ["1 hole", "3 holes", "1 cylindrical boss", "2 cylindrical bosses"]
    captions = [deepcad.sample_sequence(seed, family="bosses")[0] for seed in range(20)]
    assert any("bosses" in c for c in captions) and not any("bosss" in c for c in captions)


def test_truncations_as_the_public_script_writes_them():
    # the script's own docstring: 2 ops -> 1; 3 -> 1, 2; 4 -> 1, 2, 3; 10 -> 1, 3, 5, 7, 9
    assert [deepcad.kept_counts(n) for n in (1, 2, 3, 4, 10)] == [[], [1], [1, 2], [1, 2, 3], [1, 3, 5, 7, 9]]
    caption, full = deepcad.sample_sequence(3)               # a flange: 8 operations
    before = copy.deepcopy(full)
    files = deepcad.truncations(full, stem="00000003")
    assert [name for name, _ in files] == [f"00000003_tr_{i:02d}" for i in range(1, 6)]
    n = len(full["sequence"])
    for (_, doc), kept in zip(files, deepcad.kept_counts(n)):
        assert doc["truncation_metadata"] == {"is_truncated": True, "original_operations": n, "kept_operations": kept,
                                              "truncation_percentage": round(kept / n * 100, 2)}
        assert doc["sequence"] == full["sequence"][:kept]
        assert doc["properties"] == full["properties"]
        # the referenced entities only: the kept items' own, which include each kept extrude's sketch
        assert set(doc["entities"]) == {item["entity"] for item in doc["sequence"]}
    assert full == before
    with pytest.raises(ValueError):
        deepcad.truncate(full, 0)


# --------------------------------------------------------------------------------------------
# The converter, through the sandbox
# --------------------------------------------------------------------------------------------
def _doc(*steps):
    """A sequence from (plane, offset, profiles, extrude kwargs) steps."""
    b = deepcad.SequenceBuilder()
    for plane, offset, profiles, kwargs in steps:
        b.extrude(b.sketch(plane, offset, profiles), **kwargs)
    return b.doc()


def _solid(doc):
    result, reason = deepcad.build_solid(doc, timeout=60)
    assert reason is None and result.ok, (result, deepcad.to_cadquery(doc))
    assert result.mesh.is_watertight
    return result.mesh


SQUARE = deepcad.rect(20, 20)
D_OUT = deepcad.loop([deepcad.line((-10, -10), (10, -10)), deepcad.arc((10, -10), (10, 10), (10, 0), ccw=True),
                 deepcad.line((10, 10), (-10, 10)), deepcad.line((-10, 10), (-10, -10))])
D_IN = deepcad.loop([deepcad.line((-10, -10), (10, -10)), deepcad.arc((10, -10), (10, 10), (10, 0), ccw=False),
                deepcad.line((10, 10), (-10, 10)), deepcad.line((-10, 10), (-10, -10))])


@pytest.mark.parametrize("name, doc, volume, bounds", [
    ("Line3D, NewBody, OneSide", _doc(("XY", 0, [[SQUARE]], dict(extent_one=5))),
     2000, [[-10, -10, 0], [10, 10, 5]]),
    ("Circle3D, Symmetric", _doc(("XY", 0, [[deepcad.loop([deepcad.circle((0, 0), 10)])]], dict(extent_type="Symmetric", extent_one=5))),
     math.pi * 100 * 10, [[-10, -10, -5], [10, 10, 5]]),
    ("Arc3D counter-clockwise (bulges out)", _doc(("XY", 0, [[D_OUT]], dict(extent_one=2))),
     2 * (400 + math.pi * 50), [[-10, -10, 0], [20, 10, 2]]),
    ("Arc3D clockwise (bites in)", _doc(("XY", 0, [[D_IN]], dict(extent_one=2))),
     2 * (400 - math.pi * 50), [[-10, -10, 0], [10, 10, 2]]),
    ("TwoSides on YZ moved 4 along X", _doc(("YZ", 4, [[SQUARE]], dict(extent_type="TwoSides", extent_one=7, extent_two=3))),
     4000, [[1, -10, -10], [11, 10, 10]]),
    ("inner loop = hole, on ZX", _doc(("ZX", 0, [[SQUARE, deepcad.loop([deepcad.circle((0, 0), 5)], False)]], dict(extent_one=4))),
     4 * (400 - math.pi * 25), [[-10, 0, -10], [10, 4, 10]]),
    ("Join + Cut", _doc(("XY", 0, [[SQUARE]], dict(extent_one=5)),
                        ("XY", 5, [[deepcad.loop([deepcad.circle((0, 0), 6)])]], dict(operation="Join", extent_one=5)),
                        ("XY", 0, [[deepcad.loop([deepcad.circle((0, 0), 3)])]], dict(operation="Cut", extent_one=10))),
     2000 + math.pi * 36 * 5 - math.pi * 9 * 10, [[-10, -10, 0], [10, 10, 10]]),
    ("NewBody twice fuses, two profiles", _doc(("XY", 0, [[deepcad.rect(10, 10, -5, 0)], [deepcad.rect(10, 10, 5, 0)]], dict(extent_one=3)),
                                               ("XY", 3, [[SQUARE]], dict(extent_one=1))),
     3 * 200 + 400, [[-10, -10, 0], [10, 10, 4]]),
    ("Intersect", _doc(("XY", 0, [[SQUARE]], dict(extent_one=10)),
                       ("XY", 0, [[deepcad.loop([deepcad.circle((10, 10), 10)])]], dict(operation="Intersect", extent_one=10))),
     10 * math.pi * 100 / 4, [[0, 0, 0], [10, 10, 10]]),
])
def test_converter_every_curve_operation_and_extent(name, doc, volume, bounds):
    mesh = _solid(doc)
    assert mesh.volume == pytest.approx(volume, rel=2e-3), name
    assert np.allclose(mesh.bounds, bounds, atol=0.05), (name, mesh.bounds)


def test_converter_refuses_malformed_sequences_and_sketch_only_prefixes():
    caption, full = deepcad.sample_sequence(0)
    broken = copy.deepcopy(full)
    broken["entities"]["E1"]["profiles"][0]["sketch"] = "S99"
    result, reason = deepcad.build_solid(broken)
    assert result is None and "malformed" in reason
    result, reason = deepcad.build_solid(deepcad.truncate(full, 1))        # a sketch and no extrude: no solid
    assert reason is None and result.kind == "no_r"


@pytest.mark.parametrize("family", list(deepcad.FAMILIES))
def test_every_family_gives_one_watertight_solid_in_its_bounding_box(family):
    caption, full = deepcad.sample_sequence(11, family=family)
    mesh = _solid(full)
    assert mesh.body_count == 1
    box = full["properties"]["bounding_box"]
    expected = [[box["min_point"][c] for c in "xyz"], [box["max_point"][c] for c in "xyz"]]
    assert np.allclose(mesh.bounds, expected, atol=1.01), (caption, mesh.bounds, expected)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def test_serialize_kept_operations_are_a_true_prefix_that_carries_geometry():
    for seed in range(40):
        caption, full = deepcad.sample_sequence(seed)
        text, n = deepcad.serialize(full), len(full["sequence"])
        assert deepcad.parse(text) == full
        assert text == deepcad.serialize(full, n) + deepcad.CLOSE
        for kept in range(1, n):
            prefix = deepcad.serialize(full, kept)
            assert text.startswith(prefix) and text[len(prefix):].startswith(deepcad.SEPARATOR)
            assert deepcad.serialize(deepcad.truncate(full, kept)) == prefix + deepcad.CLOSE
            rest = text[len(prefix):]
            assert "profile_curves" in rest or "extent_one" in rest            # the completion is geometry
            assert json.loads(prefix + rest) is not None
        # the seed's layout (entities first): after the kept references come only references
        seed_full = deepcad.seed_text(full)
        seed_partial = deepcad.seed_text(dict(full, sequence=full["sequence"][:1]))
        cut = next(i for i, (a, b) in enumerate(zip(seed_full, seed_partial)) if a != b)
        assert "profile_curves" not in seed_full[cut:] and "extent_one" not in seed_full[cut:]


def test_labels_start_at_the_boundary_and_decode_to_the_rest(tokenizer, samples):
    assert len(samples) > 150
    for caption, full, kept in samples:
        example = ac.make_example(tokenizer, caption, full, kept)
        ids, labels = example["input_ids"], example["labels"]
        prompt = ac.PROMPT.format(caption=caption)
        text, prefix = prompt + deepcad.serialize(full), prompt + deepcad.serialize(full, kept)
        boundary, straddles = ac.label_boundary(tokenizer, text, len(prefix))
        assert not straddles
        assert labels[:boundary] == [-100] * boundary and labels[boundary:] == ids[boundary:]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labels[boundary:]) == text[len(prefix):] + tokenizer.eos_token
        # what the model is prompted with at inference is exactly the masked part's tokens
        assert tokenizer(prefix)["input_ids"] == ids[:boundary]
        assert tokenizer.decode([ids[boundary]]).startswith(" ,")          # the first label: "another operation"


def test_boundary_holds_for_qwen25_tokenizer_too(samples):
    from cadlab.lm.models import qwen25_tokenizer

    qwen = qwen25_tokenizer()
    for caption, full, kept in samples[::12]:
        example = ac.make_example(qwen, caption, full, kept)
        prompt = ac.PROMPT.format(caption=caption)
        boundary = example["labels"].count(-100)
        assert example["labels"][boundary - 1] == -100 and example["labels"][boundary] != -100
        rest = deepcad.serialize(full)[len(deepcad.serialize(full, kept)):]
        assert qwen.decode(example["labels"][boundary:]) == rest + qwen.eos_token
        assert qwen(prompt + deepcad.serialize(full, kept))["input_ids"] == example["input_ids"][:boundary]


def test_seed_boundary_lands_late_and_masks_the_decision(tokenizer, samples):
    ours = [ac.seed_boundary(tokenizer, c, f, k) for c, f, k in samples]
    seed_layout = [ac.seed_boundary(tokenizer, c, f, k, layout="seed") for c, f, k in samples[::3]]
    for results in (ours, seed_layout):
        wrong = [r for r in results if r["error"] != 0]
        assert len(wrong) / len(results) > 0.9
        assert all(r["error"] > 0 for r in wrong)
    # in our layout the hidden tokens start with the separator: the "another operation, or close" decision
    assert all(r["masked"].startswith(" ,") for r in ours)
    # ... and the true boundary is make_example's
    for (c, f, k), r in zip(samples[:20], ours):
        assert ac.make_example(tokenizer, c, f, k)["labels"].count(-100) == r["true"]


# --------------------------------------------------------------------------------------------
# NaN losses and the fix
# --------------------------------------------------------------------------------------------
def _micro_batch(generator, length, n_labels):
    ids = torch.randint(3, 256, (length,), generator=generator)
    labels = torch.full((length,), -100)
    if n_labels:
        labels[-n_labels:] = ids[-n_labels:]
    return {"input_ids": ids.tolist(), "labels": labels.tolist()}


def test_empty_micro_batches_give_nan_at_seed_like_settings(tokenizer, samples):
    whole = [ac.make_example(tokenizer, c, f, k) for c, f, k in samples]
    lengths = [len(ex["input_ids"]) for ex in whole]
    max_len = ac.length_that_fits(lengths, 0.8)                  # the seed: 13000 "fits 80 % of sequences"
    assert 0.8 <= np.mean(np.array(lengths) <= max_len) < 0.85
    cut = [{k: v[:max_len] for k, v in ex.items()} for ex in whole]
    for (c, f, k), ex in list(zip(samples, cut))[::10]:
        assert ac.make_example(tokenizer, c, f, k, max_seq_length=max_len) == ex
    empty = [ex for ex in cut if ac.label_tokens(ex["labels"]) == 0]
    assert len(empty) > 0                                         # the completion was cut away
    assert all(set(ex["labels"]) == {-100} and len(ex["input_ids"]) == max_len for ex in empty)
    # such a micro-batch's mean loss is 0/0 = NaN; a tiny model with the same label pattern shows it
    model = tiny_qwen2()
    g = torch.Generator().manual_seed(0)
    losses = ac.seed_micro_batch_losses(model, [_micro_batch(g, 12, 0), _micro_batch(g, 12, 5)])
    assert math.isnan(losses[0]) and math.isfinite(losses[1])


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_accumulation_step_equals_one_big_batch_and_never_nan():
    torch.manual_seed(0)
    model = tiny_qwen2(seed=1).train()
    lora.add_lora(model, r=4, alpha=8)
    for layer in model.modules():                                 # B != 0 so that A gets gradients too
        if isinstance(layer, lora.LoRALinear):
            torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    g = torch.Generator().manual_seed(0)
    window = [_micro_batch(g, 10, 4), _micro_batch(g, 14, 0), _micro_batch(g, 7, 6), _micro_batch(g, 16, 1)]
    out = ac.accumulation_step(model, window)
    assert out["tokens"] == 4 + 0 + 6 + 1
    assert out["skipped"] == 1 and math.isfinite(out["loss"])
    accumulated = _grads(model)
    model.zero_grad()
    # one big right-padded batch, loss = mean over all its label tokens
    length = max(len(mb["input_ids"]) for mb in window)
    ids = torch.full((len(window), length), 2)
    labels = torch.full((len(window), length), -100)
    mask = torch.zeros((len(window), length), dtype=torch.long)
    for i, mb in enumerate(window):
        n = len(mb["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(mb["input_ids"]), torch.tensor(mb["labels"]), 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    loss.backward()
    assert float(loss) == pytest.approx(out["loss"], rel=1e-5)
    big = _grads(model)
    assert set(big) == set(accumulated) and len(big) == 8
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-5, atol=1e-7)
    # the seed's mean of means is another gradient (micro-batches weigh the same whatever their token count)
    model.zero_grad()
    losses = ac.seed_accumulation_step(model, window)
    assert math.isnan(losses[1])
    seed = _grads(model)
    assert max(float((seed[n] - big[n]).abs().max()) for n in big) > 1e-4
    # a window with no label token: no NaN, no backward
    model.zero_grad()
    empty = ac.accumulation_step(model, [_micro_batch(g, 8, 0), _micro_batch(g, 5, 0)])
    assert empty == {"loss": None, "tokens": 0, "weight": 0.0, "skipped": 2}
    assert all(p.grad is None for p in model.parameters())


def test_part_example_trains_every_truncation_in_one_pass(tokenizer):
    """One forward pass over the full text with counted weights == the separate truncation examples."""
    caption, full = deepcad.sample_sequence(3)                          # 8 operations: kept 1, 2, 4, 6, 7
    kept = deepcad.kept_counts(len(full["sequence"]))
    separate = [ac.make_example(tokenizer, caption, full, k) for k in kept]
    merged = ac.part_example(tokenizer, caption, full)
    assert all(ex["input_ids"] == merged["input_ids"] for ex in separate)
    assert merged["labels"] == separate[0]["labels"]
    assert max(merged["weights"]) == len(kept) and sum(merged["weights"]) == sum(
        sum(t != -100 for t in ex["labels"]) for ex in separate)
    model = tiny_qwen2(seed=2, vocab_size=len(tokenizer)).train()
    lora.add_lora(model, r=2, alpha=4)
    for layer in model.modules():
        if isinstance(layer, lora.LoRALinear):
            torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    one = ac.accumulation_step(model, [merged])
    g1 = _grads(model)
    model.zero_grad()
    many = ac.accumulation_step(model, separate)
    g2 = _grads(model)
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-5) and one["weight"] == many["tokens"]
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------------------------
# LoRA by hand, against peft
# --------------------------------------------------------------------------------------------
def test_lora_linear_starts_as_the_base_and_merges():
    torch.manual_seed(0)
    base = torch.nn.Linear(32, 24)
    layer = lora.LoRALinear(copy.deepcopy(base), r=4, alpha=12)
    assert layer.scaling == 3.0
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert layer.lora_A.weight.shape == (4, 32) and layer.lora_B.weight.shape == (24, 4)
    assert layer.lora_A.bias is None and layer.lora_B.bias is None
    assert float(layer.lora_A.weight.abs().max()) <= 1 / math.sqrt(32) and torch.all(layer.lora_B.weight == 0)
    x = torch.randn(5, 32)
    torch.testing.assert_close(layer(x), base(x))
    torch.nn.init.normal_(layer.lora_B.weight)
    before = layer(x)
    expected = base(x) + 3.0 * x @ layer.lora_A.weight.T @ layer.lora_B.weight.T
    torch.testing.assert_close(before, expected)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.base.weight, base.weight + 3.0 * layer.lora_B.weight @ layer.lora_A.weight)


def lora_parity(r=8, alpha=16, seed=0):
    return lora.lora_parity(lambda: tiny_qwen2(seed=3), ("q_proj", "v_proj"), r=r, alpha=alpha, seed=seed)


def test_lora_by_hand_equals_peft():
    out = lora_parity()
    assert out["init_A"] == 0.0                                # same draws: peft's init, in peft's order
    assert out["logits"] < 1e-6
    assert out["grad_A_size"] > 1e-4                           # a real gradient, not zero against zero
    assert out["grad_A"] < 1e-6 and out["grad_B"] < 1e-6
    assert out["merged"] < 1e-6 and out["merge_changed"] > 1e-4
    # 2 layers x (q_proj: 8 x 64 + 64 x 8, v_proj: 8 x 64 + 32 x 8)
    assert out["trainable"] == (2 * (8 * 64 + 64 * 8 + 8 * 64 + 32 * 8),) * 2
