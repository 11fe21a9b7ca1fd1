"""The mini Cadrille's training script on tiny sizes (the loss falls, a run resumes), the text-only
mrope == RoPE check it asserts before training, its data, and `cadlab reconstruct --model cadrille`."""

import json

import numpy as np
import pytest
import torch
from training_checks import (
    check_a_finished_run_started_again_is_a_new_run,
    check_stopped_and_resumed_equals_uninterrupted,
)

from cadlab.cad.cadrecode import tiny_cadrecode
from cadlab.cad.cadrille_parts import build_parts, fresh_text_item, make_items
from cadlab.cad.cadrille_processor import CadrilleProcessor, collate, mini_tokenizer
from cadlab.cad.describe import LEVELS, describer_words, numbers
from cadlab.cad.reconstruct_cli import main as reconstruct_main
from cadlab.cad.synth import program_numbers
from cadlab.train.cadrille import (
    CadrilleRecipe,
    TrainSettings,
    VisionSettings,
    add_word_tokens,
    check_text_mrope,
    held_out_items,
    new_model,
    train,
)

TINY_VISION = VisionSettings(depth=1, embed_dim=32, heads=2)


@pytest.fixture(scope="module")
def tokenizer():
    return mini_tokenizer()


@pytest.fixture(scope="module")
def parts():
    return build_parts(range(4), progress=False)


def tiny_lm(tokenizer, seed=0):
    return tiny_cadrecode(seed=seed, vocab_size=len(tokenizer) - 11)      # the mini CAD-Recode's vocabulary


def settings(**overrides):
    base = dict(rows={"pc": 2, "img": 2, "text": 2}, lr=3e-3, vision_lr=3e-3, warmup=1, max_steps=6, val_parts=2,
                bf16=False, checkpoint_minutes=100.0, vision=TINY_VISION)
    base.update(overrides)
    return TrainSettings(**base)


def test_parts_hold_points_picture_and_four_descriptions(parts):
    assert parts["rejected"] == 1 and len(parts["codes"]) == 3 and parts["points"].shape == (3, 256, 3)
    assert parts["images"].shape == (3, 268, 268, 3) and parts["images"].dtype == np.uint8
    for code, texts in zip(parts["codes"], parts["descriptions"]):
        assert len(texts) == len(LEVELS) and numbers(texts[-1]) == program_numbers(code)
    items = held_out_items(parts, 0)
    assert set(items) == {"pc", "img", "text"} and items["img"]["video"][0].size == (268, 268)


def test_parts_are_cached_in_chunks_and_a_larger_set_builds_only_what_it_lacks(parts, tmp_path, monkeypatch):
    import cadlab.cad.cadrille_parts as tc

    monkeypatch.setattr(tc, "PART_CHUNK", 2)
    first = tc.part_dataset(2, cache_dir=tmp_path, progress=False)             # seeds 0 and 1
    assert sorted(p.name.split("_s")[0] for p in tmp_path.glob("*.npz")) == ["train_0_2"]
    built = []

    def build_and_record(seeds, **kwargs):
        built.append(list(seeds))
        return build_parts(seeds, progress=False)

    monkeypatch.setattr(tc, "build_parts", build_and_record)
    grown = tc.part_dataset(4, cache_dir=tmp_path, progress=False)
    assert built == [[2, 3]]                                                     # the cached chunk is not rebuilt
    assert first["seeds"] == [seed for seed in parts["seeds"] if seed < 2] and grown["seeds"] == parts["seeds"]
    assert grown["codes"] == parts["codes"] and grown["descriptions"] == parts["descriptions"]
    assert np.array_equal(grown["points"], parts["points"]) and np.array_equal(grown["images"], parts["images"])
    assert grown["rejected"] == parts["rejected"] == 1


def test_items_per_mode_and_fresh_text(parts):
    import random

    rng = random.Random(0)
    pc = make_items(parts, [0, 1], "pc", rng)
    assert pc[0]["point_cloud"].shape == (256, 3) and pc[0]["answer"] == parts["codes"][0]
    assert "video" in make_items(parts, [2], "img", rng)[0]
    assert make_items(parts, [1], "text", rng)[0]["description"] in parts["descriptions"][1]
    fresh = fresh_text_item(123, random.Random(1))
    assert fresh == fresh_text_item(123, random.Random(1)) and fresh["answer"].startswith("import cadquery")


