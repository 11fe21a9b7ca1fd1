"""The mini CAD-Recode: its tokenizer, its training loop (loss falls, resume works) and the shipped model."""

import json

import numpy as np
import pytest
import torch
from training_checks import (
    check_a_finished_run_started_again_is_a_new_run,
    check_stopped_and_resumed_equals_uninterrupted,
)

from cadlab.cad.cadrecode import (
    END_TOKEN,
    MINI_MODEL_DIR,
    POINT_TOKEN,
    START_TOKEN,
    CADRecode,
    extract_code,
    load_cadrecode,
    prepare_inputs,
)
from cadlab.cad.metrics import iou
from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.sandbox import run_cadquery
from cadlab.cad.synth import generate_program, normalized_program
from cadlab.train.cadrecode import (
    TEST_SEEDS,
    TEST_START,
    TrainSettings,
    build_tokenizer,
    encode_program,
    program_batch,
    train,
)

# A held-out shape (seed in the test range) that the shipped model reconstructs greedily (IoU 1.00 in its
# --eval: a plate with a centre hole). It is a smoke test that the shipped weights work end to end; the model's
# quality over the whole held-out set is measured by `cadlab train-cadrecode --eval`.
EASY_HELD_OUT_SEED = TEST_START + 237


@pytest.fixture(scope="module")
def small_tokenizer():
    return build_tokenizer([generate_program(s) for s in range(300)], vocab_size=400)


def test_tokenizer_round_trips_programs(small_tokenizer):
    for seed in range(1000, 1040):           # programs it was not trained on
        code = generate_program(seed)
        ids = small_tokenizer(code, add_special_tokens=False)["input_ids"]
        assert small_tokenizer.decode(ids) == code
    # byte-level: text outside the grammar round-trips too
    odd = "r = cq.Workplane('XY').box(1.5, 2e3, 7)  # é\n\ttab"
    assert small_tokenizer.decode(small_tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_special_tokens_keep_their_roles(small_tokenizer):
    ids = {t: small_tokenizer.convert_tokens_to_ids(t) for t in (END_TOKEN, START_TOKEN, POINT_TOKEN)}
    assert ids == {END_TOKEN: 0, START_TOKEN: 1, POINT_TOKEN: 2}
    assert small_tokenizer.eos_token == END_TOKEN and small_tokenizer.pad_token == POINT_TOKEN
    code = generate_program(5)
    program = encode_program(small_tokenizer, code)
    assert program[0] == ids[START_TOKEN] and program[-1] == ids[END_TOKEN]
    assert not set(program[1:-1]) & set(ids.values())          # code never uses a special id
    # the special strings are single tokens, never split
    for token, i in ids.items():
        assert small_tokenizer(token, add_special_tokens=False)["input_ids"] == [i]
    # prepare_inputs / extract_code work unchanged with it
    inputs = prepare_inputs(np.zeros((256, 3), np.float32), small_tokenizer)
    assert inputs["input_ids"][0].tolist() == [ids[POINT_TOKEN]] * 256 + [ids[START_TOKEN]]
    text = small_tokenizer.decode(inputs["input_ids"][0].tolist() + program[1:] + [ids[POINT_TOKEN]] * 3)
    assert extract_code(text) == code


def test_program_batch_puts_the_loss_on_code_tokens_only(small_tokenizer):
    programs = [encode_program(small_tokenizer, generate_program(s)) for s in (1, 2)]
    batch = program_batch(small_tokenizer, programs, np.zeros((2, 256, 3), np.float32))
    width = 256 + max(map(len, programs))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    for row, program in enumerate(programs):
        assert (batch["labels"][row, :257] == -100).all()
        assert batch["labels"][row, 257:256 + len(program)].tolist() == program[1:]
        assert (batch["labels"][row, 256 + len(program):] == -100).all()
        assert batch["attention_mask"][row].tolist() == [-1] * 256 + [1] * len(program) + [0] * (width - 256 - len(program))


# One model-and-data setting for the training tests: a 1-layer model on 6 programs with random clouds.
SMALL = dict(hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64, batch_size=6, lr=1e-2,
             warmup=1, checkpoint_minutes=1e6)


def six_programs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"codes": [generate_program(s) for s in range(6)],
            "points": rng.uniform(-1, 1, (6, 256, 3)).astype(np.float32)}


