"""cadlab.cad.reconstruct: the `cadlab reconstruct` command and the `reconstruct` function.

Bad input must give a clear message and a non-zero exit, never a traceback (checked in-process
through ``main`` and once through ``python -m cadlab.cad.reconstruct_cli``). One real run with the
shipped mini CAD-Recode writes the program, the solid and the preview. Sampling is seeded and
keeps the caller's random state; best-of-K keeps the smallest Chamfer distance. A tiny random
CAD-Recode (real Qwen2 vocabulary) stands in where only the plumbing matters.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import cadlab.cad.cadrecode as cadrecode
from cadlab.cad import program_errors, reconstruct_cli, sandbox
from cadlab.cad import reconstruct as rec
from cadlab.cad.cadrecode import tiny_cadrecode
from cadlab.cad.metrics import chamfer_distance
from cadlab.cad.synth import NUMBER

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from cadlab.lm.models import qwen25_tokenizer

    return qwen25_tokenizer()


@pytest.fixture(scope="module")
def random_model():
    """Tiny random layers, Qwen2's full vocabulary: writes gibberish, never a valid program."""
    return tiny_cadrecode(seed=3, vocab_size=151936, hidden_size=32, eos_token_id=151643)


@pytest.fixture()
def box_stl(tmp_path):
    path = tmp_path / "box.stl"
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(path)
    return path


def run_main(argv, capsys):
    code = reconstruct_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# ---------------------------------------------------------------------------------------------