def test_text_mrope_check_passes_for_the_copy_and_fails_for_another_rope(tokenizer):
    lm = tiny_lm(tokenizer)
    model = new_model(lm, tokenizer, TINY_VISION)
    proof = check_text_mrope(model, lm, CadrilleProcessor(tokenizer))
    assert proof["rope_cos_sin_max_diff"] == 0.0 and proof["text_logits_max_diff"] < 1e-5
    other = tiny_cadrecode(seed=0, vocab_size=len(tokenizer) - 11,
                           rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    with pytest.raises(AssertionError, match="RoPE"):
        check_text_mrope(model, other, CadrilleProcessor(tokenizer))


def test_a_few_steps_reduce_every_mode_loss_and_a_run_resumes(tokenizer, parts, tmp_path):
    torch.manual_seed(0)
    log = train(tmp_path / "run", tmp_path / "out", settings(max_steps=8), data=parts, val=parts,
                lm=tiny_lm(tokenizer), tokenizer=tokenizer, progress=False)
    first, last = log["train"][0], log["train"][-1]
    for mode in ("pc", "img", "text"):
        assert last[mode] < first[mode], (mode, first[mode], last[mode])
    assert log["config"]["text_mrope_equals_rope"]["rope_cos_sin_max_diff"] == 0.0
    assert log["config"]["word_tokens_added"] == len(describer_words())          # the words join from the start
    assert log["config"]["vocab_size"] == len(tokenizer) + len(describer_words())
    shipped = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert shipped["train"][-1]["step"] == 8 and set(shipped["val"][-1]) >= {"pc", "img", "text"}
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 0
    again = train(tmp_path / "run", tmp_path / "out", settings(max_steps=2), data=parts, val=parts, progress=False)
    assert [r["step"] for r in again["train"]] == list(range(1, 11)) and len(again["runs"]) == 2
    import shutil

    shutil.rmtree(tmp_path / "run")                # a new machine: no run state, only the shipped model
    fresh = train(tmp_path / "run", tmp_path / "out", settings(max_steps=2), data=parts, val=parts, progress=False)
    assert [r["step"] for r in fresh["train"]] == list(range(1, 13)) and len(fresh["runs"]) == 3
    assert fresh["train"][10]["text"] < first["text"]       # it went on from the shipped weights, not from scratch


def _train_tiny(tokenizer, parts):
    def run(run_dir, out_dir, **overrides):
        return train(run_dir, out_dir, settings(**overrides), data=parts, val=parts, lm=tiny_lm(tokenizer),
                     tokenizer=tokenizer, progress=False)
    return run


def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(tokenizer, parts, tmp_path):
    check_stopped_and_resumed_equals_uninterrupted(_train_tiny(tokenizer, parts), tmp_path)


def test_a_finished_run_started_again_is_a_new_run(tokenizer, parts, tmp_path):
    check_a_finished_run_started_again_is_a_new_run(_train_tiny(tokenizer, parts), tmp_path)


def test_word_tokens_can_join_a_run_that_began_without_them(tokenizer, parts, tmp_path):
    """The embedding grows by the describer's words; the optimizer's saved moments no longer fit, so the
    run goes on with a fresh optimizer instead of failing at its first step."""
    train_tiny = _train_tiny(tokenizer, parts)
    first = train_tiny(tmp_path / "run", tmp_path / "out", max_steps=2, word_tokens=False)
    assert first["config"]["vocab_size"] == len(tokenizer)
    again = train_tiny(tmp_path / "run", tmp_path / "out", max_steps=2, word_tokens=True)
    assert again["config"]["vocab_size"] == len(tokenizer) + len(describer_words())
    assert [r["step"] for r in again["train"]] == [1, 2, 3, 4] and len(again["runs"]) == 2


def test_word_tokens_shorten_descriptions_and_leave_the_code_alone(tokenizer, parts):
    words = describer_words()
    assert len(words) > 50 and " radius" in words and " workplane" in words and words == describer_words()
    assert not any(w in code for w in words for code in parts["codes"])       # never a piece of a program
    model = new_model(tiny_lm(tokenizer), tokenizer, TINY_VISION)
    rows_before = model.get_input_embeddings().weight.detach().clone()
    extended = add_word_tokens(model, tokenizer, words + [" radius"])        # a repeat is added once
    assert len(extended) == len(tokenizer) + len(words) and len(tokenizer) == rows_before.shape[0]
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(extended) and torch.equal(weight[:len(tokenizer)], rows_before)
    pieces = tokenizer(" radius", add_special_tokens=False)["input_ids"]
    assert torch.allclose(weight[extended.convert_tokens_to_ids(" radius")], rows_before[pieces].mean(0))
    for code, texts in zip(parts["codes"], parts["descriptions"]):
        assert extended(code)["input_ids"] == tokenizer(code)["input_ids"]      # programs: the same tokens
        ids = extended(texts[-1])["input_ids"]
        assert len(ids) < 0.6 * len(tokenizer(texts[-1])["input_ids"]) and extended.decode(ids) == texts[-1]
    batch = collate([{"description": parts["descriptions"][0][-1]}], CadrilleProcessor(extended))
    assert model(**batch).logits.shape[-1] == len(extended)


@pytest.fixture(scope="module")
def saved_tiny(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-cadrille")
    recipe = CadrilleRecipe(settings(), {}, {}, tokenizer=tokenizer)
    recipe.save(new_model(tiny_lm(tokenizer), tokenizer, TINY_VISION), folder,
                {"train": [], "val": [], "runs": [], "config": {}}, shipped=True)
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--model", "cadrille", "--mode", "text"], "--mode text needs a description"),
    (["part.stl", "--model", "cadrille", "--mode", "pc", "--text", "a disc"], "--text is for --mode text only"),
    (["part.stl", "--model", "cadrille", "--mode", "text", "--text", "a disc"], "reads --text, not a part file"),
    (["--model", "cadrille", "--mode", "img"], "--mode img needs a part"),
    (["--model", "cadrille", "--mode", "text", "--text", "  "], "--mode text needs a description"),
])
def test_bad_arguments_get_a_clear_message_and_status_2(argv, message, capsys):
    assert reconstruct_main(argv) == 2
    assert message in capsys.readouterr().err