def test_a_few_steps_reduce_the_loss_and_a_second_run_continues(tmp_path):
    data, small = six_programs(0), SMALL
    log = train(tmp_path / "run", tmp_path / "out", TrainSettings(max_steps=12, **small), data=data, val=data,
                progress=False)
    losses = [r["loss"] for r in log["train"]]
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses   # down by more than a nat
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "loss_curves.png").is_file()
    saved = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert [r["step"] for r in saved["train"]] == list(range(1, 13))
    before = CADRecode.from_pretrained(tmp_path / "run").state_dict()

    log = train(tmp_path / "run", tmp_path / "out", TrainSettings(max_steps=3, **small), data=data, val=data,
                progress=False)              # the first run finished: a second one continues its weights and optimizer
    assert [r["step"] for r in log["train"]] == list(range(1, 16)) and [r["steps"] for r in log["runs"]] == [12, 3]
    assert log["train"][-1]["loss"] < losses[0]
    after = CADRecode.from_pretrained(tmp_path / "run").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _train_small(run_dir, out_dir, **overrides):
    data = six_programs(0)
    return train(run_dir, out_dir, TrainSettings(**{**SMALL, "checkpoint_minutes": 1e6, **overrides}), data=data,
                 val=data, progress=False)


def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path):
    check_stopped_and_resumed_equals_uninterrupted(_train_small, tmp_path)


def test_a_finished_run_started_again_is_a_new_run(tmp_path):
    check_a_finished_run_started_again_is_a_new_run(_train_small, tmp_path)


def test_a_new_run_starts_from_the_shipped_model_and_adds_up_its_time(tmp_path):
    data, small = six_programs(2), SMALL
    first = train(tmp_path / "run1", tmp_path / "out", TrainSettings(max_steps=6, **small), data=data, val=data,
                  progress=False)
    shipped = CADRecode.from_pretrained(tmp_path / "out").state_dict()
    # a second run with no run state of its own: it starts from the shipped weights, not from scratch
    second = train(tmp_path / "run2", tmp_path / "out", TrainSettings(max_steps=4, lr=1e-9, **{k: v for k, v in small.items() if k != "lr"}),
                   data=data, val=data, progress=False)
    assert [r["step"] for r in second["train"]] == list(range(1, 11))           # steps continue: 7..10
    assert len(second["runs"]) == 2 and [r["steps"] for r in second["runs"]] == [6, 4]
    assert second["total_seconds"] == pytest.approx(sum(r["seconds"] for r in second["runs"]), abs=0.2)
    assert second["train"][-1]["seconds"] >= first["train"][-1]["seconds"]
    after = CADRecode.from_pretrained(tmp_path / "out").state_dict()
    assert max(float((after[k] - shipped[k]).abs().max()) for k in shipped) < 1e-4   # lr 1e-9: barely moved
    assert set(second["val"][-1]) >= {"loss", "digits", "syntax", "shuffled"}


def test_ablate_trains_each_change_from_scratch_on_the_same_data_and_logs_it(tmp_path, monkeypatch):
    from dataclasses import asdict

    import cadlab.train.cadrecode as tc

    data = six_programs(3)
    monkeypatch.setattr(tc, "train_data", lambda **kw: dict(data))
    monkeypatch.setattr(tc, "held_out_set", lambda **kw: {**data, "seeds": list(range(6))})
    monkeypatch.setattr(tc, "ABLATIONS", {"base": {}, "wider": {"hidden_size": 48}})
    out = tmp_path / "out"
    out.mkdir()
    shipped_settings = asdict(TrainSettings(**SMALL))
    (out / "training_log.json").write_text(json.dumps({"runs": [{"settings": shipped_settings}], "train": []}))
    rows = tc.ablate(minutes=0.01, chunks=1, n_shapes=1, root=tmp_path / "abl", out_dir=out, progress=False)
    assert [r["name"] for r in rows] == ["base", "wider"]
    assert json.loads((out / "training_log.json").read_text())["ablations"] == rows
    assert rows[1]["params"] > rows[0]["params"] and rows[1]["changes"] == {"hidden_size": 48}
    for row in rows:
        assert row["steps"] >= 1 and row["train_programs"] == 6 and row["greedy"]["shapes"] == 1
        assert set(row["val"]) >= {"loss", "digits", "syntax", "shuffled"}
        run = json.loads((tmp_path / "abl" / tc._slug(row["name"]) / "model" / "training_log.json").read_text())
        assert len(run["runs"]) == 1 and run["runs"][0]["started_at_step"] == 0      # from scratch, one run
        assert run["runs"][0]["settings"]["lr"] == SMALL["lr"]                       # the shipped run's settings
    monkeypatch.setattr(tc, "train", lambda *a, **k: pytest.fail("a finished ablation is trained again"))
    assert tc.ablate(minutes=0.01, chunks=1, n_shapes=1, root=tmp_path / "abl", out_dir=out, progress=False) == rows