# Bad input: a message, a non-zero exit, no model loaded
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def no_model(monkeypatch):
    """Fail loudly if a test of bad input gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("bad input must be refused before the model is loaded")
    monkeypatch.setattr(cadrecode, "load_cadrecode", refuse, raising=False)


def bad_files(folder: Path) -> dict:
    (folder / "empty.stl").write_bytes(b"")
    (folder / "notes.stl").write_text("solid nonsense\nthis is not a mesh\n")
    (folder / "part.step").write_text("ISO-10303-21;")
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False).export(folder / "flat.stl")
    (folder / "a_folder.stl").mkdir()
    return {"missing.stl": "no mesh file", "empty.stl": "empty", "notes.stl": "", "part.step": "unsupported suffix",
            "flat.stl": "zero area", "a_folder.stl": "not a file"}


def test_bad_mesh_files_are_refused_with_a_message(tmp_path, capsys, no_model):
    for name, words in bad_files(tmp_path).items():
        code, out, err = run_main([tmp_path / name, "-o", tmp_path / "out"], capsys)
        assert code == 1, name
        assert out == ""
        assert err.startswith("cadlab reconstruct: error: ") and words in err, (name, err)
        assert str(tmp_path / name) in err
    assert not (tmp_path / "out").exists()          # nothing written for bad input


@pytest.mark.parametrize("samples", ["0", "-3", "two", "1.5", "65"])
def test_a_bad_sample_count_is_a_usage_error(box_stl, capsys, no_model, samples):
    code, out, err = run_main([box_stl, "--samples", samples], capsys)
    assert code == 2 and out == ""
    assert "argument --samples: must be" in err and "usage: cadlab reconstruct" in err


def test_missing_argument_help_and_other_bad_options(box_stl, tmp_path, capsys, no_model):
    code, _, err = run_main([], capsys)
    assert code == 2 and "required: PART.stl" in err
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "--samples K" in out and "Exit status" in out
    code, _, err = run_main([box_stl, "--max-new-tokens", "0"], capsys)
    assert code == 2 and "argument --max-new-tokens: expected a whole number of at least 1" in err
    code, _, err = run_main([box_stl, "--temperature", "0"], capsys)
    assert code == 2 and "--temperature 0 is greedy decoding" in err


def test_an_unwritable_output_folder_is_refused(box_stl, tmp_path, capsys, no_model):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code, _, err = run_main([box_stl, "-o", a_file], capsys)
    assert code == 2 and f"{a_file} is a file, not a folder" in err
    code, _, err = run_main([box_stl, "-o", a_file / "inside"], capsys)   # a folder under a file
    assert code == 2 and f"cannot create the folder {a_file / 'inside'}: {a_file} is a file" in err


def test_a_model_that_cannot_be_loaded_is_a_clear_error(box_stl, tmp_path, capsys):
    code, out, err = run_main([box_stl, "-o", tmp_path / "out", "--model", tmp_path / "nowhere"], capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"cadlab reconstruct: error: could not load the model from {tmp_path / 'nowhere'}")
    assert "is not a folder" in err
    (tmp_path / "empty_folder").mkdir()
    code, _, err = run_main([box_stl, "-o", tmp_path / "out", "--model", tmp_path / "empty_folder"], capsys)
    assert code == 1 and "has no config.json" in err


def test_model_path_loads_that_checkpoint(box_stl, tmp_path, capsys):
    """--model PATH runs the model saved there (here a tiny random one with the mini tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "my-cadrecode"
    tiny_cadrecode(seed=1, vocab_size=529, eos_token_id=0).save_pretrained(folder)
    PreTrainedTokenizerFast.from_pretrained(cadrecode.MINI_MODEL_DIR).save_pretrained(folder)
    code, out, err = run_main([box_stl, "-o", tmp_path / "out", "--model", folder, "--max-new-tokens", "12",
                               "--samples", "2"], capsys)
    assert f"cadlab: using {folder} (2-layer CADRecode" in err and "Loading weights" not in err
    assert code == 3 and "no program gave a valid solid" in err      # random weights write no valid program
    assert (tmp_path / "out" / "box.py").read_text().rstrip("\n") == out.rstrip("\n")


def test_python_dash_m_reports_without_a_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "cadlab.cad.reconstruct_cli", str(tmp_path / "missing.stl")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == f"cadlab reconstruct: error: no mesh file at {tmp_path / 'missing.stl'}: check the path."


# ---------------------------------------------------------------------------------------------
# Sampling, best of K, frames (tiny random model: fast, plumbing only)
# ---------------------------------------------------------------------------------------------
def test_greedy_codes_are_generate_plus_extract_code(random_model, qwen_tokenizer):
    points = torch.rand(256, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = rec.generate_codes(random_model, qwen_tokenizer, points, max_new_tokens=6)
    prompt = cadrecode.prepare_inputs(points, qwen_tokenizer)
    tokens = random_model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=151645)
    assert codes == [cadrecode.extract_code(qwen_tokenizer.decode(tokens[0], skip_special_tokens=False))]


def test_sampling_is_seeded_and_leaves_the_callers_random_state_alone(random_model, qwen_tokenizer):
    points = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = rec.generate_codes(random_model, qwen_tokenizer, points, samples=3, seed=7, max_new_tokens=5)
    assert torch.equal(torch.get_rng_state(), state)
    again = rec.generate_codes(random_model, qwen_tokenizer, points, samples=3, seed=7, max_new_tokens=5)
    other = rec.generate_codes(random_model, qwen_tokenizer, points, samples=3, seed=8, max_new_tokens=5)
    assert len(first) == 6 and first == again and first != other
    assert len(set(first)) > 1                       # samples differ from each other
    with pytest.raises(ValueError, match="positive integer"):
        rec.generate_codes(random_model, qwen_tokenizer, points, samples=0)


def test_greedy_comes_first_in_the_pool(random_model, qwen_tokenizer):
    points = torch.rand(256, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    pool = rec.generate_codes(random_model, qwen_tokenizer, points, samples=4, seed=0, max_new_tokens=6)
    assert len(pool) == 4 and pool[0] == rec.generate_codes(random_model, qwen_tokenizer, points, max_new_tokens=6)[0]


def test_best_of_k_keeps_the_program_nearest_the_input_cloud(monkeypatch):
    """Three candidate programs (one broken): reconstruct keeps the one nearest the input cloud."""
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))          # the input, in point units
    candidates = ["import cadquery as cq\nr=cq.Workplane('XY').box(100,100,100)\n",
                  "import cadquery as cq\nr=cq.Workplane('XY').box(200,100,50)\n",   # the same box in code units
                  "import cadquery as cq\nr=cq.Workplane('XY').box(\n"]
    monkeypatch.setattr(rec, "generate_codes", lambda *args, **kwargs: candidates)
    result = rec.reconstruct(box, model=None, tokenizer=None, samples=3, fit=False)
    assert result.points.shape == (256, 3)
    assert [c.result.kind for c in result.candidates] == ["ok", "ok", "syntax"]
    assert [c.source for c in result.candidates] == ["greedy", "sample 1", "sample 2"]
    assert result.candidates[2].score is None and result.fitted is None
    assert result.best == 1 and result.code == candidates[1] and result.ok and result.greedy.code == candidates[0]
    assert result.candidates[0].score > 10 * result.candidates[1].score
    # the score is the cloud's Chamfer distance to the solid in point units (code / 100), not re-normalized:
    # a solid of the right shape but twice the size scores badly
    big = rec.score_program("import cadquery as cq\nr=cq.Workplane('XY').box(400,200,100)\n", result.points)
    assert big.score > 10 * result.candidates[1].score