def test_mode_without_model_and_unknown_mode_are_refused(capsys):
    assert reconstruct_main(["--mode", "text", "--text", "a disc"]) == 2
    assert "--model" in capsys.readouterr().err
    assert reconstruct_main(["--model", "cadrille", "--mode", "voice", "--text", "a disc"]) == 2


def test_missing_part_is_bad_input(saved_tiny, tmp_path, capsys):
    assert reconstruct_main([str(tmp_path / "nope.stl"), "--model", str(saved_tiny), "--mode", "pc"]) == 1
    assert "nope.stl" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["pc", "img", "text"])
def test_each_mode_writes_a_program(mode, saved_tiny, tmp_path, capsys):
    from cadlab.cad.sandbox import run_cadquery

    part = tmp_path / "box.stl"
    run_cadquery("import cadquery as cq\nr=cq.Workplane('XY').box(40,20,10)\n").mesh.export(part)
    argv = ["--model", str(saved_tiny), "--mode", mode, "-o", str(tmp_path / "out"), "--max-new-tokens", "12"]
    argv += ["--text", "a box 40 by 20 by 10"] if mode == "text" else [str(part)]
    status = reconstruct_main(argv)
    assert status in (0, 3)                     # a random tiny model rarely writes a valid program
    stem = "text" if mode == "text" else "box"
    assert (tmp_path / "out" / f"{stem}.py").exists()
    assert f"({mode} mode)" in capsys.readouterr().err


def test_evaluate_scores_every_mode_on_the_same_parts_and_stops_on_its_budget(saved_tiny, parts, monkeypatch):
    import cadlab.train.cadrille as tc

    monkeypatch.setattr(tc, "held_out_parts", lambda n, progress=True, shading="smooth": parts)
    result = tc.evaluate(saved_tiny, n_shapes=3, max_new_tokens=8, progress=False, write=False)
    assert result["shapes"] == 3
    for mode in ("pc", "img", "text"):
        r = result[mode]
        assert r["shapes"] == 3 and [row["seed"] for row in r["rows"]] == parts["seeds"]
        assert 0.0 <= r["invalid_ratio"] <= 1.0 and r["seconds_per_reconstruction"]["median"] > 0
        assert [row["truth_code"] for row in r["rows"]] == parts["codes"] and r["anatomy"]["parts"] == 3
    stopped = tc.evaluate(saved_tiny, n_shapes=3, max_new_tokens=8, minutes=0.0, progress=False, write=False)
    assert stopped["stopped_by_time_budget_minutes"] == 0.0 and "pc" not in stopped