def test_bf16_autocast_training_keeps_fp32_weights(tmp_path):
    rng = np.random.default_rng(1)
    codes = [generate_program(s) for s in range(6)]
    data = {"codes": codes, "points": rng.uniform(-1, 1, (6, 256, 3)).astype(np.float32)}
    settings = TrainSettings(max_steps=12, hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64,
                             batch_size=6, lr=1e-2, warmup=1, checkpoint_minutes=1e6, bf16=True)
    log = train(tmp_path / "run", tmp_path / "out", settings, data=data, val=data, progress=False)
    losses = [r["loss"] for r in log["train"]]
    assert losses[-1] < losses[0] - 1.0, losses
    assert log["runs"][-1]["settings"]["bf16"] is True
    model = CADRecode.from_pretrained(tmp_path / "out")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_load_cadrecode_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_cadrecode(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_cadrecode(tmp_path)


def test_shipped_model_loads_cleanly():
    size = (MINI_MODEL_DIR / "model.safetensors").stat().st_size
    assert size <= 25 * 1024**2, f"checkpoint is {size / 1024**2:.1f} MB"
    _, info = CADRecode.from_pretrained(MINI_MODEL_DIR, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_shipped_model_reconstructs_an_easy_held_out_shape(capsys):
    assert TEST_START <= EASY_HELD_OUT_SEED < TEST_START + TEST_SEEDS
    model, tokenizer = load_cadrecode()
    assert "mini CAD-Recode" in capsys.readouterr().out
    _, target, reason = normalized_program(EASY_HELD_OUT_SEED)
    assert target is not None, reason
    inputs = prepare_inputs(mesh_to_point_cloud(target, seed=EASY_HELD_OUT_SEED), tokenizer)
    tokens = model.generate(**inputs, max_new_tokens=256, pad_token_id=tokenizer.convert_tokens_to_ids(POINT_TOKEN))
    code = extract_code(tokenizer.decode(tokens[0], skip_special_tokens=False))
    result = run_cadquery(code)
    assert result.ok, (code, result)
    assert iou(target, result.mesh) > 0.5, code


def test_load_cadrecode_real_layout_gets_qwen2_tokenizer(tmp_path, capsys):
    """A folder with a CADRecode checkpoint but no tokenizer (as filapro/cad-recode-v1.5 ships) gets Qwen2's."""
    from transformers import Qwen2Config

    config = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    CADRecode(config).save_pretrained(tmp_path)
    model, tokenizer = load_cadrecode(tmp_path)
    assert str(tmp_path) in capsys.readouterr().out
    assert isinstance(model, CADRecode) and not model.training
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (END_TOKEN, START_TOKEN, POINT_TOKEN)]
    assert ids == [151643, 151644, 151645]


def test_evaluate_set_scores_every_stage_against_the_truth():
    from cadlab.train.cadrecode import evaluate_set
    from cadlab.train.evaluate import summarize_stage

    model, tokenizer = load_cadrecode()
    programs = [normalized_program(TEST_START + i) for i in (1, 3)]
    truths, codes = [p[1] for p in programs], [p[0] for p in programs]
    result = evaluate_set(model, tokenizer, truths, samples=2, fit=True, fit_seconds=0.3, truth_codes=codes,
                          progress=False)
    assert set(result) >= {"greedy", "best_of_k", "fit", "rows", "seconds_per_shape", "anatomy"}
    assert [row["truth_code"] for row in result["rows"]] == codes
    assert set(result["anatomy"]) == {"greedy", "fit"} and result["anatomy"]["greedy"]["parts"] == 2
    assert "anatomy" not in evaluate_set(model, tokenizer, truths[:1], samples=1, fit=False, progress=False)
    assert result["greedy"]["shapes"] == 2 and len(result["rows"]) == 2
    for row in result["rows"]:
        for stage in ("greedy", "best_of_k", "fit"):
            assert row[stage] is None or 0.0 <= row[stage]["iou"] <= 1.0
    summary = summarize_stage([{"iou": 0.5, "cd_x1000": 2.0}, None, {"iou": 1.0, "cd_x1000": 4.0}])
    assert summary["mean_iou"] == 0.75 and summary["mean_iou_invalid_as_0"] == 0.5
    assert summary["median_cd_x1000"] == 3.0 and summary["invalid_ratio"] == pytest.approx(1 / 3)


def test_workshop_parts_are_hand_written_closed_solids():
    from cadlab.cad.part_sets import workshop_parts
    from cadlab.cad.sandbox import closed_solid

    parts = workshop_parts()
    assert len(parts) >= 12
    for name, code in parts.items():
        assert code.startswith("# ") and "import cadquery as cq" in code, name       # a comment saying what it is
        assert closed_solid(run_cadquery(code)) is not None, name