def test_the_fit_moves_wrong_numbers_towards_the_input():
    from cadlab.cad.pointcloud import mesh_to_point_cloud
    from cadlab.cad.synth import validate

    truth, _ = validate("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\n"
                        "r=w0.sketch().rect(200,120).push([(0,0)]).circle(30,mode='s').finalize().extrude(40)\n")
    cloud = mesh_to_point_cloud(truth, seed=0)
    wrong = ("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\n"
             "r=w0.sketch().rect(188,128).push([(0,0)]).circle(30,mode='s').finalize().extrude(32)\n")
    start = rec.score_program(wrong, cloud, "greedy")
    # the descent stops by itself (no change left at the last step): 600 s only guards against a hang,
    # so the result does not depend on the machine's speed
    fitted, evaluations = rec.fit_numbers(start, cloud, seconds=600, steps=(4, 2))
    assert fitted.source == "fit" and fitted.score < start.score and evaluations > 6
    numbers = [int(n) for n in NUMBER.findall(fitted.code.split("\n", 1)[1])]
    width, height, depth = numbers[3], numbers[4], numbers[-1]
    assert abs(width - 200) < abs(188 - 200) and abs(height - 120) < abs(128 - 120) and abs(depth - 40) < 8
    invalid = rec.Candidate("import cadquery as cq\nr=1\n", "greedy", None, None)
    assert rec.fit_numbers(invalid, cloud) == (invalid, 0)                 # nothing to fit


def test_to_frame_of_lays_the_prediction_over_the_reference():
    reference = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    reference.apply_translation((5, -3, 1))
    prediction = trimesh.creation.box(extents=(200.0, 100.0, 50.0))   # code units
    moved = rec.to_frame_of(prediction, reference)
    np.testing.assert_allclose(moved.bounds, reference.bounds, atol=1e-9)
    assert np.allclose(prediction.bounds, [[-100, -50, -25], [100, 50, 25]])   # the input is not changed


def test_no_valid_program_writes_the_code_and_preview_and_exits_3(box_stl, tmp_path, capsys, monkeypatch,
                                                                   random_model, qwen_tokenizer):
    monkeypatch.setattr(cadrecode, "load_cadrecode", lambda name_or_path=None: (random_model, qwen_tokenizer),
                        raising=False)
    code, out, err = run_main([box_stl, "-o", tmp_path / "out", "--max-new-tokens", "8", "--samples", "2"], capsys)
    assert code == 3 and "no program gave a valid solid" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["box.py", "box_preview.png"]
    assert (tmp_path / "out" / "box.py").read_text().rstrip("\n") == out.rstrip("\n")