def test_shipped_mini_cadrille_rebuilds_an_easy_held_out_disc_from_its_points():
    """Smoke test of the shipped weights end to end (held-out seed 10,000,003, a flange: IoU 0.90 in its --eval);
    the per-mode quality over the held-out set is in the shipped training_log.json."""
    from cadlab.cad.cadrille import generate_code, load_cadrille
    from cadlab.cad.cadrille_processor import mode_item
    from cadlab.cad.metrics import iou
    from cadlab.cad.pointcloud import mesh_to_point_cloud
    from cadlab.cad.sandbox import closed_solid, run_cadquery
    from cadlab.cad.synth import normalized_program

    seed = 10_000_003
    _, truth, _ = normalized_program(seed)
    model, processor = load_cadrille()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = generate_code(model, processor, [mode_item("pc", points=mesh_to_point_cloud(truth, seed=seed))],
                             max_new_tokens=400)[0]
    finally:
        torch.set_num_threads(threads)
    solid = closed_solid(run_cadquery(code))
    assert solid is not None, code
    assert iou(truth, solid) > 0.8, code



def test_text_levels_score_every_level_and_the_expert_level_is_the_text_mode():
    from cadlab.train.cadrille import evaluate, evaluate_text_levels

    levels = evaluate_text_levels(n_shapes=2, progress=False, write=False)
    assert all(levels[level]["shapes"] == 2 for level in LEVELS)
    text = evaluate(n_shapes=2, modes=("text",), minutes=None, progress=False, write=False)["text"]
    assert [r["code"] for r in levels["expert"]["rows"]] == [r["code"] for r in text["rows"]]
    assert levels["expert"]["mean_iou_invalid_as_0"] == text["mean_iou_invalid_as_0"]


def test_flat_shaded_parts_are_cached_apart_and_differ_only_in_their_pictures(tmp_path):
    import json

    import cadlab.cad.cadrille_parts as tc
    from cadlab.cad.cadrille import model_shading

    smooth = tc.part_dataset(2, cache_dir=tmp_path, progress=False)
    flat = tc.part_dataset(2, cache_dir=tmp_path, progress=False, shading="flat")
    assert sorted(p.name.split("_s")[0] + p.name.split("_d1")[1] for p in tmp_path.glob("*.npz")) == [
        "train_0_2.npz", "train_0_2_flat.npz"]
    assert flat["codes"] == smooth["codes"] and np.array_equal(flat["points"], smooth["points"])
    assert flat["images"].shape == smooth["images"].shape and not np.array_equal(flat["images"], smooth["images"])
    assert model_shading(tmp_path) == "smooth"                                 # no log: Cadrille's
    (tmp_path / "training_log.json").write_text(json.dumps({"config": {"shading": "flat"}}))
    assert model_shading(tmp_path) == "flat"


def test_a_flat_shaded_model_gets_flat_pictures(saved_tiny, tmp_path):
    import json
    import shutil

    import trimesh

    from cadlab.cad.cadrille import load_cadrille_processor
    from cadlab.cad.cadrille_processor import mode_item

    assert load_cadrille_processor(saved_tiny).shading == "smooth"           # a log without the setting: Cadrille's
    folder = tmp_path / "flat"
    shutil.copytree(saved_tiny, folder)
    log = json.loads((folder / "training_log.json").read_text())
    log["config"]["shading"] = "flat"
    (folder / "training_log.json").write_text(json.dumps(log))
    processor = load_cadrille_processor(folder)
    assert processor.shading == "flat"
    box = trimesh.creation.box((30, 20, 10))
    flat = np.asarray(mode_item("img", mesh=box, shading=processor.shading)["video"][0])
    smooth = np.asarray(mode_item("img", mesh=box)["video"][0])
    assert flat.shape == smooth.shape == (268, 268, 3) and not np.array_equal(flat, smooth)