# ---------------------------------------------------------------------------------------------
# One real run with the shipped mini CAD-Recode
# ---------------------------------------------------------------------------------------------
def test_a_real_run_writes_the_program_the_solid_and_the_preview(tmp_path, capsys):
    from cadlab.cad.synth import validate

    truth, reason = validate("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-10))\n"
                             "r=w0.sketch().push([(0,0)]).rect(60,30).finalize().extrude(20)\n")
    assert reason is None
    part = tmp_path / "plate.stl"
    truth.apply_translation((3.0, 4.0, 5.0))          # an input in its own frame, anywhere
    truth.export(part)
    code, out, err = run_main([part, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    folder = tmp_path / "out"
    assert sorted(p.name for p in folder.iterdir()) == ["plate.py", "plate_pred.stl", "plate_preview.png"]
    program = (folder / "plate.py").read_text()
    assert program.startswith("import cadquery as cq") and "r=" in program.replace(" ", "")
    assert out.rstrip("\n") == program.rstrip("\n")                       # stdout is the program only
    assert (folder / "plate_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    predicted = trimesh.load(folder / "plate_pred.stl")
    assert predicted.is_watertight
    np.testing.assert_allclose(predicted.bounds.mean(0), truth.bounds.mean(0), atol=1e-6)   # laid over the input
    assert np.isclose(predicted.extents.max(), truth.extents.max())
    assert "Chamfer distance x1000 to the input mesh (papers' frame)" in err and "fit:" in err
    reported = float(err.split("(papers' frame): ")[1].split(";")[0])
    # the written solid is the scored one: its CD to the input (both in their own unit frames) is the reported one
    assert reported == pytest.approx(chamfer_distance(truth, predicted) * 1000, rel=0.02, abs=2e-3)


# ---------------------------------------------------------------------------------------------
# The exercises' self-checks (notebook 07): accept the right answer, refuse typical mistakes
# ---------------------------------------------------------------------------------------------
def test_exercise_checks(capsys):
    from transformers import DynamicCache

    from cadlab.exercises import cadrecode as checks

    def stub(*args):
        raise NotImplementedError

    def embed_prompt(model, input_ids, attention_mask, point_cloud):
        embeds = model.model.embed_tokens(input_ids).clone()
        points = model.point_encoder(point_cloud)
        embeds[attention_mask == -1] = points.reshape(-1, points.shape[-1]).to(embeds.dtype)
        return embeds

    def cached_greedy(model, inputs, steps, reembed=False):
        cache, mask, new = DynamicCache(config=model.config), inputs["attention_mask"], []
        logits = model(**inputs, past_key_values=cache, use_cache=True).logits[:, -1]
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)
            new.append(token)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            if reembed:   # the mistake: a fresh, uncached forward over everything each step
                ids = torch.cat([inputs["input_ids"], *new], dim=1)
                logits = model(input_ids=ids, attention_mask=mask, point_cloud=inputs["point_cloud"]).logits[:, -1]
            else:
                logits = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
        return torch.cat(new, dim=1)

    assert checks.check_embed_prompt(embed_prompt)
    assert checks.check_cached_greedy(cached_greedy)
    assert checks.check_to_grid(lambda p: np.rint(np.asarray(p) * 100).astype(int))
    assert not any(check(stub) for check in (checks.check_embed_prompt, checks.check_cached_greedy, checks.check_to_grid))
    with pytest.raises(AssertionError, match="point positions"):     # points written in reversed order
        checks.check_embed_prompt(lambda m, i, a, p: embed_prompt(m, i, a, p.flip(1)))
    with pytest.raises(AssertionError, match="changed the caller's attention_mask"):
        checks.check_embed_prompt(lambda m, i, a, p: (embed_prompt(m, i, a, p), a.masked_fill_(a == -1, 1))[0])
    with pytest.raises(AssertionError, match="point encoder ran"):
        checks.check_cached_greedy(lambda m, x, s: cached_greedy(m, x, s, reembed=True))
    with pytest.raises(AssertionError, match="tokens differ"):
        checks.check_cached_greedy(lambda m, x, s: cached_greedy(m, x, s) + 1)
    capsys.readouterr()
    assert checks.check_to_grid(lambda p: np.asarray(p) * 100) is False   # floats: the wrong dtype, one line
    assert "the grid is integers" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        checks.check_to_grid(lambda p: (np.asarray(p) * 100).astype(int))   # truncation, not rounding


def test_greedy_only_with_one_sample_and_no_fit(tmp_path, capsys):
    from cadlab.cad.synth import validate

    truth, _ = validate("import cadquery as cq\nr=cq.Workplane('XY').box(40,20,10)\n")
    part = tmp_path / "block.stl"
    truth.export(part)
    code, out, err = run_main([part, "-o", tmp_path / "out", "--samples", "1", "--no-fit"], capsys)
    assert code == 0, err
    assert "greedy:" not in err and "fit:" not in err and "for 1 program(s), fit 0.00 s" in err


def test_an_open_mesh_is_refused_with_what_to_export(tmp_path, capsys, no_model):
    sheet = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]], faces=[[0, 1, 2], [1, 3, 2]])
    for name, mesh in (("sheet.stl", sheet), ("triangle.stl", trimesh.Trimesh(sheet.vertices[:3], [[0, 1, 2]]))):
        mesh.export(tmp_path / name)
        code, out, err = run_main([tmp_path / name, "-o", tmp_path / "out"], capsys)
        assert code == 1 and out == ""
        assert "is not a closed solid" in err and "Export the part as a closed solid" in err


def test_only_closed_solids_count_as_valid():
    from cadlab.cad.sandbox import ExecResult

    box = trimesh.creation.box()
    open_box = box.copy()
    open_box.update_faces(np.arange(len(box.faces) - 2))            # two triangles missing: a hole
    assert sandbox.closed_solid(ExecResult(True, box, "ok", "6 faces", 0.1)) is box
    assert sandbox.closed_solid(ExecResult(True, open_box, "ok", "6 faces", 0.1)) is None
    assert sandbox.why_invalid(ExecResult(True, open_box, "ok", "6 faces", 0.1)).startswith("the solid is not closed")
    failed = ExecResult(False, None, "cadquery", "ValueError: no pending wires", 0.1)
    assert sandbox.closed_solid(failed) is None and sandbox.why_invalid(failed) == "cadquery: ValueError: no pending wires"


def test_number_kinds_and_errors():
    truth = ("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\n"
             "r=w0.sketch().rect(200,120).push([(-60,0),(60,0)]).circle(15,mode='s').finalize().extrude(40)\n"
             "r=r.union(w0.workplane(offset=40).sketch().segment((-10,-5),(10,-5)).arc((12,0),(10,5)).close()"
             ".assemble().finalize().extrude(8))\n")
    kinds = [k for k, _ in program_errors.number_kinds(truth)]
    assert kinds == ["position"] * 3 + ["size"] * 2 + ["position"] * 4 + ["size"] * 3 + ["vertex"] * 8 + ["size"]
    predicted = truth.replace("rect(200,120)", "rect(198,124)").replace("(-60,0)", "(-58,1)")
    errors = program_errors.number_errors(predicted, truth)
    assert sorted(errors["size"], reverse=True)[:2] == [4, 2] and sum(errors["size"]) == 6
    assert sorted(errors["position"], reverse=True)[:2] == [2, 1] and sum(errors["vertex"]) == 0
    assert program_errors.number_errors(truth.replace(".rect(", ".circle("), truth) is None     # another structure
    assert program_errors.skeleton(predicted) == program_errors.skeleton(truth)


def test_a_fit_budgeted_in_tries_is_reproducible():
    from cadlab.cad.pointcloud import mesh_to_point_cloud
    from cadlab.cad.synth import validate

    truth, _ = validate("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\n"
                        "r=w0.sketch().rect(200,120).finalize().extrude(40)\n")
    cloud = mesh_to_point_cloud(truth, seed=0)
    start = rec.score_program("import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\n"
                              "r=w0.sketch().rect(188,128).finalize().extrude(32)\n", cloud)
    first, n_first = rec.fit_numbers(start, cloud, seconds=600, max_evaluations=10)
    again, n_again = rec.fit_numbers(start, cloud, seconds=600, max_evaluations=10)
    assert n_first == n_again == 10 and first.code == again.code and first.score < start.score


def test_program_errors_reads_plane_kind_skeleton_and_numbers_off_the_code():
    head = "import cadquery as cq\n"
    truth = head + "w0=cq.Workplane('XY',origin=(0,0,-10))\nr=w0.sketch().rect(200,80).finalize().extrude(20)\n"
    off_by = head + "w0=cq.Workplane('XY',origin=(0,0,-10))\nr=w0.sketch().rect(190,80).finalize().extrude(22)\n"
    other_plane = off_by.replace("'XY'", "'YZ'")
    disc = head + "w0=cq.Workplane('XY',origin=(0,0,-10))\nr=w0.sketch().circle(100).finalize().extrude(20)\n"
    rows = [{"code": c, "truth_code": truth} for c in (truth, off_by, other_plane, disc, None)]
    a = program_errors.program_errors(rows)
    assert a["parts"] == 5
    assert a["plane_right"] == 0.6                     # truth, off_by, disc
    assert a["kind_right"] == 0.6                      # the three plates (a plate on YZ is still a plate)
    assert a["skeleton_right"] == 0.4                  # truth and off_by: another plane is another construction
    assert a["numbers_compared"] == 2 * 6              # origin (3), rect (2), extrude (1), on the two with its skeleton
    assert a["numbers_exact"] == round(10 / 12, 3)     # off_by misses 200 by 10 and 20 by 2
    assert a["median_number_error"] == 0.0
    assert program_errors.program_errors([{"code": disc, "truth_code": truth}])["numbers_exact"] is None
